"""One way to open any abdus model for prediction: ``open_predictor(path, backend=...)``.

The path is a run folder or a model file (``abdus.modelfile.find_model``): a network
(``model.pt``, ``checkpoint.pt``, an exported ``.onnx``) runs in the chosen backend (torch,
onnx, onnx-int8); the PBT baseline (``model.pbt``) in its own detector. Both answer the
``BasePredictor`` interface, so ``predict``, ``evaluate`` and the services take one path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from abdus.choices import Backend, check_choice
from abdus.errors import AbdusInputError
from abdus.inference.pbt_predictor import PBTPredictor
from abdus.inference.predictor import BasePredictor, Predictor
from abdus.modelfile import ModelKind, find_model


def open_predictor(
    path: str | Path, *, backend: str = "torch", bf16: bool = False, **network: Any
) -> BasePredictor:
    """The predictor of a run folder or model file. ``backend``, ``bf16`` and ``network``
    (``device``, ``threads``, ``model_id``) apply to networks (see ``Predictor.from_run``); the
    PBT baseline runs on the CPU with the default backend only. AbdusInputError naming the path
    when it is unusable."""
    backend = check_choice(Backend, backend)
    ref = find_model(path)
    if ref.kind is ModelKind.PBT:
        device = str(network.get("device") or "cpu")
        if backend is not Backend.TORCH or bf16 or device != "cpu":
            raise AbdusInputError(
                "the PBT baseline runs on the CPU with the default backend only", path
            )
        return PBTPredictor(ref.path)
    return Predictor.from_run(path, backend=backend, bf16=bf16, **network)
