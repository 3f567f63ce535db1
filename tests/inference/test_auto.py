"""``--backend auto``: which backend it deploys for a model on this machine, and why."""

from __future__ import annotations

import shutil

import pytest

from abdus.errors import AbdusInputError
from abdus.inference.auto import (
    choose_backend,
    pick_measured,
    recorded_check,
    within_exactness,
)
from abdus.inference.backends import bf16_supported, read_onnx_info
from abdus.inference.export import INT8_NAME, ONNX_NAME
from abdus.inference.export_command import export_onnx, record_check
from abdus.inference.loading import open_predictor
from abdus.inference.predict import run_predict
from abdus.service.options import ServeOptions

AVX2 = {"avx2": True, "avx512f": False, "vnni": False, "avx512_bf16": False, "amx": False}
EXACT_ENOUGH = {
    "split": "val",
    "n_images": 200,
    "accuracy_change_points": -0.3,
    "mean_measurement_change_mm": 0.12,
    "share_over_2mm": 0.004,
}


@pytest.fixture(scope="module")
def int8_run(tiny_run, cohort, tmp_path_factory):
    """A run folder with model.pt and an unchecked model.int8.onnx beside it."""
    run = tmp_path_factory.mktemp("auto_run")
    shutil.copy(tiny_run / "model.pt", run / "model.pt")
    export_onnx(
        run, run / INT8_NAME, int8=True, calibration=cohort, calibration_images=4, check_images=0
    )
    return run


def test_goals_need_every_figure_within_bounds():
    assert within_exactness(EXACT_ENOUGH)[0]
    assert not within_exactness(None)[0]
    for key, bad in (
        ("accuracy_change_points", 0.6),
        ("accuracy_change_points", -0.6),
        ("mean_measurement_change_mm", 0.25),
        ("share_over_2mm", 0.02),
    ):
        met, text = within_exactness({**EXACT_ENOUGH, key: bad})
        assert not met and "held-out images" in text, key


def test_a_run_without_int8_gets_exact_onnx_fp32(tiny_run):
    choice = choose_backend(tiny_run, features=AVX2)
    assert choice.backend == "onnx"
    assert "no model.int8.onnx" in choice.reason and "avx2" in choice.reason
    assert choice.describe().startswith("backend onnx (auto): ")


def test_int8_is_deployed_only_with_a_recorded_check_within_the_goals(int8_run):
    choice = choose_backend(int8_run, features=AVX2)
    assert choice.backend == "onnx" and "no accuracy check recorded" in choice.reason
    record_check(int8_run / INT8_NAME, {**EXACT_ENOUGH, "share_over_2mm": 0.05})
    choice = choose_backend(int8_run, features=AVX2)
    assert choice.backend == "onnx" and "5.0% of calipers > 2 mm" in choice.reason
    record_check(int8_run / INT8_NAME, EXACT_ENOUGH)
    assert (
        recorded_check(read_onnx_info(int8_run / INT8_NAME))["mean_measurement_change_mm"] == 0.12
    )
    choice = choose_backend(int8_run, features=AVX2)
    assert choice.backend == "onnx-int8" and "within the goals" in choice.reason
    predictor = open_predictor(int8_run, backend="auto")
    # predict reads this machine's CPU features, whatever they are: the same choice as
    # choose_backend with them, and the same backend as on the AVX2 CPU above
    assert predictor.name == "onnx-int8" and predictor.backend_choice == choose_backend(int8_run)


def test_stale_int8_and_other_devices(int8_run, make_model_file, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    make_model_file(run / "model.pt", seed=1)  # other weights than the INT8 file's
    shutil.copy(int8_run / INT8_NAME, run / INT8_NAME)
    assert "stale" in choose_backend(run, features=AVX2).reason
    assert choose_backend(run, device="cuda").backend == "torch"
    assert choose_backend(int8_run / INT8_NAME).backend == "onnx-int8"


def test_export_records_the_check_that_auto_reads(tiny_run, cohort, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_run / "model.pt", run / "model.pt")
    report = export_onnx(
        run, run / INT8_NAME, int8=True, calibration=cohort, calibration_images=4, check_images=6
    )
    check = recorded_check(read_onnx_info(run / INT8_NAME))
    assert check["n_images"] == report["int8_cost"]["n_images"] == 6
    met, _ = within_exactness(check)
    assert choose_backend(run, features=AVX2).backend == ("onnx-int8" if met else "onnx")
    export_onnx(run, run / ONNX_NAME)
    assert choose_backend(run / ONNX_NAME).backend == "onnx"


def test_bf16_is_refused_where_the_cpu_has_no_native_bf16(tiny_run, scanner_files, tmp_path):
    with pytest.raises(AbdusInputError, match="auto never picks bf16"):
        open_predictor(tiny_run, backend="auto", bf16=True)
    if bf16_supported("cpu"):
        pytest.skip("this CPU has native bfloat16")
    with pytest.raises(AbdusInputError, match="no native bfloat16"):
        run_predict(tiny_run, [scanner_files["png"]], tmp_path, backend="torch", bf16=True)
    assert not (tmp_path / "predictions.csv").exists()


def test_serve_takes_auto_and_names_bad_backends():
    assert ServeOptions.checked().backend == "auto"
    with pytest.raises(AbdusInputError, match="unknown backend 'tensorrt'; valid: auto"):
        ServeOptions.checked(backend="tensorrt")


def test_benchmark_pick_is_the_fastest_exact_enough_backend_never_bf16():
    latency = {"torch-fp32": 30.0, "torch-bf16": 10.0, "onnx-fp32": 25.0, "onnx-int8": 20.0}
    files = dict.fromkeys(latency)
    bad = {"onnx-int8": {**EXACT_ENOUGH, "mean_measurement_change_mm": 1.1}}
    assert pick_measured(latency, bad, files)[0] == "onnx-fp32"
    assert pick_measured(latency, None, files)[0] == "onnx-fp32"  # INT8 cost unknown
    name, reason = pick_measured(latency, {"onnx-int8": EXACT_ENOUGH}, files)
    assert name == "onnx-int8" and "0.120 mm" in reason
    assert pick_measured({"torch-bf16": 5.0}, None, {"torch-bf16": None})[0] == "torch-fp32"
