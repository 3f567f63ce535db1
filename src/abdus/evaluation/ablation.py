"""``abdus reproduce``: the paper's comparisons (Table 1, Fig. 3, sizes) on the user's data.

Every variant of the ablation trains and evaluates on the same patient-level split (the split
depends only on the dataset, the seed and the test fraction, which all presets share):
STL (view classifier), SFCN (one FCN per landmark task), MFCN, MGCN, MGCN_R (the proposed
network), and PBT (the classical baseline). The Human row is reader B against reader A on
the same test images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from abdus.choices import ABLATION_ORDER, Model
from abdus.errors import AbdusInputError
from abdus.evaluation.evaluate import evaluate_run, pick_device
from abdus.evaluation.reproduce_report import write_reproduce_report
from abdus.io.atomic import atomic_write_json
from abdus.modelfile import ModelKind, find_model, open_network
from abdus.models import count_parameters, model_size_mb
from abdus.progress import progress
from abdus.timing import time_calls
from abdus.training.trainer import train

ALL_MODELS = ABLATION_ORDER
NETWORKS = tuple(m for m in ALL_MODELS if m != Model.PBT)
TABLE1_ROW = {"pbt": "PBT", "sfcn": "SFCN", "mfcn": "MFCN", "mgcn": "MGCN", "mgcn_r": "MGCN_R"}


def reproduce(
    data: str | Path,
    out: str | Path,
    *,
    preset: str = "demo",
    models: Sequence[str] = ALL_MODELS,
    device: str | None = None,
) -> dict[str, Any]:
    """Train and evaluate each model on ``data``; write Table 1, Fig. 3 and the size table."""
    unknown = sorted(set(models) - set(ALL_MODELS))
    if unknown:
        raise AbdusInputError(f"unknown model(s) {unknown}; valid: {', '.join(ALL_MODELS)}")
    out = Path(out)
    results: dict[str, dict] = {}
    sizes: dict[str, dict] = {}
    for name in progress(models, "reproduce", total=len(models), unit="model"):
        print(f"reproduce: {name} ({preset} preset)", flush=True)
        results[name], sizes[name] = _run_variant(data, out / name, name, preset, device)
    rows = {TABLE1_ROW[m]: results[m] for m in models if m in TABLE1_ROW}
    reference = results.get("mgcn_r") or next(iter(results.values()))
    if "human" in reference:
        rows = {"Human": {**reference["human"], "n_patients": reference.get("n_patients")}, **rows}
    confusion = {}
    if "stl" in results:
        confusion["STL"] = results["stl"]
    if "mgcn_r" in results:
        confusion["MTL"] = results["mgcn_r"]
    if "human" in reference:
        confusion["Human"] = reference["human"]
    context = {
        "preset": preset,
        "data": str(data),
        "split": "test (patient level: 20% test, 10% validation for model selection, 70% train)",
        "patients in test split": reference.get("n_patients"),
        "device": device or pick_device(),
    }
    write_reproduce_report(rows, out, confusion=confusion, sizes=sizes, context=context)
    atomic_write_json(out / "reproduce.json", {"metrics": results, "sizes": sizes, **context})
    return {"metrics": results, "sizes": sizes}


def _run_variant(data, run: Path, model: str, preset: str, device) -> tuple[dict, dict]:
    """Train ``model`` into ``run`` unless it holds a model already, evaluate it on the test
    split, and measure its size (and, for a network, its CPU forward time)."""
    try:
        ref = find_model(run)
    except AbdusInputError:
        on = None if model == Model.PBT else device  # PBT trains on the CPU
        train(data, run, model=model, preset=preset, device=on)
        ref = find_model(run)
    metrics = evaluate_run(run, data, out=run / "evaluation", device=device)
    if ref.kind is ModelKind.PBT:
        return metrics, {"size_mb": ref.path.stat().st_size / 2**20}
    loaded = open_network(ref.path)
    size = {
        "parameters": count_parameters(loaded.model),
        "size_mb": model_size_mb(loaded.model),
        "inference_ms": forward_ms(loaded.model, loaded.config.preprocess.size),
    }
    return metrics, size


def forward_ms(model: torch.nn.Module, size: tuple[int, int], repeats: int = 5) -> float:
    """Median wall time (ms) of one batch-1 forward pass on the CPU after a warm-up."""
    x = torch.rand(1, 1, *size)
    model = model.eval().cpu()
    with torch.inference_mode():
        return time_calls(lambda: model(x), repeats=repeats, warmup=1).median_ms
