"""Self-describing checkpoints (every epoch, atomic) and the final ``model.pt``.

A checkpoint holds everything needed to continue a run killed at any moment, losing at most
the epoch in progress (nnU-Net style): the resolved config, the taxonomy (view and landmark
names, in model order), the heat-map codec, the abdus version, the model variant and its
config, model / discriminator / optimizer / grad-scaler states, the stage and the number of
epochs completed in it, the global step, the RNG states (python, numpy, torch, cuda) and the
best held-out metrics. ``model.pt`` is the small deployable file: weights and descriptors, no
optimizer. Both load with ``torch.load(weights_only=True)``: only tensors and plain Python
values are stored, never pickled objects.

Files are written through ``abdus.io.atomic.atomic_path``: a kill during the write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from abdus.data.heatmaps import HeatmapCodec
from abdus.modelfile import (
    BEST_NAME,
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    FORMAT_VERSION,
    MODEL_FORMAT,
    MODEL_NAME,
    load_network,
    network_descriptors,
    network_from_payload,
    read_network_file,
    save_model,
    save_torch_payload,
)
from abdus.training.config import TrainConfig
from abdus.training.distributed import unwrap

# The network-file API lives in abdus.modelfile; these names stay importable from here.
load_checkpoint = read_network_file
build_from_payload = network_from_payload
load_model_file = load_network
load_model_from_run = load_network


@dataclass
class Progress:
    """Where a run is: the stage being trained (the stages before it in the model's order are
    finished), epochs completed in it, optimizer steps so far, and the best held-out value of
    each metric."""

    stage: str
    epoch: int = 0
    global_step: int = 0
    best: dict[str, float] = field(default_factory=dict)
    stale_epochs: int = 0  # validated epochs of this stage since its best one (patience)


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states as plain values and tensors."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state`` (the CUDA part only where CUDA is present)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def save_checkpoint(
    path: str | Path,
    *,
    config: TrainConfig,
    codec: HeatmapCodec,
    model: nn.Module,
    discriminator: nn.Module | None,
    optimizers: dict[str, torch.optim.Optimizer],
    scaler: torch.amp.GradScaler,
    progress: Progress,
    history: list[dict[str, Any]] | None = None,
    anchor: nn.Module | None = None,
    average: dict[str, Any] | None = None,
) -> None:
    """Write a resumable checkpoint atomically (call on rank 0 only). ``history``: the epoch
    records of ``metrics.jsonl`` so far (rewritten from here on resume); ``anchor``: the view
    stage's frozen shared stages (``TrainConfig.view_stage_anchor``), kept for a resume;
    ``average``: the stage's weight average (``WeightAverage.state_dict``), likewise."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": FORMAT_VERSION,
        **network_descriptors(config, codec, unwrap(model)),
        "discriminator": None,
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "scaler": scaler.state_dict(),
        "progress": asdict(progress),
        "history": list(history or []),
        "rng": capture_rng_state(),
        "anchor": None if anchor is None else anchor.state_dict(),
        "average": average,
    }
    if discriminator is not None:
        d = unwrap(discriminator)
        payload["discriminator"] = {"config": d.config.to_dict(), "state": d.state_dict()}
    save_torch_payload(path, payload)


__all__ = [
    "BEST_NAME",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "FORMAT_VERSION",
    "MODEL_FORMAT",
    "MODEL_NAME",
    "Progress",
    "build_from_payload",
    "capture_rng_state",
    "load_checkpoint",
    "load_model_file",
    "load_model_from_run",
    "restore_rng_state",
    "save_checkpoint",
    "save_model",
]
