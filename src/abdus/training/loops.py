"""One training step of each stage, the epoch loop, and the held-out evaluation.

Stage 1, "landmarks" (paper 2.2): the network's shared and landmark parts learn the heat maps
(regression L2, Eq. 2; for MGCN_R also location, Eq. 3, and adversarial, Eq. 4). The PatchGAN
discriminator is updated first on real and detached fake heat maps, then the network on its
own losses with D frozen, in pix2pix's order. Stage 2, "views": only the classifier parts learn
the cross entropy (Eq. 1) on the masked ``class_image``; the shared and landmark parts are
frozen (``requires_grad`` False, BatchNorm in eval mode so its running statistics stay too).

Batch keys (``abdus.data.UltrasoundDataset``): image / class_image (B, 1, H, W), heatmaps
(B, 14, H, W), landmark_mask (B, 14), landmarks (B, 14, 2) model px, view (B,), has_view (B,),
model_spacing_mm (B,) mm per model pixel (NaN when unknown).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from abdus.data.heatmaps import HeatmapCodec
from abdus.errors import AbdusInputError
from abdus.losses import LossWeights, discriminator_loss, landmark_losses, view_loss
from abdus.training.config import OptimizerConfig
from abdus.training.distributed import (
    DistributedContext,
    all_reduce_sums,
    average_gradients,
    reduce_device,
)
from abdus.training.runtime import autocast


class TrainingDivergedError(AbdusInputError):
    """The loss became NaN or infinite: a configuration the data cannot train with (one line
    for the CLI; the checkpoint of the last finished epoch stays untouched)."""


LANDMARKS = "landmarks"
VIEWS = "views"
STAGES = (LANDMARKS, VIEWS)


class LandmarkNetwork(nn.Module):
    """The landmark path as a module of its own, so DDP wraps exactly what stage 1 runs:
    (B, 1, H, W) -> (B, 14, H, W) heat maps."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.forward_landmarks(image)


class ViewNetwork(nn.Module):
    """The view path as a module of its own (stage 2): (B, 1, H, W) -> (B, 11) logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.forward_view(image)


def stage_parameters(model: nn.Module, stage: str) -> tuple[list[nn.Parameter], list[nn.Module]]:
    """(parameters trained, modules frozen) in ``stage`` (paper 2.2 "Implementation")."""
    if stage == LANDMARKS:
        return model.shared_parameters() + model.landmark_parameters(), model.classifier_modules()
    if stage == VIEWS:
        return model.classifier_parameters(), model.shared_modules() + model.landmark_modules()
    raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")


def stages_of(model: nn.Module) -> tuple[str, ...]:
    """The stages a model variant trains: landmarks if it has a landmark path, views if it has
    a classifier (mgcn_r both, mgcn/mfcn/sfcn landmarks only, stl views only)."""
    has = {LANDMARKS: bool(model.landmark_parameters()), VIEWS: bool(model.classifier_parameters())}
    return tuple(s for s in STAGES if has[s])


def freeze_for_stage(model: nn.Module, stage: str) -> list[nn.Parameter]:
    """Set ``requires_grad`` for ``stage`` and return the trainable parameters."""
    trainable, _ = stage_parameters(model, stage)
    ids = {id(p) for p in trainable}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    return trainable


def set_train_mode(model: nn.Module, stage: str) -> None:
    """``model.train()`` except the frozen parts, kept in eval mode: their BatchNorm running
    statistics and dropout stay as stage 1 left them (paper: parameters "kept locked")."""
    model.train()
    for module in stage_parameters(model, stage)[1]:
        module.eval()


def make_optimizer(spec: OptimizerConfig, parameters: Iterable[nn.Parameter]):
    """The optimizer ``spec`` names over ``parameters``."""
    params = list(parameters)
    if spec.name == "sgd":
        return torch.optim.SGD(
            params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
        )
    cls = torch.optim.Adam if spec.name == "adam" else torch.optim.AdamW
    return cls(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)


@dataclass(frozen=True)
class LearningRateSchedule:
    """The learning rate of every optimizer step of one stage: a linear warm-up from 0 over
    ``warmup_steps``, then ``kind`` ("constant", or "cosine" down to 0 at ``total_steps``).
    A pure function of the step, so a resumed run continues it without any saved state."""

    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    kind: str = "constant"

    def at(self, step: int) -> float:
        """The learning rate of stage step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.base_lr
        done = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        for group in optimizer.param_groups:
            group["lr"] = self.at(step)


