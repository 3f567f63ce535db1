"""Training and inference speed on random data: what ``scripts/bench_training.py`` and
``scripts/gpu_check.py`` measure (no dataset needed).

Training steps are the trainer's own (``loops.landmark_step`` / ``loops.view_step``, built by
``loops.build_step_tools``), on one fixed random batch: images uniform in [0, 1], and for each
image the landmarks of one random task as Gaussian targets of the config's codec. Times come
from ``abdus.timing.time_calls``: per-step medians after a warm-up (medians, because a shared
CPU has outlier steps), with CUDA synchronised around every step.

``measure_data_path`` times instead whole runs of consecutive steps on a real cohort's cached
samples, each batch coming from the CPU loader or from the device-resident path
(``TrainConfig.data_on_device``): what one stage of ``abdus train`` does, data included.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from abdus.data.dataset import UltrasoundDataset
from abdus.data.splits import split_by_patient
from abdus.io.manifest import load_manifest
from abdus.taxonomy import LANDMARK_INDEX, NUM_LANDMARKS, NUM_VIEWS, TASKS
from abdus.timing import synchronize, time_calls
from abdus.training.config import TrainConfig
from abdus.training.datasets import TrainingData, start_epoch, train_batches
from abdus.training.distributed import DistributedContext
from abdus.training.loops import STEPS, StepTools, build_step_tools, to_device
from abdus.training.runtime import (
    configure_determinism,
    make_grad_scaler,
    memory_format,
    resolve_amp,
)
from abdus.training.stages import LANDMARKS, build_networks, codec_of, stage_config


def random_batch(config: TrainConfig, batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A CPU batch shaped like the dataset's (see ``loops``), random but with real targets."""
    g = torch.Generator().manual_seed(seed)
    H, W = config.preprocess.size
    mask = torch.zeros(batch_size, NUM_LANDMARKS)
    for b in range(batch_size):
        task = TASKS[int(torch.randint(len(TASKS), (1,), generator=g))]
        mask[b, [LANDMARK_INDEX[name] for name in task.landmarks]] = 1.0
    points = torch.rand(batch_size, NUM_LANDMARKS, 2, generator=g) * 0.6 + 0.2
    points = points * torch.tensor([W - 1, H - 1], dtype=torch.float32)  # (B, 14, 2) model px
    image = torch.rand(batch_size, 1, H, W, generator=g)
    return {
        "image": image,
        "class_image": image,
        "heatmaps": codec_of(config).encode_torch(points, mask),
        "landmark_mask": mask,
        "landmarks": points * mask[..., None],
        "view": torch.randint(NUM_VIEWS, (batch_size,), generator=g),
        "has_view": torch.ones(batch_size, dtype=torch.bool),
    }


def _step_tools(config: TrainConfig, stage: str, device: torch.device) -> StepTools:
    """The trainer's step tools for ``stage`` of ``config``'s freshly built networks on
    ``device`` (seeded, determinism and memory format as the trainer sets them)."""
    torch.manual_seed(config.seed)
    configure_determinism(config.deterministic, device)  # as the trainer (cuDNN autotune)
    model, discriminator = build_networks(config)
    for net in (model, discriminator):
        if net is not None:
            net.to(device, memory_format=memory_format(config.channels_last)).train()
    amp_dtype = resolve_amp(config.amp, device)
    return build_step_tools(
        config,
        stage,
        model,
        discriminator,
        DistributedContext(0, 1, 0, device),
        scaler=make_grad_scaler(device, amp_dtype),
        amp_dtype=amp_dtype,
    )


def _amp_name(amp_dtype: torch.dtype | None) -> str:
    return str(amp_dtype).removeprefix("torch.") if amp_dtype else "fp32"


def measure_training(
    config: TrainConfig,
    stage: str = LANDMARKS,
    *,
    device: torch.device,
    steps: int = 20,
    warmup: int = 5,
) -> dict[str, Any]:
    """Images/s of ``stage`` training steps with ``config``'s model, batch, amp, memory format.

    Returns batch size, median / mean seconds per step, images per second (from the median,
    and from the mean: with ``discriminator_every`` > 1 the PatchGAN's steps are in the mean
    only), and the loss of the first and last step (one fixed batch: with a learning rate that
    suits the loss scale, the last is lower).
    """
    tools = _step_tools(config, stage, device)
    batch_size = stage_config(config, stage).batch_size
    batch = to_device(random_batch(config, batch_size), tools)
    step = STEPS[stage]
    losses: list[float] = []  # every step's, warm-up included

    def one_step() -> None:  # numbered as train_epoch does: D steps on every n-th step only
        losses.append(float(step(batch, tools)["loss"].detach()))
        tools.stage_step += 1

    timings = time_calls(one_step, repeats=steps, warmup=warmup, device=device)
    median = timings.median_ms / 1000.0
    return {
        "stage": stage,
        "batch_size": batch_size,
        "input": list(config.preprocess.size),
        "amp": _amp_name(tools.amp_dtype),
        "channels_last": config.channels_last,
        "discriminator": tools.discriminator is not None,
        "steps": steps,
        "seconds_per_step_median": round(median, 5),
        "seconds_per_step_mean": round(timings.mean_ms / 1000.0, 5),
        "images_per_s": round(batch_size / median, 2),
        "images_per_s_mean": round(batch_size / (timings.mean_ms / 1000.0), 2),
        "loss_first": losses[0],
        "loss_last": losses[-1],
    }


