"""One way to open any abdus model for prediction: ``open_predictor(path, backend=...)``.

The path is a run folder or a model file (``abdus.modelfile.find_model``): a network
(``model.pt``, ``checkpoint.pt``, an exported ``.onnx``) runs in the chosen backend (torch,
onnx, onnx-int8); the PBT baseline (``model.pbt``) in its own detector. Both answer the
``BasePredictor`` interface, so ``predict``, ``evaluate`` and the services take one path.
``backend="auto"`` picks the backend for this machine and model (``abdus.inference.auto``); the
predictor's ``backend_choice`` then says which and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from abdus.choices import AUTO_BACKEND, Backend, check_choice
from abdus.errors import AbdusInputError
from abdus.inference.auto import resolve_backend
from abdus.inference.pbt_predictor import PBTPredictor
from abdus.inference.predictor import BasePredictor, Predictor
from abdus.modelfile import ModelKind, find_model


def open_predictor(
    path: str | Path, *, backend: str = "torch", bf16: bool = False, **network: Any
) -> BasePredictor:
    """The predictor of a run folder or model file. ``backend`` ("auto" or a ``Backend``),
    ``bf16`` and ``network`` (``device``, ``threads``, ``model_id``) apply to networks (see
    ``Predictor.from_run``); the PBT baseline runs on the CPU with the default backend only.
    AbdusInputError naming the path when it is unusable."""
    choice = None
    if backend == AUTO_BACKEND:
        if bf16:
            raise AbdusInputError("--bf16 needs --backend torch (auto never picks bf16)", path)
        choice = resolve_backend(path, network.get("device") or "cpu")
        backend = choice.backend
    predictor = _open(path, check_choice(Backend, backend), bf16, network)
    predictor.backend_choice = choice
    return predictor


def _open(path: str | Path, backend: Backend, bf16: bool, network: dict) -> BasePredictor:
    ref = find_model(path)
    if ref.kind is ModelKind.PBT:
        device = str(network.get("device") or "cpu")
        if backend is not Backend.TORCH or bf16 or device != "cpu":
            raise AbdusInputError(
                "the PBT baseline runs on the CPU with the default backend only", path
            )
        return PBTPredictor(ref.path)
    return Predictor.from_run(path, backend=backend, bf16=bf16, **network)
