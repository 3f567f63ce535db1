"""The training configuration: frozen dataclasses, YAML overrides, the resolved ``config.yaml``.

Presets (``presets.py``) build a ``TrainConfig``; a YAML file only *overrides* fields of it
(nested mappings for nested sections). An unknown key is an error naming the valid keys, so a
typo never silently trains with the default. The resolved config is written into every run
folder as ``config.yaml`` and stored in every checkpoint.

Loss-scale convention (paper section 2.2, "SGD with a learning rate of 1E-6"). The heat-map
L2 term has two reductions (``loss.reduction``): ``"mean"`` is Eq. 2 as printed, 1 / (N_I N_L')
times the squared error summed over pixels and present landmarks (PyTorch's ``MSELoss``
default, and the paper used PyTorch); ``"sum"`` drops the 1 / N_I = 1 / (H W), as Caffe-era
Euclidean losses did, making the gradient 262144 times larger at 512x512. Measured with this
code (ResNet50 MGCN_R, 512x512, batch 4, bf16, H100, 20 annotated synthetic images;
``scripts/bench_training.py --data``): with ``"mean"`` SGD at lr 1e-6 trains stably, the total
loss falling from 238 to 160 (mean of the first / last 5 of 40 steps) and the L2 term from 3.0
to 1.4; with ``"sum"`` lr 1e-6, 1e-7, 1e-8 and 1e-9 all diverge to NaN within 3 to 9 steps and
only 1e-10 trains. So lr 1e-6 is meaningful under ``"mean"``, which the ``paper`` preset uses.
Adam (``tiny`` / ``demo``) is insensitive to the overall scale; there the reduction only sets
how the L2 term weighs against the coordinate term (in pixels).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from abdus.choices import (
    AmpMode,
    DataPlacement,
    Model,
    Optimizer,
    Schedule,
    ViewInit,
    check_choice,
)
from abdus.data.dataset import AugmentConfig
from abdus.data.preprocess import PreprocessConfig
from abdus.errors import AbdusInputError
from abdus.io.atomic import atomic_write_text
from abdus.losses import LossConfig
from abdus.models import DiscriminatorConfig, ModelConfig

CONFIG_NAME = "config.yaml"


def _set_choice(section: Any, name: str, choice: type[StrEnum], what: str) -> None:
    """Check the field ``name`` of a frozen ``section`` against ``choice`` and store it as a plain
    string: a config holds only plain values (YAML's ``safe_dump`` and ``torch.load(...,
    weights_only=True)`` read no enums back)."""
    member = check_choice(choice, getattr(section, name), what)
    object.__setattr__(section, name, member.value)


@dataclass(frozen=True)
class OptimizerConfig:
    """One optimizer: ``name`` (an ``abdus.choices.Optimizer``), learning rate, SGD momentum,
    Adam betas, weight decay."""

    name: str = Optimizer.ADAM.value
    lr: float = 1e-3
    momentum: float = 0.9  # SGD only
    betas: tuple[float, float] = (0.9, 0.999)  # Adam / AdamW only
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _set_choice(self, "name", Optimizer, "optimizer")
        if not self.lr > 0:
            raise ValueError(f"optimizer lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class StageConfig:
    """One training stage: epochs, images per batch (per process), its optimizer, and how the
    learning rate moves.

    ``schedule`` (an ``abdus.choices.Schedule``): "constant" (the paper) or "cosine" (decays to
    0 at the stage's last step, Loshchilov & Hutter 2017). ``warmup_epochs``: the learning rate
    rises linearly from 0 over this many epochs first (Goyal et al. 2017). ``patience``: stop
    the stage after this many epochs without a better validation score (0 = run every epoch);
    either way the stage ends on its best validation epoch. ``ema_decay``: d > 0 keeps an
    exponential moving average of the weights (``averaging.WeightAverage``), which the stage
    validates, keeps and ends on (0: the weights as trained, the paper).
    ``reference_batch_size``: 0 trains at ``optimizer.lr``; N > 0 scales it linearly with the
    images of one step over all processes, lr x (batch_size x world size) / N (Goyal et al.
    2017; pair it with a warm-up).
    """

    epochs: int = 1
    batch_size: int = 4
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: str = Schedule.CONSTANT.value
    warmup_epochs: float = 0.0
    patience: int = 0
    reference_batch_size: int = 0
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.epochs < 0 or self.batch_size < 1 or self.reference_batch_size < 0:
            raise ValueError(
                f"stage needs epochs >= 0, batch_size >= 1, reference_batch_size >= 0, got {self}"
            )
        _set_choice(self, "schedule", Schedule, "schedule")
        if self.warmup_epochs < 0 or self.patience < 0:
            raise ValueError(f"warmup_epochs and patience must be >= 0, got {self}")


# Sections that once were plain dicts or had another type: a caller passing the old form gets a
# TypeError naming the type to use (``apply_overrides`` turns mappings into them).
_TYPED_SECTIONS = {
    "model_options": ModelConfig,
    "discriminator_options": DiscriminatorConfig,
    "loss": LossConfig,
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Units: ``sigma_mm`` and ``preprocess.spacing_mm``
    in mm, ``preprocess.size`` (H, W) in model pixels. Every key is described in
    ``docs/configuration.md``.

    Stages (paper 2.2): ``stage1`` trains the landmark path (shared stages + landmark stages +
    decoder; discriminator with ``discriminator`` optimizer), ``stage2`` the view classifier with
    the shared and landmark parts frozen (with ``view_stage_trains_shared`` the shared stages
    learn the views too; ``view_stage_anchor`` > 0 then keeps their features near those the
    landmark path was trained on), ``stage3`` (0 epochs: none) re-fits the landmark path,
    beside a new discriminator, to the shared stages as stage 2 left them. Which stages a model
    runs depends on its variant (``stages.stages_of``): e.g. ``stl`` only stage 2, ``mgcn``
    only stage 1, stage 3 only a model with both paths.

    ``model`` is a network of ``abdus.choices.Model`` (PBT is not a network: ``trainer.train``
    hands it to ``abdus.baselines.pbt``). ``model_options`` / ``discriminator_options`` are the
    architecture (``abdus.models.ModelConfig`` / ``DiscriminatorConfig``, saved in every model
    file too). ``heatmap_amplitude``: peak of the Gaussian targets (``HeatmapCodec.amplitude``).
    ``discriminator_every``: the discriminator takes its step on every k-th step of a landmark
    stage (1: every step, pix2pix); the network's adversarial term uses it on every step.
    ``view_stage_anchor``: with ``view_stage_trains_shared``, the weight of a term of the view
    stage that keeps the shared stages' features (stem, stages 1-2, the inputs of the landmark
    path) near those of a frozen copy taken as the stage began (learning without forgetting):
    per level, the mean squared difference over the copy's variance (0: no term).
    ``landmark_balance``: the landmark losses weigh each landmark by its count of training
    images to the power -``landmark_balance`` (``datasets.landmark_channel_weights``; 0: all
    alike, the paper).
    ``view_init`` (``abdus.choices.ViewInit``): how stage 2 starts the view path's copy of
    stages 3-4: "scratch" (random, the paper) or "landmark" (a copy of the trained landmark
    stages 3-4). ``amp``: an ``abdus.choices.AmpMode`` (``runtime``). ``data_on_device``: an
    ``abdus.choices.DataPlacement`` (``device_data``). ``compile``: ``torch.compile`` the stage's
    network (eager, with one warning, where compiling fails; ``runtime.CompiledOrEager``).
    """

    model: str = Model.MGCN_R.value
    model_options: ModelConfig = field(default_factory=ModelConfig)
    discriminator_options: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    sigma_mm: float = 3.0
    heatmap_amplitude: float = 1.0
    loss: LossConfig = field(default_factory=LossConfig)
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=StageConfig)
    stage3: StageConfig = field(default_factory=lambda: StageConfig(epochs=0))
    view_stage_trains_shared: bool = False
    view_stage_anchor: float = 0.0  # weight of the shared-feature term in such a view stage
    landmark_balance: float = 0.0  # landmark loss weights ~ count ** -balance (0: equal)
    discriminator: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(Optimizer.ADAM, 2e-4, betas=(0.5, 0.999))
    )
    discriminator_every: int = 1  # the discriminator learns on every k-th step of its stage
    view_init: str = ViewInit.SCRATCH.value
    seed: int = 0
    preset: str = "custom"  # the preset it was resolved from (tiny, demo, paper), for reports
    test_fraction: float = 0.2
    val_fraction: float = 0.1  # of all patients, taken from the training side (splits.py)
    augment: bool = False
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)  # ranges, when augment
    num_workers: int = 0
    amp: str = AmpMode.AUTO.value
    channels_last: bool = False
    data_on_device: str = DataPlacement.AUTO.value
    compile: bool = False
    device: str = "auto"
    deterministic: bool = True
    evaluate_every: int = 1  # epochs between held-out evaluations (0 = never)
    log_every: int = 10  # optimizer steps between TensorBoard scalars
    cache_dir: str | None = None  # preprocessed-sample cache; None = <run>/cache
    teacher: str | None = None  # abdus distill: the teacher's model file (training.teacher)
    distill_alpha: float = 0.5  # weight of the teacher's outputs against the labels
    distill_temperature: float = 2.0  # softens both logits in the view stage's KL term

    def __post_init__(self) -> None:
        _set_choice(self, "model", Model, "model")
        if self.model == Model.PBT:
            raise ValueError("the pbt baseline is not a network: train it with train(model='pbt')")
        _set_choice(self, "amp", AmpMode, "amp mode")
        _set_choice(self, "view_init", ViewInit, "view_init")
        _set_choice(self, "data_on_device", DataPlacement, "data_on_device")
        for name, kind in _TYPED_SECTIONS.items():
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")
        if self.model_options.task is not None and self.model != Model.SFCN:
            raise ValueError(f"model_options.task is only valid for sfcn, not {self.model}")
        if not self.heatmap_amplitude > 0:
            raise ValueError(f"heatmap_amplitude must be > 0, got {self.heatmap_amplitude}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"unknown device {self.device!r}; valid: auto, cpu, cuda, cuda:N")
        if not self.sigma_mm > 0:
            raise ValueError(f"sigma_mm must be > 0, got {self.sigma_mm}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if not 0.0 <= self.val_fraction < 1.0 - self.test_fraction:
            raise ValueError(
                f"val_fraction must be in [0, 1 - test_fraction), got {self.val_fraction}"
            )
        if not 0.0 <= self.distill_alpha <= 1.0 or not self.distill_temperature > 0:
            raise ValueError(
                f"distill_alpha must be in [0, 1] and distill_temperature > 0, got "
                f"{self.distill_alpha}, {self.distill_temperature}"
            )
        if not self.view_stage_anchor >= 0:
            raise ValueError(f"view_stage_anchor must be >= 0, got {self.view_stage_anchor}")
        if self.view_stage_anchor and not self.view_stage_trains_shared:
            raise ValueError("view_stage_anchor needs view_stage_trains_shared: true")
        if not 0.0 <= self.landmark_balance <= 1.0:
            raise ValueError(f"landmark_balance must be in [0, 1], got {self.landmark_balance}")
        if self.discriminator_every < 1:
            raise ValueError(f"discriminator_every must be >= 1, got {self.discriminator_every}")
        if self.num_workers < 0 or self.evaluate_every < 0 or self.log_every < 1:
            raise ValueError("num_workers, evaluate_every must be >= 0 and log_every >= 1")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), the form written to ``config.yaml``."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a complete or partial dict (missing fields keep their defaults), e.g. a
        run's saved config. A saved config without ``val_fraction`` was written before runs
        had a validation split: it keeps none (0), so its train split stays what it was.
        ``model_options`` / ``discriminator_options`` of configs written before they were typed
        hold only the options that differ from the defaults; they read the same."""
        if data and "val_fraction" not in data:
            data = {**data, "val_fraction": 0.0}
        return apply_overrides(cls(), data)


def _plain(value: Any) -> Any:
    """Dicts, lists and plain scalars only: tuples -> lists, enum members -> their strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """A YAML value as the field's type (``hint``), or ValueError naming the key ``where``.

    Choices (``str`` fields) and ranges are checked by the section's ``__post_init__``.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(t for t in options if t is not type(None))
        origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        # YAML 1.1 reads "1e-3" (no dot) as a string: accept it as a number.
        ok = isinstance(value, int | float | str) and not isinstance(value, bool)
        try:
            number = hint(value) if ok else None
        except ValueError:
            number = None
        if number is None or (hint is int and number != float(value)):
            raise ValueError(f"{where} must be a{'n integer' if hint is int else ' number'}")
        return number
    if hint is str:
        if not isinstance(value, str):
            quote = " (quote it: YAML reads off/on/yes/no as true/false)" * isinstance(value, bool)
            raise ValueError(f"{where} must be a string, got {value!r}{quote}")
        return value
    if origin is tuple:
        args = typing.get_args(hint)
        size = len(value) if isinstance(value, list | tuple) else -1
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * max(size, 0)
        if size != len(args):
            raise ValueError(f"{where} must be a list of {len(args)} values, got {value!r}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in pairs)
    raise TypeError(f"{where}: no YAML reading for fields of type {hint!r}")  # a code error


def apply_overrides(base: Any, overrides: dict[str, Any], where: str = "") -> Any:
    """A copy of the frozen dataclass ``base`` with ``overrides`` (e.g. a parsed YAML mapping)
    applied; nested mappings override nested sections key by key, the rest keep their values.

    Raises ValueError naming the key path: an unknown key (with the valid keys), a value of the
    wrong type, or a value the section rejects (a choice, with the valid ones; a range).
    """
    if not isinstance(overrides, dict):
        raise ValueError(f"{where or 'config'} must be a mapping, got {overrides!r}")
    hints = typing.get_type_hints(type(base))
    keys = [f.name for f in dataclasses.fields(base)]
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in keys:
            raise ValueError(f"unknown config key {path!r}; valid keys: {', '.join(keys)}")
        current = getattr(base, key)
        if dataclasses.is_dataclass(current):
            changes[key] = apply_overrides(current, value, path)
        else:
            changes[key] = _coerce(hints[key], value, path)
    try:
        return dataclasses.replace(base, **changes)
    except ValueError as err:
        raise ValueError(f"{where}: {err}" if where else str(err)) from None


def load_overrides(path: str | Path) -> dict[str, Any]:
    """Read a YAML override file; AbdusInputError naming the file when it is not a mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AbdusInputError("config file not found", path) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        detail = " ".join(str(err).split())
        raise AbdusInputError(f"cannot read YAML config: {detail}", path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AbdusInputError("config must be a YAML mapping of field: value", path)
    return data


def apply_config_file(base: TrainConfig, path: str | Path) -> TrainConfig:
    """``base`` overridden by the YAML file at ``path`` (errors name the file and the key)."""
    try:
        return apply_overrides(base, load_overrides(path))
    except (ValueError, TypeError) as err:
        if isinstance(err, AbdusInputError):
            raise
        raise AbdusInputError(str(err), path) from None


def scale_epochs(config: TrainConfig, factor: float) -> TrainConfig:
    """Multiply every stage's epochs by ``factor`` (rounded, at least 1 where it was >= 1)."""
    if not factor > 0:
        raise ValueError(f"epochs_scale must be > 0, got {factor}")

    def scaled(stage: StageConfig) -> StageConfig:
        epochs = max(1, round(stage.epochs * factor)) if stage.epochs else 0
        return dataclasses.replace(stage, epochs=epochs)

    return dataclasses.replace(
        config,
        stage1=scaled(config.stage1),
        stage2=scaled(config.stage2),
        stage3=scaled(config.stage3),
    )


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomic)."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None)
    atomic_write_text(path, text)


def load_config(path: str | Path) -> TrainConfig:
    """Read a resolved ``config.yaml`` written by ``save_config``."""
    try:
        return TrainConfig.from_dict(load_overrides(path))
    except (ValueError, TypeError) as err:
        if isinstance(err, AbdusInputError):
            raise
        raise AbdusInputError(str(err), path) from None
