"""The paper's two training stages (section 2.2 "Implementation"), abdus's optional third,
and what each is built from.

Stage 1, "landmarks": the shared and landmark parts learn the heat maps (the PatchGAN beside
them for MGCN_R). Stage 2, "views": only the classifier parts learn, the shared and landmark
parts "kept locked" (the paper); with ``view_stage_trains_shared`` the shared stages learn the
views too. Stage 3, "refit" (``stage3.epochs`` > 0, multi-task models only): the landmark path
learns the heat maps again on the shared stages as stage 2 left them, which are then locked
with the view path. This module says which stages a model variant has, which parameters each
trains and freezes, its optimizer and learning-rate schedule, how stage 2 starts the view path,
and builds a config's networks and heat-map codec. The steps themselves are in ``loops``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from abdus.choices import Optimizer, Schedule, ViewInit
from abdus.data.heatmaps import HeatmapCodec
from abdus.models import PatchDiscriminator, build_model
from abdus.training.config import OptimizerConfig, StageConfig, TrainConfig

LANDMARKS = "landmarks"
VIEWS = "views"
REFIT = "refit"
STAGES = (LANDMARKS, VIEWS, REFIT)
STAGE_FIELD = {LANDMARKS: "stage1", VIEWS: "stage2", REFIT: "stage3"}  # TrainConfig fields


def task_of(stage: str) -> str:
    """What a stage learns: LANDMARKS (heat maps: stages 1 and 3) or VIEWS."""
    return LANDMARKS if stage in (LANDMARKS, REFIT) else VIEWS


def stage_config(config: TrainConfig, stage: str) -> StageConfig:
    """``config.stage1`` for the landmark stage, ``config.stage2`` for the view stage,
    ``config.stage3`` for the refit."""
    return getattr(config, STAGE_FIELD[stage])


class LandmarkNetwork(nn.Module):
    """The landmark path as a module of its own, so DDP wraps exactly what stage 1 runs:
    (B, 1, H, W) -> (B, 14, H, W) heat maps."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.forward_landmarks(image)


