"""The benchmark's report structure (tiny preset), with and without a dataset."""

from __future__ import annotations

import json

import pytest

from abdus.errors import AbdusInputError
from abdus.inference.backends import bf16_supported
from abdus.inference.benchmark import (
    BENCH_BACKENDS,
    STAGES,
    run_benchmark,
)


def test_benchmark_reports_every_backend_side_by_side(capsys):
    report = run_benchmark("tiny", as_json=True, repeats=2, warmup=1)
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(report))
    assert report["untrained"] and "latency does not depend" in report["note"]
    timed = [n for n in BENCH_BACKENDS if n not in report["skipped"]]
    assert list(report["backends"]) == timed
    if not bf16_supported("cpu"):  # bf16 only where it is native, unless named
        assert "torch-bf16" in report["skipped"] and "torch-bf16" not in report["backends"]
    for key in ("avx2", "avx512f", "vnni", "avx512_bf16", "amx"):
        assert isinstance(report["machine"][key], bool)
    # untrained, no data: INT8's cost is unknown, so auto deploys the fastest exact backend
    exact = ("torch-fp32", "onnx-fp32")
    assert report["auto"] == min(exact, key=lambda n: report["backends"][n]["median_ms"])
    assert report["model"]["size"] == [64, 64] and report["model"]["depth"] == "resnet18"
    for name, row in report["backends"].items():
        assert 0 < row["median_ms"] <= row["p90_ms"], name
        assert set(row["stages_ms"]) == set(STAGES)
        assert row["model_file_mb"] > 0
    assert report["backends"]["torch-fp32"]["speedup"] == pytest.approx(1.0)
    sizes = {n: r["model_file_mb"] for n, r in report["backends"].items()}
    assert sizes["onnx-int8"] < sizes["onnx-fp32"]
    goals = report["goals"]
    assert goals["fastest"] in BENCH_BACKENDS
    assert {"latency_ms", "speedup", "size_mb"} <= set(goals)
    assert report["accuracy"] is None and report["machine"]["physical_cores"] >= 1


def test_benchmark_with_data_reports_each_fast_backends_change(cohort, capsys):
    report = run_benchmark(
        "tiny", repeats=1, warmup=0, backends=["torch-fp32", "onnx-fp32"], data=cohort
    )
    text = capsys.readouterr().out
    assert "onnx-fp32" in text and "goal latency_ms" in text
    change = report["accuracy"]["onnx-fp32"]
    assert change["view_agreement"] == 1.0 and change["accuracy_change_points"] == 0.0
    assert change["mean_measurement_change_mm"] < 1e-3  # fp32 vs fp32
    assert report["auto"] in ("torch-fp32", "onnx-fp32") and "auto: " in text


def test_benchmark_times_bf16_when_named_and_warns_without_native_bf16(capsys):
    report = run_benchmark("tiny", repeats=1, warmup=0, backends=["torch-fp32", "torch-bf16"])
    assert "torch-bf16" in report["backends"] and report["auto"] == "torch-fp32"
    if not bf16_supported("cpu"):
        assert "no native bfloat16" in capsys.readouterr().err


def test_benchmark_rejects_unknown_backends_and_size_on_a_run(tmp_path):
    with pytest.raises(AbdusInputError, match="unknown backend"):
        run_benchmark("tiny", backends=["tensorrt"])
    with pytest.raises(AbdusInputError, match="preset"):
        run_benchmark(str(tmp_path), size=128)
