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

from abdus import __version__
from abdus.data.heatmaps import HeatmapCodec
from abdus.errors import AbdusInputError
from abdus.io.atomic import atomic_path
from abdus.models import build_model_from_descriptor, model_descriptor
from abdus.taxonomy import LANDMARKS, VIEW_NAMES
from abdus.training.config import TrainConfig
from abdus.training.distributed import unwrap

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
BEST_NAME = "best.pt"  # the best validation epoch of the stage being trained (model format)
CHECKPOINT_FORMAT = "abdus-checkpoint"
MODEL_FORMAT = "abdus-model"
FORMAT_VERSION = 1


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


def _descriptors(config: TrainConfig, codec: HeatmapCodec, model: nn.Module) -> dict[str, Any]:
    """The self-description shared by checkpoints and model files."""
    return {
        "abdus_version": __version__,
        "taxonomy": {"views": list(VIEW_NAMES), "landmarks": list(LANDMARKS)},
        "config": config.to_dict(),
        "codec": {**asdict(codec), "size": list(codec.size)},
        "model": {**model_descriptor(unwrap(model)), "state": unwrap(model).state_dict()},
    }


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
) -> None:
    """Write a resumable checkpoint atomically (call on rank 0 only). ``history``: the epoch
    records of ``metrics.jsonl`` so far (rewritten from here on resume)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": FORMAT_VERSION,
        **_descriptors(config, codec, model),
        "discriminator": None,
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "scaler": scaler.state_dict(),
        "progress": asdict(progress),
        "history": list(history or []),
        "rng": capture_rng_state(),
    }
    if discriminator is not None:
        d = unwrap(discriminator)
        payload["discriminator"] = {"config": d.config.to_dict(), "state": d.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def save_model(
    path: str | Path,
    *,
    config: TrainConfig,
    codec: HeatmapCodec,
    model: nn.Module,
    selection: dict[str, Any] | None = None,
):
    """Write a model file (weights + descriptors, no optimizer) atomically. ``selection``:
    how its weights were chosen, e.g. ``{"landmarks": {"epoch": 12, "landmark_error_mm":
    4.1}}`` per stage (the best validation epoch)."""
    payload = {"format": MODEL_FORMAT, "version": FORMAT_VERSION, "selection": selection or {}}
    payload.update(_descriptors(config, codec, model))
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _load(path: Path, formats: tuple[str, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise AbdusInputError("file not found", path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: one clear line, no traceback
        detail = " ".join(str(err).split())[:200]
        raise AbdusInputError(f"not a readable abdus checkpoint ({detail})", path) from None
    if not isinstance(payload, dict) or payload.get("format") not in formats:
        raise AbdusInputError(f"not an abdus file (expected format {' or '.join(formats)})", path)
    if payload.get("version", 0) > FORMAT_VERSION:
        raise AbdusInputError(
            f"written by a newer abdus (format version {payload['version']}); upgrade abdus", path
        )
    taxonomy = payload["taxonomy"]
    if list(taxonomy["views"]) != list(VIEW_NAMES) or list(taxonomy["landmarks"]) != list(
        LANDMARKS
    ):
        raise AbdusInputError("trained with a different view/landmark taxonomy", path)
    return payload


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint (``checkpoint.pt``) or model file (``model.pt``) on the CPU.

    Returns the payload dict (see ``save_checkpoint``). AbdusInputError naming the file when
    it is missing, unreadable, not an abdus file, or made for another taxonomy.
    """
    return _load(Path(path), (CHECKPOINT_FORMAT, MODEL_FORMAT))


def build_from_payload(payload: dict[str, Any]) -> tuple[nn.Module, TrainConfig, HeatmapCodec]:
    """(model with its trained weights in eval mode, resolved config, codec) of a payload."""
    spec = payload["model"]
    model = build_model_from_descriptor(spec)
    model.load_state_dict(spec["state"])
    model.eval()
    config = TrainConfig.from_dict(payload["config"])
    codec_spec = dict(payload["codec"])
    codec = HeatmapCodec(**{**codec_spec, "size": tuple(codec_spec["size"])})
    return model, config, codec


def load_model_file(path: str | Path) -> tuple[nn.Module, TrainConfig, HeatmapCodec]:
    """(model, config, codec) from a ``model.pt`` or ``checkpoint.pt`` file (CPU, eval mode)."""
    return build_from_payload(load_checkpoint(path))


def load_model_from_run(run_dir: str | Path) -> tuple[nn.Module, TrainConfig, HeatmapCodec]:
    """(model, config, codec) of a run folder: its ``model.pt``, else its last checkpoint.

    ``config.preprocess`` is how inputs must be preprocessed; ``codec`` decodes the heat maps.
    """
    run_dir = Path(run_dir)
    for name in (MODEL_NAME, CHECKPOINT_NAME):
        if (run_dir / name).is_file():
            return load_model_file(run_dir / name)
    raise AbdusInputError(f"no {MODEL_NAME} or {CHECKPOINT_NAME} in the run folder", run_dir)
