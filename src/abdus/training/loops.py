"""One training step of each stage, the epoch loop, and the held-out evaluation (the stages
themselves, what each trains and freezes, are defined in ``stages``).

Stage 1, "landmarks" (paper 2.2): the network's shared and landmark parts learn the heat maps
(regression L2, Eq. 2; for MGCN_R also location, Eq. 3, and adversarial, Eq. 4). The PatchGAN
discriminator is updated first on real and detached fake heat maps, then the network on its
own losses with D frozen, in pix2pix's order. Stage 2, "views": only the classifier parts learn
the cross entropy (Eq. 1, times ``loss.view``) on the masked ``class_image``; the shared and
landmark parts are frozen (``requires_grad`` False, BatchNorm in eval mode so its running
statistics stay too).

Batch keys (``abdus.data.UltrasoundDataset``): image / class_image (B, 1, H, W), heatmaps
(B, 14, H, W), landmark_mask (B, 14), landmarks (B, 14, 2) model px, view (B,), has_view (B,),
model_spacing_mm (B,) mm per model pixel (NaN when unknown).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from abdus.data.heatmaps import HeatmapCodec
from abdus.errors import AbdusInputError
from abdus.losses import LossConfig, discriminator_loss, landmark_losses, view_loss
from abdus.training.averaging import WeightAverage
from abdus.training.config import TrainConfig
from abdus.training.distributed import (
    DistributedContext,
    all_reduce_sums,
    average_gradients,
    reduce_device,
    wrap_model,
)
from abdus.training.runtime import autocast, maybe_compile, memory_format
from abdus.training.stages import (
    LANDMARKS,
    REFIT,
    VIEWS,
    LandmarkNetwork,
    LearningRateSchedule,
    ViewNetwork,
    codec_of,
    freeze_for_stage,
    make_optimizer,
    scaled_optimizer,
    stage_config,
    task_of,
)
from abdus.training.teacher import Teacher


class TrainingDivergedError(AbdusInputError):
    """The loss became NaN or infinite: a configuration the data cannot train with (one line
    for the CLI; the checkpoint of the last finished epoch stays untouched)."""


@dataclass
class StepTools:
    """What a training step needs besides the batch."""

    network: nn.Module  # LandmarkNetwork / ViewNetwork, DDP-wrapped when distributed
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ctx: DistributedContext
    amp_dtype: torch.dtype | None = None
    memory_format: torch.memory_format = torch.contiguous_format
    loss: LossConfig = field(default_factory=LossConfig)  # weights, reduction, smoothing
    threshold: float = 0.75
    amplitude: float = 1.0  # of the heat-map targets (HeatmapCodec.amplitude)
    schedule: LearningRateSchedule | None = None  # None: the optimizer's lr throughout
    discriminator: nn.Module | None = None
    d_optimizer: torch.optim.Optimizer | None = None
    discriminator_every: int = 1  # D learns on the stage steps divisible by it
    stage_step: int = 0  # the stage step of the current batch (set by train_epoch)
    d_parts: dict[str, torch.Tensor] = field(default_factory=dict)  # D's last losses
    teacher: Teacher | None = None  # abdus distill: blends the teacher's outputs into targets
    anchor_weight: float = 0.0  # view stage: weight of the shared-feature drift (ViewNetwork)
    channel_weight: torch.Tensor | None = None  # (L,) landmark loss weights (landmark_balance)
    average: WeightAverage | None = None  # the stage's weight average (ema_decay), or None

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers by checkpoint name: "network" and, in stage 1, "discriminator"."""
        found = {"network": self.optimizer, "discriminator": self.d_optimizer}
        return {k: v for k, v in found.items() if v is not None}


