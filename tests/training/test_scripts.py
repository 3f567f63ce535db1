"""scripts/gpu_check.py runs end to end on a CPU with --tiny and reports JSON-ready numbers."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"h7_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_tiny_runs_on_the_cpu(one_thread):
    result = _load("gpu_check").run(tiny=True)
    json.dumps(result, allow_nan=True)  # printable as JSON
    assert result["preset"] == "tiny"
    training = {(r["stage"], r["amp"]) for r in result["training"]}
    assert ("landmarks", "fp32") in training and any(s == "views" for s, _ in training)
    for row in result["training"] + result["inference"]:
        assert row["images_per_s"] > 0 and row["channels_last"]
    stage1 = next(r for r in result["training"] if r["stage"] == "landmarks")
    assert stage1["discriminator"] and math.isfinite(stage1["loss_first"])
    assert {r["batch_size"] for r in result["inference"]} == {1, 2}
