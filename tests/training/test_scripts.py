"""scripts/gpu_check.py runs end to end on a CPU with --tiny and reports JSON-ready numbers;
the data-path throughput of scripts/bench_training.py --pipeline measures both paths."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import torch
from training_synthetic import tiny_config

from abdus.training import loops
from abdus.training.datasets import load_training_data
from abdus.training.distributed import init_distributed
from abdus.training.stages import LANDMARKS, VIEWS, codec_of
from abdus.training.throughput import measure_data_path, measure_training

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


def test_data_path_throughput_is_measured_for_the_loader_and_the_device_path(
    tmp_path, cohort, cohort_cache, one_thread
):
    config = tiny_config(cache_dir=str(cohort_cache))
    ctx = init_distributed("cpu")
    stages = (LANDMARKS, VIEWS)  # the tiny preset's
    data = load_training_data(cohort, config, codec_of(config), tmp_path, stages, ctx)
    rows = [
        measure_data_path(config, data, stage, device=ctx.device, placement=p, steps=3, warmup=1)
        for stage in stages
        for p in ("off", "on")
    ]
    json.dumps(rows)
    assert [(r["stage"], r["data_on_device"]) for r in rows] == [
        (s, p) for s in stages for p in ("off", "on")
    ]
    for row in rows:
        assert row["train_images_per_s"] > 0 and row["data_images_per_s"] > 0
        assert row["batch_size"] == {"landmarks": 4, "views": 8}[row["stage"]]


def test_training_throughput_numbers_its_steps_so_the_patchgan_keeps_its_rhythm(
    monkeypatch, one_thread
):
    """``measure_training`` numbers its steps as ``train_epoch`` does: with
    ``discriminator_every`` 3, the PatchGAN steps on steps 0 and 3 of 5, not on all of them."""
    calls = []
    real = loops.discriminator_loss
    monkeypatch.setattr(
        loops, "discriminator_loss", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    config = tiny_config(discriminator_every=3)
    row = measure_training(config, LANDMARKS, device=torch.device("cpu"), steps=3, warmup=2)
    assert len(calls) == 2 and row["discriminator"]
    assert row["images_per_s_mean"] > 0 and row["images_per_s"] > 0


def test_bench_training_measures_each_memory_format_and_pooling(monkeypatch, capsys, one_thread):
    argv = ["bench_training.py", "--presets", "tiny", "--amp", "off", "--stages", "landmarks"]
    argv += ["--steps", "1", "--warmup", "1", "--memory-format", "nchw", "channels-last"]
    argv += ["--discriminator-downsample", "1", "2"]
    monkeypatch.setattr("sys.argv", argv)
    _load("bench_training").main()
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in lines if line.startswith('{"')]  # not the summary
    assert [r["channels_last"] for r in rows] == [False, False, True, True]
    assert [r["discriminator_downsample"] for r in rows] == [1, 2, 1, 2]
    assert all(r["discriminator"] for r in rows)
    assert all(r["images_per_s"] > 0 and math.isfinite(r["loss_last"]) for r in rows)


def test_demo_stability_separates_the_models_spread_from_the_test_patients():
    stability = _load("demo_stability")
    # LL_LA MAE (mm) of model m on seed t's test patients: set 1 is harder for every model
    mae = {(0, 0): 6.0, (0, 1): 8.0, (1, 0): 6.5, (1, 1): 8.2}
    cross = {f"{m}->{t}": {"mae_mm": {"LL_LA": v}} for (m, t), v in mae.items()}
    found = stability.cross_spread(cross, [0, 1])
    assert math.isclose(found["models"]["LL_LA"], 0.5)  # on test set 0: 6.5 - 6.0
    assert math.isclose(found["test_sets"]["LL_LA"], 2.0)  # model 0: 8.0 - 6.0
    assert found["models"]["KL_LA"] is None  # no figure, no spread