def _endless(batches, seed: int, stage: str) -> Iterator[dict[str, torch.Tensor]]:
    """The batches of epoch 0, 1, ... of ``stage`` one after another."""
    for epoch in itertools.count():
        start_epoch(batches, seed, stage, epoch)
        yield from batches


def measure_data_path(
    config: TrainConfig,
    data: TrainingData,
    stage: str = LANDMARKS,
    *,
    device: torch.device,
    placement: str,
    steps: int = 20,
    warmup: int = 3,
) -> dict[str, Any]:
    """Images/s of ``stage`` with its data path: ``placement`` ("off": the CPU loader with
    ``config.num_workers`` workers; "on": ``device_data``) feeding ``steps`` consecutive
    training steps after ``warmup`` ones (one interval, CUDA synchronised at both ends, no host
    sync in between), and of the data path alone (batches on the device, no step)."""
    config = dataclasses.replace(config, data_on_device=placement)
    tools = _step_tools(config, stage, device)
    batch_size = stage_config(config, stage).batch_size
    ctx = tools.ctx
    step = STEPS[stage]

    def timed(run_step: bool) -> tuple[float, int]:
        batches = _endless(train_batches(data, stage, batch_size, config, ctx), config.seed, stage)
        images, loss = 0, None
        for index in range(warmup + steps):
            if index == warmup:
                synchronize(device)
                began, images = time.perf_counter(), 0
            batch = to_device(next(batches), tools)
            images += int(batch["image"].shape[0])
            if run_step:
                loss = step(batch, tools)["loss"].detach()
        synchronize(device)
        seconds = time.perf_counter() - began
        if loss is not None and not torch.isfinite(loss):
            raise RuntimeError(f"{stage}: the loss became {float(loss)}")
        return seconds, images

    data_s, data_images = timed(run_step=False)
    train_s, train_images = timed(run_step=True)
    return {
        "stage": stage,
        "data_on_device": placement,
        "num_workers": config.num_workers if placement == "off" else 0,
        "augment": config.augment,
        "batch_size": batch_size,
        "input": list(config.preprocess.size),
        "amp": _amp_name(tools.amp_dtype),
        "channels_last": config.channels_last,
        "compile": config.compile,
        "steps": steps,
        "data_images_per_s": round(data_images / data_s, 2),
        "train_images_per_s": round(train_images / train_s, 2),
    }


@torch.inference_mode()
def measure_inference(
    model: nn.Module,
    *,
    device: torch.device,
    batch_size: int,
    size: tuple[int, int],
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    steps: int = 20,
    warmup: int = 5,
) -> dict[str, Any]:
    """Forward latency (median ms per batch) and throughput (images/s) of ``model``."""
    fmt = memory_format(channels_last)
    model = model.to(device, memory_format=fmt).eval()
    x = torch.rand(batch_size, 1, *size, device=device).contiguous(memory_format=fmt)

    def forward() -> None:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            model(x)

    timings = time_calls(forward, repeats=steps, warmup=warmup, device=device)
    return {
        "batch_size": batch_size,
        "input": list(size),
        "amp": _amp_name(amp_dtype),
        "channels_last": channels_last,
        "steps": steps,
        "latency_ms_median": round(timings.median_ms, 3),
        "images_per_s": round(batch_size / (timings.median_ms / 1000.0), 2),
    }


def landmark_loss_curve(
    config: TrainConfig,
    data: str,
    *,
    device: torch.device,
    steps: int = 20,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Per-step stage-1 losses of ``config`` on the annotated training images of ``data``:
    does this learning rate learn on real images? (A NaN stops the curve.)"""
    manifest = load_manifest(data)
    split = split_by_patient(manifest.records, test_fraction=config.test_fraction, seed=config.seed)
    records = [r for r in split["train"] if r.reference.landmarks]
    dataset = UltrasoundDataset(
        manifest, records, config=config.preprocess, codec=codec_of(config), cache_dir=cache_dir
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.stage1.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
    )
    tools = _step_tools(config, LANDMARKS, device)
    curve: list[dict[str, float]] = []
    while len(curve) < steps:
        for raw in loader:
            parts = {
                k: float(v.detach())
                for k, v in STEPS[LANDMARKS](to_device(raw, tools), tools).items()
            }
            curve.append(parts)
            if len(curve) == steps or not all(v == v for v in parts.values()):
                return {"lr": config.stage1.optimizer.lr, "images": len(dataset), "curve": curve}
    return {"lr": config.stage1.optimizer.lr, "images": len(dataset), "curve": curve}
