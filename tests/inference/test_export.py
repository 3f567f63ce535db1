"""ONNX export: parity with PyTorch, metadata, dynamic batch, INT8 and its cost, file lookup."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from abdus.errors import AbdusInputError
from abdus.inference.auto import recorded_check
from abdus.inference.backends import OnnxBackend, one_shot_forward, read_onnx_info
from abdus.inference.compare import int8_cost
from abdus.inference.export import INT8_NAME, ONNX_NAME, load_for_export, max_abs_diff, resolve_onnx
from abdus.inference.export_command import export_onnx
from abdus.inference.predict import run_predict
from abdus.inference.quantize import calibration_feeds
from abdus.models import model_descriptor

PARITY_ATOL = 1e-4  # fp32 ONNX Runtime vs PyTorch: summation order only


@pytest.fixture(scope="module")
def exported(tiny_run, cohort, tmp_path_factory) -> dict:
    """fp32 and INT8 exports of the tiny run (INT8 calibrated on 8 cohort images)."""
    folder = tmp_path_factory.mktemp("onnx")
    fp32 = export_onnx(tiny_run, folder / ONNX_NAME)
    int8 = export_onnx(
        tiny_run, folder / INT8_NAME, int8=True, calibration=cohort, calibration_images=8
    )
    return {"fp32": fp32, "int8": int8, "folder": folder}


def test_fp32_export_matches_pytorch_on_random_inputs(exported):
    report = exported["fp32"]
    assert report["precision"] == "fp32" and report["opset"] >= 17
    assert report["outputs"] == ["logits", "heatmaps"]
    assert set(report["max_abs_diff"]) == {"logits", "heatmaps"}
    assert max(report["max_abs_diff"].values()) < PARITY_ATOL
    assert report["size_mb"] == pytest.approx(report["fp32_size_mb"])


def test_fp32_onnx_matches_pytorch_on_generated_scanner_images(exported, tiny_run, cohort):
    loaded = load_for_export(tiny_run)
    feeds = calibration_feeds(cohort, loaded, 6, split="test")
    assert len(feeds) == 6 and feeds[0]["image"].shape == (1, 1, 64, 64)
    diff = max_abs_diff(loaded.model, exported["folder"] / ONNX_NAME, feeds)
    assert set(diff) == {"logits", "heatmaps"} and max(diff.values()) < PARITY_ATOL


def test_onnx_batch_is_dynamic_and_metadata_describes_the_model(exported, tiny_run, random_batch):
    backend = OnnxBackend(exported["folder"] / ONNX_NAME)
    loaded = load_for_export(tiny_run)
    assert backend.info.preprocess == loaded.config.preprocess
    assert backend.info.codec == loaded.codec
    assert backend.info.model == json.loads(json.dumps(model_descriptor(loaded.model)))
    assert backend.info.precision == "fp32" and backend.name == "onnx-fp32"
    for batch in (1, 3):
        images, classes = random_batch((64, 64), batch=batch, seed=batch)
        logits, heatmaps = backend.run(images, classes)
        assert logits.shape == (batch, 11) and heatmaps.shape == (batch, 14, 64, 64)
        with torch.inference_mode():
            ref = loaded.model(images)["heatmaps"]
        assert torch.allclose(heatmaps, ref, atol=PARITY_ATOL)


def test_int8_export_is_smaller_and_close(exported, tiny_run, cohort):
    report = exported["int8"]
    assert report["precision"] == "int8"
    assert report["size_mb"] < 0.6 * report["fp32_size_mb"]
    assert np.isfinite(list(report["max_abs_diff"].values())).all()
    # Close on the scanner images it was calibrated on: INT8 moves the heat maps and the view
    # logits by under 10% of the range PyTorch fp32 gives them there (measured on the
    # untrained tiny model: 7% for the heat maps, 1% for the logits).
    real = report["max_abs_diff_real"]
    loaded = load_for_export(tiny_run)
    feeds = calibration_feeds(cohort, loaded, 8)[:4]
    with torch.inference_mode():
        outputs = [
            dict(
                zip(
                    ("logits", "heatmaps"),
                    one_shot_forward(loaded.model, *_tensors(f)),
                    strict=True,
                )
            )
            for f in feeds
        ]
    spread = {k: max(float(o[k].max() - o[k].min()) for o in outputs) for k in real}
    assert all(real[k] < 0.1 * spread[k] for k in real), (real, spread)
    info = OnnxBackend(exported["folder"] / INT8_NAME).info
    assert info.precision == "int8" and info.quantization["calibration_images"] == 8
    assert info.quantization["calibration"] == "percentile"
    assert info.quantization["fp32_nodes"] > 0  # the last refinement block (KEEP_FP32)


def _tensors(feed: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(feed["image"]), torch.from_numpy(feed["class_image"])


def test_int8_cost_reports_accuracy_and_mm_change(exported, tiny_run, cohort):
    cost = int8_cost(tiny_run, exported["folder"] / INT8_NAME, cohort)
    assert cost["candidate"] == "onnx-int8" and cost["split"] == "test"
    assert cost["n_images"] == 13 and cost["n_measurements"] > 0
    for key in ("view_accuracy_reference", "view_accuracy_candidate", "view_agreement"):
        assert 0.0 <= cost[key] <= 1.0
    points = 100 * (cost["view_accuracy_candidate"] - cost["view_accuracy_reference"])
    assert cost["accuracy_change_points"] == pytest.approx(points)
    assert cost["mean_measurement_change_mm"] >= 0.0
    assert cost["max_measurement_change_mm"] >= cost["mean_measurement_change_mm"]
    assert cost["mean_landmark_shift_mm"] >= 0.0


def test_cli_int8_export_prints_its_cost_on_the_val_split(tiny_run, cohort, tmp_path, capsys):
    from abdus.cli import main

    out = tmp_path / INT8_NAME
    args = ["export", str(tiny_run), "--out", str(out), "--int8", "--calibration", str(cohort)]
    assert main([*args, "--calibration-images", "4", "--check-images", "5"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "precision: int8" in printed
    cost_line = next(line for line in printed.splitlines() if line.startswith("int8 cost:"))
    assert "5 val-split images" in cost_line and "view accuracy" in cost_line
    assert "median" in cost_line
    check = recorded_check(read_onnx_info(out))  # kept in the file for --backend auto
    assert check["split"] == "val" and check["n_images"] == 5
    assert check["mean_measurement_change_mm"] >= 0 and 0 <= check["share_over_2mm"] <= 1
    assert main([*args, "--calibration-images", "4", "--check-images", "0"]) == 0
    assert "int8 cost" not in capsys.readouterr().out
    assert recorded_check(read_onnx_info(out)) is None  # a new file, not checked


def test_calibration_reader_serves_strides_of_the_model_inputs():
    from abdus.inference.quantize import _FeedReader

    feeds = [
        {"image": np.full((1, 1, 4, 4), i, np.float32), "extra": np.zeros(1)} for i in range(5)
    ]
    reader = _FeedReader(feeds, {"image"})
    assert len(reader) == 5
    reader.set_range(start_index=4, end_index=8)  # the calibrator's last, short stride
    last = reader.get_next()
    assert set(last) == {"image"} and last["image"][0, 0, 0, 0] == 4
    assert reader.get_next() is None


def test_int8_needs_calibration_data(tiny_run, tmp_path):
    with pytest.raises(AbdusInputError, match="calibration"):
        export_onnx(tiny_run, tmp_path / "m.onnx", int8=True)


def test_predict_runs_from_the_onnx_file_alone(exported, tiny_run, scanner_files, tmp_path):
    alone = tmp_path / "elsewhere" / "abdus.onnx"
    alone.parent.mkdir()
    shutil.copy(exported["folder"] / ONNX_NAME, alone)
    inputs = [scanner_files["dual"]]
    assert run_predict(alone, inputs, tmp_path / "onnx", backend="onnx") == 0
    assert run_predict(tiny_run, inputs, tmp_path / "torch") == 0
    for name in ("dual_r0", "dual_r1"):
        onnx = json.loads((tmp_path / "onnx" / f"{name}.json").read_text())
        ref = json.loads((tmp_path / "torch" / f"{name}.json").read_text())
        assert onnx["backend"] == "onnx-fp32" and onnx["view"] == ref["view"]
        for landmark, mark in ref["landmarks"].items():
            assert onnx["landmarks"][landmark]["x"] == pytest.approx(mark["x"], abs=1e-2)
            assert onnx["landmarks"][landmark]["y"] == pytest.approx(mark["y"], abs=1e-2)


def test_predict_with_the_int8_backend_of_a_run(tiny_run, cohort, scanner_files, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with pytest.raises(AbdusInputError, match="abdus export"):
        run_predict(run, [scanner_files["png"]], tmp_path / "none", backend="onnx-int8")
    export_onnx(run, run / INT8_NAME, int8=True, calibration=cohort, calibration_images=4)
    assert run_predict(run, [scanner_files["png"]], tmp_path / "out", backend="onnx-int8") == 0
    record = json.loads((tmp_path / "out" / "screen.json").read_text())
    assert record["backend"] == "onnx-int8" and record["error"] is None


def test_resolve_onnx_uses_fresh_exports_only(exported, make_model_file, tmp_path):
    run = tmp_path / "run"
    make_model_file(run / "model.pt", seed=1)  # other weights than the exported files
    with pytest.raises(AbdusInputError, match="is missing"):
        resolve_onnx(run, "onnx-int8")
    shutil.copy(exported["folder"] / INT8_NAME, run / INT8_NAME)
    with pytest.raises(AbdusInputError, match="stale"):
        resolve_onnx(run, "onnx-int8")
    shutil.copy(exported["folder"] / ONNX_NAME, run / ONNX_NAME)
    on_the_fly = resolve_onnx(run, "onnx")  # stale model.onnx: exported again elsewhere
    assert on_the_fly != run / ONNX_NAME and on_the_fly.is_file()
    assert resolve_onnx(run, "onnx") == on_the_fly  # once per process
    export_onnx(run, run / ONNX_NAME)
    assert resolve_onnx(run, "onnx") == run / ONNX_NAME


@pytest.mark.parametrize("last_refine", ["full", "half"])
def test_padded_decoder_is_exact_and_sixteen_wide(random_batch, last_refine):
    from abdus.inference.backends import one_shot_forward
    from abdus.inference.export import pad_decoder_channels
    from abdus.models import build_model

    torch.manual_seed(0)
    model = build_model(
        "mgcn_r", depth="resnet18", widths=(8, 16, 32, 64), gcn_k=7, last_refine=last_refine
    ).eval()
    padded, keep = pad_decoder_channels(model)
    assert keep == 14 and padded is not model
    widths = {m.out_channels for m in padded.decoder.modules() if isinstance(m, torch.nn.Conv2d)}
    assert widths == {16}
    images, classes = random_batch((64, 64))
    with torch.inference_mode():
        ref = one_shot_forward(model, images, classes)
        got = one_shot_forward(padded, images, classes)
    assert torch.allclose(got[0], ref[0], atol=1e-5)
    assert torch.allclose(got[1][:, :14], ref[1], atol=1e-5)
    assert torch.count_nonzero(got[1][:, 14:]) == 0  # the extra channels stay exactly zero
    stl = build_model("stl", depth="resnet18", widths=(8, 16, 32, 64))
    assert pad_decoder_channels(stl) == (stl, None)