def build_step_tools(
    config: TrainConfig,
    stage: str,
    model: nn.Module,
    discriminator: nn.Module | None,
    ctx: DistributedContext,
    *,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None,
    anchor: nn.Module | None = None,
) -> StepTools:
    """Freeze ``model`` for ``stage``, wrap its stage network for DDP (then compile it with
    ``config.compile``), build the optimizers (paper 2.2: stage 1 network + Adam discriminator,
    stage 2 the classifier only; the lr scaled by ``stages.scaled_optimizer``). ``anchor``: the
    view stage's frozen copy of the shared stages (``stages.view_anchor``), or None."""
    trainable = freeze_for_stage(model, stage, config.view_stage_trains_shared)
    landmarks = task_of(stage) == LANDMARKS
    body = LandmarkNetwork(model) if landmarks else ViewNetwork(model, anchor)
    optimizer = scaled_optimizer(stage_config(config, stage), ctx.world_size)
    tools = StepTools(
        network=maybe_compile(wrap_model(body, ctx), config.compile),
        optimizer=make_optimizer(optimizer, trainable),
        scaler=scaler,
        ctx=ctx,
        amp_dtype=amp_dtype,
        memory_format=memory_format(config.channels_last),
        loss=config.loss,
        threshold=codec_of(config).threshold,
        amplitude=config.heatmap_amplitude,
        anchor_weight=config.view_stage_anchor if anchor is not None else 0.0,
    )
    if landmarks and discriminator is not None:
        tools.discriminator = discriminator
        tools.d_optimizer = make_optimizer(config.discriminator, discriminator.parameters())
        tools.discriminator_every = config.discriminator_every
    return tools


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
    """One stage-1 step (pix2pix order: D first, then the network). D takes its step only on the
    stage steps divisible by ``tools.discriminator_every`` (so a resumed run takes the same
    steps); the network's adversarial term uses D on every step. Returns the loss parts, D's
    from its last step (none before D's first step in this process)."""
    device, scaler = tools.ctx.device, tools.scaler
    if tools.teacher is not None:
        batch = tools.teacher.heatmap_targets(batch, tools.amp_dtype)
    with autocast(device, tools.amp_dtype):
        heatmaps = tools.network(batch["image"])
    outputs = {"heatmaps": heatmaps.float()}  # losses in float32 (sums over 512x512 pixels)
    parts: dict[str, torch.Tensor] = {}
    D = tools.discriminator
    if D is not None and tools.stage_step % tools.discriminator_every == 0:
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
        tools.d_parts = {"d_real": d_parts["real"].detach(), "d_fake": d_parts["fake"].detach()}
        _set_requires_grad(D, False)  # the network's step must not move D
    if D is not None:
        parts = dict(tools.d_parts)  # between D's steps: its last losses
    with autocast(device, tools.amp_dtype):
        losses = landmark_losses(
            outputs,
            batch,
            tools.loss,
            D,
            reduction=tools.loss.reduction,
            threshold=tools.threshold,
            amplitude=tools.amplitude,
            channel_weight=tools.channel_weight,
        )
    tools.optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses["loss"]).backward()
    scaler.step(tools.optimizer)
    scaler.update()
    return {**losses, **parts}


def view_step(batch: dict[str, torch.Tensor], tools: StepTools) -> dict[str, torch.Tensor]:
    """One stage-2 step: ``loss.view`` x the cross entropy on the masked classification input
    (the weight alone in its stage: with SGD it scales the step as the learning rate does; Adam
    is nearly blind to it). Returns the weighted ``loss`` and the unweighted ``view`` part; with
    an anchored network also ``anchor``, the shared features' drift (added x
    ``tools.anchor_weight``)."""
    with autocast(tools.ctx.device, tools.amp_dtype):
        out = tools.network(batch["class_image"])
    logits, drift = out if isinstance(out, tuple) else (out, None)
    smoothing = tools.loss.label_smoothing
    view = view_loss(logits.float(), batch["view"], batch.get("has_view"), smoothing)["view"]
    losses = {"loss": tools.loss.view * view, "view": view}
    if tools.teacher is not None:
        blended, term = tools.teacher.view_loss(logits, batch["class_image"], view, tools.amp_dtype)
        losses = {"loss": tools.loss.view * blended, "view": view, "distill": term}
    if drift is not None:
        losses["loss"] = losses["loss"] + tools.anchor_weight * drift
        losses["anchor"] = drift.detach()
    tools.optimizer.zero_grad(set_to_none=True)
    tools.scaler.scale(losses["loss"]).backward()
    tools.scaler.step(tools.optimizer)
    tools.scaler.update()
    return losses


STEPS = {LANDMARKS: landmark_step, VIEWS: view_step, REFIT: landmark_step}