class ViewNetwork(nn.Module):
    """The view path as a module of its own (stage 2): (B, 1, H, W) -> (B, 11) logits.

    With ``anchor`` (a frozen copy of the shared stages, ``view_anchor``; the
    ``view_stage_anchor`` option) it returns (logits, drift): drift = the sum over the shared
    levels of the mean squared difference between the trained and the frozen features, each over
    the frozen level's variance. Both normalise with the batch's statistics in training, so the
    drift is 0 until the weights move.
    """

    def __init__(self, model: nn.Module, anchor: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.anchor = anchor

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.anchor is None:
            return self.model.forward_view(image)
        features = self.model.forward_shared(image)
        logits = self.model.forward_view(image, features)
        self.anchor.train(self.model.shared.training)  # the same statistics as the trained copy
        with torch.no_grad():
            targets = self.anchor(image)
        drift = sum(
            F.mse_loss(f.float(), t.float()) / t.float().var().clamp_min(1e-6)
            for f, t in zip(features, targets, strict=True)
        )
        return logits, drift


def view_anchor(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model``'s shared stages (stem and stages 1-2): no gradients, and
    BatchNorm that no longer tracks, so in training mode it normalises with the batch's
    statistics (as the trained stages do) and its buffers never change."""
    anchor = copy.deepcopy(model.shared)
    for p in anchor.parameters():
        p.requires_grad_(False)
    for module in anchor.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
    return anchor


def stage_parameters(
    model: nn.Module, stage: str, views_train_shared: bool = False
) -> tuple[list[nn.Parameter], list[nn.Module]]:
    """(parameters trained, modules frozen) in ``stage`` (paper 2.2 "Implementation"; with
    ``views_train_shared`` the view stage trains the shared stages too)."""
    shared, landmark, classifier = (
        model.shared_parameters(),
        model.landmark_parameters(),
        model.classifier_parameters(),
    )
    if stage == LANDMARKS:
        return shared + landmark, model.classifier_modules()
    if stage == VIEWS and views_train_shared:
        return classifier + shared, model.landmark_modules()
    if stage == VIEWS:
        return classifier, model.shared_modules() + model.landmark_modules()
    if stage == REFIT:
        return landmark, model.shared_modules() + model.classifier_modules()
    raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")


def stages_of(model: nn.Module, refit_epochs: int = 0) -> tuple[str, ...]:
    """The stages a model variant trains: landmarks if it has a landmark path, views if it has
    a classifier (mgcn_r both, mgcn/mfcn/sfcn landmarks only, stl views only), and the refit
    when ``refit_epochs`` > 0 and it has both."""
    has = {LANDMARKS: bool(model.landmark_parameters()), VIEWS: bool(model.classifier_parameters())}
    has[REFIT] = refit_epochs > 0 and has[LANDMARKS] and has[VIEWS]
    return tuple(s for s in STAGES if has[s])


def freeze_for_stage(
    model: nn.Module, stage: str, views_train_shared: bool = False
) -> list[nn.Parameter]:
    """Set ``requires_grad`` for ``stage`` and return the trainable parameters."""
    trainable, _ = stage_parameters(model, stage, views_train_shared)
    ids = {id(p) for p in trainable}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    return trainable


def set_train_mode(model: nn.Module, stage: str, views_train_shared: bool = False) -> None:
    """``model.train()`` except the frozen parts, kept in eval mode: their BatchNorm running
    statistics and dropout stay as the earlier stages left them (paper: "kept locked")."""
    model.train()
    for module in stage_parameters(model, stage, views_train_shared)[1]:
        module.eval()


def make_optimizer(spec: OptimizerConfig, parameters: Iterable[nn.Parameter]):
    """The optimizer ``spec`` names over ``parameters``."""
    params = list(parameters)
    if spec.name == Optimizer.SGD:
        return torch.optim.SGD(
            params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
        )
    cls = torch.optim.Adam if spec.name == Optimizer.ADAM else torch.optim.AdamW
    return cls(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)


@dataclass(frozen=True)
class LearningRateSchedule:
    """The learning rate of every optimizer step of one stage: a linear warm-up from 0 over
    ``warmup_steps``, then ``kind`` ("constant", or "cosine" down to 0 at ``total_steps``).
    A pure function of the step, so a resumed run continues it without any saved state."""

    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    kind: str = Schedule.CONSTANT.value

    def at(self, step: int) -> float:
        """The learning rate of stage step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.kind == Schedule.CONSTANT:
            return self.base_lr
        done = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        for group in optimizer.param_groups:
            group["lr"] = self.at(step)


def scaled_optimizer(spec: StageConfig, world_size: int = 1) -> OptimizerConfig:
    """The stage's optimizer at its learning rate for this run: ``optimizer.lr`` x (images per
    step over all processes) / ``reference_batch_size`` when that is set (linear scaling rule,
    Goyal et al. 2017: the lr that suits batch N suits batch kN at k times the lr, after a
    warm-up), else ``optimizer`` unchanged."""
    if spec.reference_batch_size == 0:
        return spec.optimizer
    factor = spec.batch_size * world_size / spec.reference_batch_size
    return dataclasses.replace(spec.optimizer, lr=spec.optimizer.lr * factor)


def stage_schedule(
    spec: StageConfig, steps_per_epoch: int, world_size: int = 1
) -> LearningRateSchedule | None:
    """The learning-rate schedule of a stage (None: the optimizer's constant lr, no warm-up),
    from the lr of ``scaled_optimizer``."""
    if spec.schedule == Schedule.CONSTANT and spec.warmup_epochs == 0:
        return None
    return LearningRateSchedule(
        base_lr=scaled_optimizer(spec, world_size).lr,
        total_steps=spec.epochs * steps_per_epoch,
        warmup_steps=round(spec.warmup_epochs * steps_per_epoch),
        kind=spec.schedule,
    )


def init_view_path(model: nn.Module, how: str) -> None:
    """Start the view path's stages 3-4 for stage 2: "scratch" keeps the random init (paper);
    "landmark" copies the trained landmark stages 3-4 (same architecture), so the view path
    starts from features that already describe the organs."""
    if how == ViewInit.LANDMARK and hasattr(model, "view_stages"):
        model.view_stages.load_state_dict(model.landmark_stages.state_dict())


def build_networks(config: TrainConfig) -> tuple[nn.Module, PatchDiscriminator | None]:
    """(model, discriminator or None) of ``config`` (its options were checked when it was made).

    The PatchGAN is built only when the adversarial weight is > 0 and the model detects
    landmarks (paper: MGCN_R's adversarial regularisation of the heat maps).
    """
    model = build_model(config.model, config.model_options)
    needs_d = config.loss.adversarial > 0 and LANDMARKS in stages_of(model)
    return model, PatchDiscriminator(config.discriminator_options) if needs_d else None


def codec_of(config: TrainConfig) -> HeatmapCodec:
    """The heat-map codec of a config: Gaussian ``sigma_mm`` at the model pixel spacing, peak
    ``heatmap_amplitude``."""
    p = config.preprocess
    return HeatmapCodec.from_mm(
        p.size, config.sigma_mm, p.spacing_mm, amplitude=config.heatmap_amplitude
    )