@dataclass
class StepTools:
    """What a training step needs besides the batch."""

    network: nn.Module  # LandmarkNetwork / ViewNetwork, DDP-wrapped when distributed
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ctx: DistributedContext
    amp_dtype: torch.dtype | None = None
    memory_format: torch.memory_format = torch.contiguous_format
    weights: LossWeights | None = None
    reduction: str = "mean"
    threshold: float = 0.75
    amplitude: float = 1.0  # of the heat-map targets (HeatmapCodec.amplitude)
    label_smoothing: float = 0.0
    schedule: LearningRateSchedule | None = None  # None: the optimizer's lr throughout
    discriminator: nn.Module | None = None
    d_optimizer: torch.optim.Optimizer | None = None

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers by checkpoint name: "network" and, in stage 1, "discriminator"."""
        found = {"network": self.optimizer, "discriminator": self.d_optimizer}
        return {k: v for k, v in found.items() if v is not None}


def to_device(batch: Mapping[str, torch.Tensor], tools: StepTools) -> dict[str, torch.Tensor]:
    """Move a batch to the training device; images in the chosen memory format."""
    device = tools.ctx.device
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}
    for key in ("image", "class_image"):
        if key in out:
            out[key] = out[key].contiguous(memory_format=tools.memory_format)
    return out


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def landmark_step(batch: dict[str, torch.Tensor], tools: StepTools) -> dict[str, torch.Tensor]:
    """One stage-1 step (pix2pix order: D first, then the network). Returns the loss parts."""
    device, scaler = tools.ctx.device, tools.scaler
    with autocast(device, tools.amp_dtype):
        heatmaps = tools.network(batch["image"])
    outputs = {"heatmaps": heatmaps.float()}  # losses in float32 (sums over 512x512 pixels)
    parts: dict[str, torch.Tensor] = {}
    D = tools.discriminator
    if D is not None:
        _set_requires_grad(D, True)
        tools.d_optimizer.zero_grad(set_to_none=True)
        with autocast(device, tools.amp_dtype):
            d_parts = discriminator_loss(
                D, batch["image"], batch["heatmaps"], outputs["heatmaps"], batch["landmark_mask"],
                tools.amplitude,
            )  # fmt: skip
        scaler.scale(d_parts["loss"]).backward()
        average_gradients(list(D.parameters()), tools.ctx)
        scaler.step(tools.d_optimizer)
        parts = {"d_real": d_parts["real"], "d_fake": d_parts["fake"]}
        _set_requires_grad(D, False)  # the network's step must not move D
    with autocast(device, tools.amp_dtype):
        losses = landmark_losses(
            outputs,
            batch,
            tools.weights,
            D,
            reduction=tools.reduction,
            threshold=tools.threshold,
            amplitude=tools.amplitude,
        )
    tools.optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses["loss"]).backward()
    scaler.step(tools.optimizer)
    scaler.update()
    return {**losses, **parts}


def view_step(batch: dict[str, torch.Tensor], tools: StepTools) -> dict[str, torch.Tensor]:
    """One stage-2 step: cross entropy on the masked classification input."""
    with autocast(tools.ctx.device, tools.amp_dtype):
        logits = tools.network(batch["class_image"])
    losses = view_loss(logits.float(), batch["view"], batch.get("has_view"), tools.label_smoothing)
    tools.optimizer.zero_grad(set_to_none=True)
    tools.scaler.scale(losses["loss"]).backward()
    tools.scaler.step(tools.optimizer)
    tools.scaler.update()
    return losses


STEPS = {LANDMARKS: landmark_step, VIEWS: view_step}


def train_epoch(
    stage: str,
    loader: Iterable[Mapping[str, torch.Tensor]],
    tools: StepTools,
    *,
    description: str,
    first_step: int = 0,
    on_step=None,
) -> dict[str, float]:
    """Run one epoch; return the image-weighted mean of each loss part over all ranks.

    ``first_step``: the stage step of the epoch's first batch (for ``tools.schedule``).
    ``on_step(parts)`` is called after each step with the step's float losses (for logging).
    A non-finite loss stops training (TrainingDivergedError) before NaN weights are saved.
    """
    step = STEPS[stage]
    totals: dict[str, float] = {}
    images = 0
    # A live bar on a terminal (rank 0); logs get the one-line epoch summary instead.
    bar = tqdm(loader, desc=description, leave=False, disable=None if tools.ctx.is_main else True)
    for index, raw in enumerate(bar):
        batch = to_device(raw, tools)
        if tools.schedule is not None:
            tools.schedule.apply(tools.optimizer, first_step + index)
        parts = {k: float(v.detach()) for k, v in step(batch, tools).items()}
        if not math.isfinite(parts["loss"]):
            raise TrainingDivergedError(
                f"{description}: the loss became {parts['loss']} (training diverged); lower "
                "the learning rate in a --config YAML; the last checkpoint is kept"
            )
        n = int(batch["image"].shape[0])
        images += n
        for key, value in parts.items():
            totals[key] = totals.get(key, 0.0) + value * n
        bar.set_postfix({k: f"{v / images:.4g}" for k, v in totals.items()})
        if on_step is not None:
            on_step(parts)
    keys = sorted(totals)
    summed = torch.tensor([totals[k] for k in keys] + [images], dtype=torch.float64)
    summed = all_reduce_sums(summed.to(reduce_device(tools.ctx)), tools.ctx).cpu()
    count = max(float(summed[-1]), 1.0)
    result = {k: float(v) / count for k, v in zip(keys, summed[:-1].tolist(), strict=True)}
    result["images"] = float(summed[-1])
    return result


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable[Mapping[str, torch.Tensor]],
    codec: HeatmapCodec,
    stage: str,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Held-out metrics of ``stage``: landmarks -> mean landmark error (mm and model px) over
    the annotated landmarks; views -> view accuracy over images with a view label."""
    was_training = model.training
    model.eval()
    sums = {"error_mm": 0.0, "n_mm": 0, "error_px": 0.0, "n_px": 0, "correct": 0, "n_views": 0}
    for raw in loader:
        batch = {k: v.to(device) for k, v in raw.items() if torch.is_tensor(v)}
        with autocast(device, amp_dtype):
            if stage == LANDMARKS:
                heatmaps = model.forward_landmarks(batch["image"]).float()
            else:
                logits = model.forward_view(batch["class_image"]).float()
        if stage == LANDMARKS:
            _add_landmark_errors(sums, heatmaps, batch, codec)
        else:
            labelled = batch["has_view"].bool()
            hits = logits.argmax(dim=1) == batch["view"]
            sums["correct"] += int((hits & labelled).sum())
            sums["n_views"] += int(labelled.sum())
    model.train(was_training)
    if stage == LANDMARKS:
        return {
            "landmark_error_mm": sums["error_mm"] / sums["n_mm"] if sums["n_mm"] else math.nan,
            "landmark_error_px": sums["error_px"] / sums["n_px"] if sums["n_px"] else math.nan,
            "landmarks": float(sums["n_px"]),
        }
    accuracy = sums["correct"] / sums["n_views"] if sums["n_views"] else math.nan
    return {"view_accuracy": accuracy, "images": float(sums["n_views"])}


def _add_landmark_errors(sums: dict, heatmaps: torch.Tensor, batch: dict, codec) -> None:
    """Accumulate Euclidean errors (B, 14) of decoded vs true landmarks, model px and mm."""
    points, _ = codec.decode(heatmaps, batch.get("region"))  # (B, 14, 2) model px
    points = torch.as_tensor(points, device=heatmaps.device, dtype=torch.float32)
    error_px = (points - batch["landmarks"].float()).norm(dim=-1)  # (B, 14)
    present = batch["landmark_mask"].bool()
    spacing = batch["model_spacing_mm"].float()[:, None].expand_as(error_px)  # (B, 14) mm/px
    with_mm = present & torch.isfinite(spacing)
    sums["error_px"] += float(error_px[present].sum())
    sums["n_px"] += int(present.sum())
    sums["error_mm"] += float((error_px * spacing)[with_mm].sum())
    sums["n_mm"] += int(with_mm.sum())