def train_epoch(
    stage: str,
    loader: Iterable[Mapping[str, torch.Tensor]],
    tools: StepTools,
    *,
    description: str,
    first_step: int = 0,
    global_step: int = 0,
    log_every: int = 1,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Run one epoch; return the image-weighted mean of each loss part over all ranks, with
    ``images`` (over all ranks) and ``steps`` (this rank's).

    ``first_step``: the stage step of the epoch's first batch (for ``tools.schedule``).
    ``global_step``: the run's step count before this epoch. The losses stay on the device:
    only every ``log_every`` run steps (and at the epoch's end) are they read on the host, so
    the steps in between queue on the GPU without waiting for it. There ``on_log(run step,
    parts)`` gets that step's float losses, and a non-finite loss since the last check stops
    training (TrainingDivergedError) before NaN weights are saved.
    """
    step = STEPS[stage]
    totals: dict[str, torch.Tensor] = {}  # image-weighted sums, float64 on the device
    finite = torch.ones((), dtype=torch.bool, device=tools.ctx.device)
    images, steps = 0, 0
    # A live bar on a terminal (rank 0); logs get the one-line epoch summary instead.
    bar = tqdm(loader, desc=description, leave=False, disable=None if tools.ctx.is_main else True)
    for index, raw in enumerate(bar):
        batch = to_device(raw, tools)
        tools.stage_step = first_step + index
        if tools.schedule is not None:
            tools.schedule.apply(tools.optimizer, tools.stage_step)
        parts = {k: v.detach().double() for k, v in step(batch, tools).items()}
        if tools.average is not None:
            tools.average.update()
        finite &= torch.isfinite(parts["loss"])
        n = int(batch["image"].shape[0])
        images, steps = images + n, steps + 1
        for key, value in parts.items():
            totals[key] = totals[key] + value * n if key in totals else value * n
        if (global_step + steps) % log_every == 0:
            values = _checked(parts, finite, description)  # the host waits here only
            bar.set_postfix({k: f"{float(v) / images:.4g}" for k, v in totals.items()})
            if on_log is not None:
                on_log(global_step + steps, values)
    if steps:
        _checked(parts, finite, description)
    keys = sorted(totals)
    device = reduce_device(tools.ctx)
    summed = torch.stack([totals[k].to(device) for k in keys] + [_zero(device)])
    summed[-1] = images
    summed = all_reduce_sums(summed, tools.ctx).cpu()
    count = max(float(summed[-1]), 1.0)
    result = {k: float(v) / count for k, v in zip(keys, summed[:-1].tolist(), strict=True)}
    result["images"] = float(summed[-1])
    result["steps"] = float(steps)
    return result


def _zero(device: torch.device) -> torch.Tensor:
    return torch.zeros((), dtype=torch.float64, device=device)


def _checked(
    parts: dict[str, torch.Tensor], finite: torch.Tensor, description: str
) -> dict[str, float]:
    """``parts`` as floats (a host sync); TrainingDivergedError if ``finite`` is False."""
    values = {k: float(v) for k, v in parts.items()}
    if not bool(finite):
        loss = values["loss"]
        shown = loss if not math.isfinite(loss) else "non-finite at an earlier step"
        raise TrainingDivergedError(
            f"{description}: the loss became {shown} (training diverged); lower "
            "the learning rate in a --config YAML; the last checkpoint is kept"
        )
    return values


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
    landmarks = task_of(stage) == LANDMARKS
    was_training = model.training
    model.eval()
    sums = {"error_mm": 0.0, "n_mm": 0, "error_px": 0.0, "n_px": 0, "correct": 0, "n_views": 0}
    for raw in loader:
        batch = {k: v.to(device) for k, v in raw.items() if torch.is_tensor(v)}
        with autocast(device, amp_dtype):
            if landmarks:
                heatmaps = model.forward_landmarks(batch["image"]).float()
            else:
                logits = model.forward_view(batch["class_image"]).float()
        if landmarks:
            _add_landmark_errors(sums, heatmaps, batch, codec)
        else:
            labelled = batch["has_view"].bool()
            hits = logits.argmax(dim=1) == batch["view"]
            sums["correct"] += int((hits & labelled).sum())
            sums["n_views"] += int(labelled.sum())
    model.train(was_training)
    if landmarks:
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
