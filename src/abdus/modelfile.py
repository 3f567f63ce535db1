"""Model files: what training writes and what evaluation, prediction, export and the services
read. One module owns their names, their header check, the search for a run's model, and the
save and load of network files; training, inference, evaluation and the PBT baseline all sit
above it.

Three kinds of file (``ModelKind``), each self-describing:

* ``network``: ``model.pt`` (weights + descriptors, the deployable file), ``best.pt`` (the
  best validation epoch of the stage in progress, same format) and ``checkpoint.pt`` (all a
  killed run needs to resume; ``abdus.training.checkpoint``). PyTorch payloads that load with
  ``torch.load(weights_only=True)``: tensors and plain values, never pickled objects.
* ``pbt``: ``model.pbt``, the classical baseline (a joblib pickle; load trusted files only).
* ``onnx``: ``model.onnx`` / ``model.int8.onnx``, written by ``abdus export``; the header
  lives in the ONNX ``metadata_props`` (``abdus.inference.backends.OnnxModelInfo``).

Every header carries ``format``, ``version`` and the ``taxonomy`` (view and landmark names in
model order); :func:`check_header` checks them the same way for the three kinds. Writes are
atomic (``abdus.io.atomic``): a kill during the write leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from abdus import __version__
from abdus.data.heatmaps import HeatmapCodec
from abdus.errors import AbdusInputError
from abdus.io.atomic import atomic_path
from abdus.models import build_model_from_descriptor, model_descriptor
from abdus.taxonomy import LANDMARKS, VIEW_NAMES
from abdus.training.config import TrainConfig

MODEL_NAME = "model.pt"
CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"  # the best validation epoch of the stage being trained (model format)
PBT_NAME = "model.pbt"
ONNX_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"

CHECKPOINT_FORMAT = "abdus-checkpoint"
MODEL_FORMAT = "abdus-model"
FORMAT_VERSION = 1

# What a run folder is searched for, in order: the deployable file, then the last checkpoint.
NETWORK_FILES = (MODEL_NAME, CHECKPOINT_NAME)


class ModelKind(StrEnum):
    """What a model file holds (see the module docstring)."""

    NETWORK = "network"
    PBT = "pbt"
    ONNX = "onnx"


@dataclass(frozen=True)
class ModelRef:
    """A model file found by :func:`find_model`: its kind and path."""

    kind: ModelKind
    path: Path


def taxonomy_header() -> dict[str, list[str]]:
    """The taxonomy every model header records: view and landmark names in model order."""
    return {"views": list(VIEW_NAMES), "landmarks": list(LANDMARKS)}


def check_header(
    header: Any, path: str | Path, *, formats: tuple[str, ...], version: int, what: str
) -> dict[str, Any]:
    """``header`` if it is an abdus header of one of ``formats``, at most ``version``, made for
    this taxonomy; AbdusInputError naming ``path`` otherwise. ``what`` names the kind of file
    in the message ("abdus model", "abdus PBT model", ...)."""
    if not isinstance(header, dict) or header.get("format") not in formats:
        raise AbdusInputError(f"not an {what} (expected format {' or '.join(formats)})", path)
    found = header.get("version", 0)
    if not isinstance(found, int) or isinstance(found, bool):
        raise AbdusInputError(f"not an {what} (format version {found!r})", path)
    if found > version:
        raise AbdusInputError(
            f"written by a newer abdus (format version {found}); upgrade abdus", path
        )
    taxonomy = header.get("taxonomy")
    taxonomy = taxonomy if isinstance(taxonomy, dict) else {}
    views, landmarks = taxonomy.get("views"), taxonomy.get("landmarks")
    if not isinstance(views, list | tuple) or not isinstance(landmarks, list | tuple):
        raise AbdusInputError(f"not an {what} (no view/landmark taxonomy)", path)
    if list(views) != list(VIEW_NAMES) or list(landmarks) != list(LANDMARKS):
        raise AbdusInputError("made for a different view/landmark taxonomy", path)
    return header


def find_model(path: str | Path) -> ModelRef:
    """The model behind a path a user gave: a model file, or a run folder holding one
    (``model.pt``, else ``checkpoint.pt``, else ``model.pbt``). AbdusInputError otherwise."""
    path = Path(path)
    if path.is_dir():
        for name in NETWORK_FILES:
            if (path / name).is_file():
                return ModelRef(ModelKind.NETWORK, path / name)
        if (path / PBT_NAME).is_file():
            return ModelRef(ModelKind.PBT, path / PBT_NAME)
        raise AbdusInputError(
            f"no {MODEL_NAME}, {CHECKPOINT_NAME} or {PBT_NAME} in the run folder", path
        )
    if not path.is_file():
        raise AbdusInputError("model not found (give a run folder, .pt, .pbt or .onnx)", path)
    if path.suffix == ".onnx":
        return ModelRef(ModelKind.ONNX, path)
    if path.suffix == ".pbt":
        return ModelRef(ModelKind.PBT, path)
    return ModelRef(ModelKind.NETWORK, path)


def is_pbt_model(path: str | Path) -> bool:
    """True for a ``.pbt`` file or a run folder whose model is the PBT baseline."""
    try:
        return find_model(path).kind is ModelKind.PBT
    except AbdusInputError:
        return False


# ----------------------------------------------------------------------------- network files


def network_descriptors(config: TrainConfig, codec: HeatmapCodec, model: nn.Module) -> dict:
    """The self-description shared by checkpoints and model files (``model`` unwrapped)."""
    return {
        "abdus_version": __version__,
        "taxonomy": taxonomy_header(),
        "config": config.to_dict(),
        "codec": {**asdict(codec), "size": list(codec.size)},
        "model": {**model_descriptor(model), "state": model.state_dict()},
    }


def save_torch_payload(path: str | Path, payload: dict[str, Any]) -> None:
    """``torch.save`` of ``payload`` to ``path``, atomically."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def save_model(
    path: str | Path,
    *,
    config: TrainConfig,
    codec: HeatmapCodec,
    model: nn.Module,
    selection: dict[str, Any] | None = None,
) -> None:
    """Write a model file (weights + descriptors, no optimizer) atomically. ``selection``:
    how its weights were chosen, e.g. ``{"landmarks": {"epoch": 12, "landmark_error_mm":
    4.1}}`` per stage (the best validation epoch). ``model`` may be wrapped in DDP."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    payload = {"format": MODEL_FORMAT, "version": FORMAT_VERSION, "selection": selection or {}}
    payload.update(network_descriptors(config, codec, model))
    save_torch_payload(path, payload)


def read_network_file(path: str | Path) -> dict[str, Any]:
    """Read and check a ``checkpoint.pt`` or model file (``model.pt``, ``best.pt``) on the CPU.

    Returns the payload dict. AbdusInputError naming the file when it is missing, unreadable,
    not an abdus file, from a newer abdus, or made for another taxonomy.
    """
    path = Path(path)
    if not path.is_file():
        raise AbdusInputError("file not found", path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: one clear line, no traceback
        detail = " ".join(str(err).split())[:200]
        raise AbdusInputError(f"not a readable abdus checkpoint ({detail})", path) from None
    formats = (CHECKPOINT_FORMAT, MODEL_FORMAT)
    return check_header(payload, path, formats=formats, version=FORMAT_VERSION, what="abdus file")


def network_from_payload(payload: dict[str, Any]) -> tuple[nn.Module, TrainConfig, HeatmapCodec]:
    """(model with its trained weights in eval mode, resolved config, codec) of a payload."""
    spec = payload["model"]
    model = build_model_from_descriptor(spec)
    model.load_state_dict(spec["state"])
    model.eval()
    config = TrainConfig.from_dict(payload["config"])
    codec_spec = dict(payload["codec"])
    codec = HeatmapCodec(**{**codec_spec, "size": tuple(codec_spec["size"])})
    return model, config, codec


def load_network(path: str | Path) -> tuple[nn.Module, TrainConfig, HeatmapCodec]:
    """(model, config, codec) of a network file or a run folder (its ``model.pt``, else its
    last checkpoint), on the CPU in eval mode. ``config.preprocess`` is how inputs must be
    preprocessed; ``codec`` decodes the heat maps."""
    loaded = open_network(path)
    return loaded.model, loaded.config, loaded.codec


def run_name_of(model_file: Path) -> str:
    """The name a model is known by: its run folder for a run's file, else the file's stem."""
    known = (*NETWORK_FILES, BEST_NAME, PBT_NAME, ONNX_NAME, INT8_NAME)
    return model_file.parent.name if model_file.name in known else model_file.stem


@dataclass
class LoadedNetwork:
    """A network with what running or exporting it needs: its ``TrainConfig`` (preprocessing
    included), heat-map codec, source file (None for an in-memory model) and id
    (``variant:run``)."""

    model: nn.Module
    config: TrainConfig
    codec: HeatmapCodec
    source: Path | None = None
    model_id: str = ""


def open_network(path: str | Path) -> LoadedNetwork:
    """A network file or a run folder's network, loaded on the CPU in eval mode."""
    ref = find_model(path)
    if ref.kind is not ModelKind.NETWORK:
        raise AbdusInputError(f"a {ref.kind} model, not an abdus network (.pt)", ref.path)
    model, config, codec = network_from_payload(read_network_file(ref.path))
    model_id = f"{config.model}:{run_name_of(ref.path)}"
    return LoadedNetwork(model.eval(), config, codec, ref.path, model_id)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (read in 8 MiB blocks): which exact weights a file came from."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()
