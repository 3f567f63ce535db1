"""Every name a user chooses from: models, presets, backends, loss reductions, and the training
config's optimizers, learning-rate schedules, view-path starts, mixed-precision modes and
training-data placements.

This module is the single source of those choices: the command line lists them in ``--help``
and the library checks them with :func:`check_choice`. It imports nothing heavy, so the CLI
builds its parser without loading PyTorch. Members are ``StrEnum``: each one *is* its string
(``Model.MGCN_R == "mgcn_r"``), so configs, model files and JSON keep plain strings.

Adding a choice: add the member here, then handle it where the enum is dispatched on (a model
variant in ``abdus.models.factory``, a backend in ``abdus.inference.backends``, a preset in
``abdus.training.presets``); the CLI and the error messages follow by themselves.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from abdus.errors import AbdusInputError


class Model(StrEnum):
    """What ``abdus train --model`` trains: the network variants of Table 1 and the PBT baseline."""

    MGCN_R = "mgcn_r"  # multi-task, GCN decoder, coordinate + adversarial constraints (ours)
    MGCN = "mgcn"  # multi-task, GCN decoder, L2 only
    MFCN = "mfcn"  # multi-task, FCN decoder, L2 only
    SFCN = "sfcn"  # single-task landmarks, FCN decoder, L2 only
    STL = "stl"  # single-task view classification
    PBT = "pbt"  # classical probabilistic boosting tree (Haar features), not a network


class Preset(StrEnum):
    """Training presets (``abdus.training.presets``; PBT: ``abdus.baselines.pbt``)."""

    TINY = "tiny"
    DEMO = "demo"
    PAPER = "paper"


class Backend(StrEnum):
    """What runs a trained network in ``predict`` / ``evaluate`` (``abdus.inference.backends``)."""

    TORCH = "torch"
    ONNX = "onnx"
    ONNX_INT8 = "onnx-int8"


class BenchBackend(StrEnum):
    """The backends ``abdus benchmark`` times: a ``Backend`` and its precision."""

    TORCH_FP32 = "torch-fp32"
    TORCH_BF16 = "torch-bf16"
    ONNX_FP32 = "onnx-fp32"
    ONNX_INT8 = "onnx-int8"


class Reduction(StrEnum):
    """How the heat-map L2 loss reduces over pixels: ``sum`` (abdus) or ``mean`` (paper Eq. 2)."""

    SUM = "sum"
    MEAN = "mean"


class Optimizer(StrEnum):
    """The optimizer of a training stage or of the discriminator (``OptimizerConfig.name``)."""

    SGD = "sgd"  # with momentum (paper 2.2, stage 1)
    ADAM = "adam"  # paper 2.2: stage 2 and the PatchGAN
    ADAMW = "adamw"  # Adam with decoupled weight decay (abdus's recipe)


class Schedule(StrEnum):
    """How a stage's learning rate moves after its warm-up (``StageConfig.schedule``)."""

    CONSTANT = "constant"  # the paper
    COSINE = "cosine"  # down to 0 at the stage's last step (Loshchilov & Hutter 2017)


class ViewInit(StrEnum):
    """How stage 2 starts the view path's stages 3-4 (``TrainConfig.view_init``)."""

    SCRATCH = "scratch"  # random (the paper)
    LANDMARK = "landmark"  # a copy of the trained landmark stages 3-4


class AmpMode(StrEnum):
    """Mixed precision of training (``TrainConfig.amp``; ``abdus.training.runtime``)."""

    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    OFF = "off"


class DataPlacement(StrEnum):
    """Where a run's training images live (``TrainConfig.data_on_device``;
    ``abdus.training.device_data``)."""

    AUTO = "auto"  # on a CUDA device when the stage's cache fits there, else the CPU loader
    ON = "on"  # on the training device, batches assembled and augmented there
    OFF = "off"  # the CPU DataLoader (with ``num_workers`` workers)


E = TypeVar("E", bound=StrEnum)


def names(choice: type[StrEnum]) -> tuple[str, ...]:
    """The valid strings of a choice, in declaration order (for ``argparse`` ``choices=``)."""
    return tuple(member.value for member in choice)


def check_choice(choice: type[E], value: str, what: str | None = None) -> E:
    """``value`` as a member of ``choice``; ValueError naming the valid ones otherwise."""
    try:
        return choice(value)
    except ValueError:
        label = what or choice.__name__.lower()
        raise ValueError(
            f"unknown {label} {value!r}; valid {label}s: {', '.join(names(choice))}"
        ) from None


NETWORK_MODELS: tuple[str, ...] = names(Model)[:-1]  # every Model but PBT
# The order ``abdus reproduce`` trains the variants of Table 1 in: the simplest first.
ABLATION_ORDER: tuple[str, ...] = ("stl", "sfcn", "mfcn", "mgcn", "mgcn_r", "pbt")
MODELS: tuple[str, ...] = names(Model)
PRESETS: tuple[str, ...] = names(Preset)
BACKENDS: tuple[str, ...] = names(Backend)
# What --backend accepts in predict / serve: "auto" picks one (``abdus.inference.auto``).
AUTO_BACKEND = "auto"
BACKEND_CHOICES: tuple[str, ...] = (AUTO_BACKEND, *BACKENDS)


def check_backend_option(name: str) -> str:
    """``name`` if ``--backend`` accepts it, else AbdusInputError naming the valid ones."""
    if name not in BACKEND_CHOICES:
        raise AbdusInputError(f"unknown backend {name!r}; valid: {', '.join(BACKEND_CHOICES)}")
    return name


BENCH_BACKENDS: tuple[str, ...] = names(BenchBackend)
REDUCTIONS: tuple[str, ...] = names(Reduction)
