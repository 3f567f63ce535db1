"""``run_predict`` on scanner files: names, JSON, CSV, overlays, SR, broken files, options."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from abdus.errors import AbdusInputError
from abdus.inference.outputs import LONG_AXIS_RGB, SHORT_AXIS_RGB, UniqueNames, image_name
from abdus.inference.predict import collect_inputs, resolve_device, run_predict
from abdus.io.sr import read_sr_report
from abdus.taxonomy import (
    MEASUREMENT_BY_CODE,
    MEASUREMENT_CODES,
    VIEW_NAMES,
    landmarks_of_view,
    measurements_of_view,
)

KT_VIEW = "kidney_right_trans"  # a given view: deterministic task (4 landmarks, 2 calipers)


def _load(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


def _rows(out: Path) -> list[dict]:
    with open(out / "predictions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def predicted(tiny_run, scanner_files, tmp_path_factory) -> Path:
    """One classifier-driven run over every scanner file (folder input, overlays on)."""
    folder = next(iter(scanner_files.values())).parent
    out = tmp_path_factory.mktemp("predicted")
    assert run_predict(tiny_run, [folder], out, overlay=True) == 0
    return out


def test_every_frame_and_tissue_region_gets_a_named_json(predicted):
    names = {p.stem for p in predicted.glob("*.json")}
    expected = {"dual_r0", "dual_r1", "palette", "j2k", "uncalibrated", "screen", "photo"}
    expected |= {f"clip_f{f}_r{r}" for f in range(3) for r in range(2)}
    assert names == expected
    assert {p.stem for p in predicted.glob("*.png")} == expected
    rows = _rows(predicted)
    assert [r["name"] for r in rows] == sorted(expected)  # input order = sorted paths
    assert all(r["error"] == "" for r in rows)
    assert set(rows[0]) >= {"file", "frame", "region", "view", "probability", *MEASUREMENT_CODES}


def test_json_has_view_probabilities_task_landmarks_and_source(predicted, scanner_files):
    record = _load(predicted, "clip_f2_r1")
    assert record["source"]["file"] == str(scanner_files["clip"])
    assert (record["source"]["frame"], record["source"]["region"]) == (2, 1)
    assert record["source"]["region_box"] == [88, 0, 160, 90]  # DICOM inclusive max + 1
    assert record["view"] in VIEW_NAMES and record["view_source"] == "model"
    assert set(record["view_probabilities"]) == set(VIEW_NAMES)
    assert sum(record["view_probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert record["view_probability"] == record["view_probabilities"][record["view"]]
    assert set(record["landmarks"]) == set(landmarks_of_view(record["view"]))
    # --backend auto on a CPU without a checked INT8 file: ONNX Runtime fp32 (exact)
    assert record["model_id"].startswith("mgcn_r:") and record["backend"] == "onnx-fp32"
    assert record["spacing_mm"] == pytest.approx([0.3, 0.3])  # the right tissue region
    assert record["error"] is None


def test_measurements_are_the_landmark_distance_in_each_regions_mm(
    tiny_run, scanner_files, tmp_path
):
    assert run_predict(tiny_run, [scanner_files["dual"]], tmp_path, view=KT_VIEW) == 0
    for name, spacing in (("dual_r0", 0.2), ("dual_r1", 0.3)):
        record = _load(tmp_path, name)
        assert record["view"] == KT_VIEW and record["view_source"] == "given"
        for m in measurements_of_view(KT_VIEW):
            a, b = (record["landmarks"][n] for n in m.landmarks)
            expected = np.hypot(a["x"] - b["x"], a["y"] - b["y"]) * spacing
            assert record["measurements_mm"][m.code] == pytest.approx(expected, rel=1e-9)


def test_uncalibrated_files_get_a_view_and_null_measurements_with_a_reason(
    tiny_run, scanner_files, tmp_path
):
    inputs = [scanner_files["uncalibrated"], scanner_files["png"]]
    assert run_predict(tiny_run, inputs, tmp_path, view=KT_VIEW) == 0
    for name in ("uncalibrated", "screen"):
        record = _load(tmp_path, name)
        assert record["spacing_mm"] is None
        assert record["measurements_mm"] == {"KT_LA": None, "KT_SA": None}
        assert "spacing" in record["measurement_notes"]["KT_LA"]
        assert any("no pixel spacing" in w for w in record["warnings"])
    # With --spacing-mm the PNG is measured; the DICOM also takes it (it has none of its own).
    out = tmp_path / "given"
    assert run_predict(tiny_run, inputs, out, view=KT_VIEW, spacing_mm=0.4) == 0
    record = _load(out, "screen")
    assert record["spacing_mm"] == [0.4, 0.4] and record["spacing_source"] == "user"
    assert all(isinstance(v, float) for v in record["measurements_mm"].values())


def test_broken_files_are_reported_and_the_batch_goes_on(tiny_run, scanner_files, tmp_path, capsys):
    broken = tmp_path / "in"
    broken.mkdir()
    data = scanner_files["j2k"].read_bytes()
    (broken / "truncated.dcm").write_bytes(data[: len(data) // 2])
    (broken / "garbage.dcm").write_bytes(b"not an image at all" * 20)
    missing = tmp_path / "missing.png"
    inputs = [scanner_files["palette"], broken, missing]
    code = run_predict(tiny_run, inputs, tmp_path / "out")
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert any(str(broken / "garbage.dcm") in line for line in err)
    assert any(str(missing) in line and "not found" in line for line in err)
    out = tmp_path / "out"
    assert _load(out, "palette")["error"] is None
    for name in ("truncated", "garbage", "missing"):
        record = _load(out, name)
        assert record["error"] and "\n" not in record["error"] and record["view"] is None
    rows = {r["name"]: r for r in _rows(out)}
    assert rows["palette"]["error"] == "" and rows["garbage"]["error"]


def test_sr_per_dicom_image_round_trips_and_validates(tiny_run, scanner_files, tmp_path):
    inputs = [scanner_files["clip"], scanner_files["png"]]
    assert run_predict(tiny_run, inputs, tmp_path, sr=True, view=KT_VIEW) == 0
    srs = sorted(p.name for p in tmp_path.glob("*.sr.dcm"))
    assert srs == [f"clip_f{f}_r{r}.sr.dcm" for f in range(3) for r in range(2)]
    assert any("no SR" in w for w in _load(tmp_path, "screen")["warnings"])
    record = _load(tmp_path, "clip_f1_r0")
    report = read_sr_report(tmp_path / "clip_f1_r0.sr.dcm")
    found = {c.code: (c.value_mm, (c.a, c.b)) for c in report.calipers}
    assert set(found) == {"KT_LA", "KT_SA"}
    assert report.view == KT_VIEW
    for code, (value, points) in found.items():
        assert value == pytest.approx(record["measurements_mm"][code], rel=1e-9)
        names = MEASUREMENT_BY_CODE[code].landmarks
        for (x, y), name in zip(points, names, strict=True):
            mark = record["landmarks"][name]
            assert (x, y) == pytest.approx((mark["x"], mark["y"]), abs=1e-3)  # GraphicData FL
    if shutil.which("dciodvfy"):
        result = subprocess.run(
            ["dciodvfy", str(tmp_path / "clip_f1_r0.sr.dcm")], capture_output=True, text=True
        )
        errors = [ln for ln in (result.stdout + result.stderr).splitlines() if "Error" in ln]
        assert errors == []


def test_overlay_draws_calipers_in_axis_colours_on_the_source_frame(
    tiny_run, scanner_files, tmp_path
):
    assert run_predict(tiny_run, [scanner_files["j2k"]], tmp_path, overlay=True, view=KT_VIEW) == 0
    picture = np.asarray(Image.open(tmp_path / "j2k.png"))
    assert picture.shape == (64, 80, 3)
    record = _load(tmp_path, "j2k")
    inside = [m for m in record["landmarks"].values() if 0 <= m["x"] < 80 and 0 <= m["y"] < 64]
    colours = {tuple(c) for c in picture.reshape(-1, 3)}
    assert LONG_AXIS_RGB in colours and SHORT_AXIS_RGB in colours  # the legend at least
    for mark in inside:
        x, y = round(mark["x"]), round(mark["y"])
        assert tuple(picture[y, x]) != (picture[y, x][0],) * 3  # a coloured mark, not grey


def test_folder_walk_is_sorted_recursive_and_skips_non_images(scanner_files, tmp_path):
    root = tmp_path / "in"
    (root / "b").mkdir(parents=True)
    (root / "a").mkdir()
    shutil.copy(scanner_files["j2k"], root / "b" / "IM_0001")  # DICOM without a suffix
    shutil.copy(scanner_files["png"], root / "a" / "x.png")
    (root / "manifest.json").write_text("{}")
    (root / ".hidden.png").write_bytes(scanner_files["png"].read_bytes())
    out = root / "out"
    out.mkdir()
    shutil.copy(scanner_files["png"], out / "previous.png")
    found = collect_inputs([root], exclude=out)
    assert found == [root / "a" / "x.png", root / "b" / "IM_0001"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(AbdusInputError, match="no DICOM"):
        collect_inputs([tmp_path / "empty"])


def test_names_are_unique_and_follow_frame_and_region():
    assert image_name("IM", 0, None, 1, 1) == "IM"
    assert image_name("IM", 2, 1, 3, 2) == "IM_f2_r1"
    assert image_name("IM", 0, 0, 1, 1) == "IM"
    names = UniqueNames()
    assert [names.take(n) for n in ("a", "a", "A", "a_2")] == ["a", "a_2", "A_3", "a_2_2"]


def test_same_stem_in_two_folders_does_not_overwrite(tiny_run, scanner_files, tmp_path):
    for sub in ("one", "two"):
        (tmp_path / sub).mkdir()
        shutil.copy(scanner_files["j2k"], tmp_path / sub / "scan.dcm")
    assert run_predict(tiny_run, [tmp_path / "one", tmp_path / "two"], tmp_path / "out") == 0
    assert _load(tmp_path / "out", "scan_2")["source"]["file"].endswith("two/scan.dcm")


def test_bad_options_and_models_are_one_line_errors(tiny_run, scanner_files, tmp_path):
    png = [scanner_files["png"]]
    with pytest.raises(AbdusInputError, match="unknown backend"):
        run_predict(tiny_run, png, tmp_path, backend="tensorrt")
    with pytest.raises(AbdusInputError, match="unknown view"):
        run_predict(tiny_run, png, tmp_path, view="heart")
    with pytest.raises(AbdusInputError, match="batch-size"):
        run_predict(tiny_run, png, tmp_path, batch_size=0)
    with pytest.raises(AbdusInputError, match="model not found"):
        run_predict(tmp_path / "nope", png, tmp_path)
    with pytest.raises(AbdusInputError, match="bf16"):
        run_predict(tiny_run, png, tmp_path, backend="onnx", bf16=True)


def test_a_model_without_classifier_needs_the_view(make_model_file, scanner_files, tmp_path):
    model = make_model_file(tmp_path / "mgcn" / "model.pt", model_name="mgcn")
    with pytest.raises(AbdusInputError, match="no view classifier"):
        run_predict(model, [scanner_files["png"]], tmp_path / "out")
    assert run_predict(model, [scanner_files["png"]], tmp_path / "out", view="spleen_long") == 0
    record = _load(tmp_path / "out", "screen")
    assert record["view"] == "spleen_long" and record["view_probabilities"] is None
    assert set(record["landmarks"]) == {"sl_la_1", "sl_la_2"}


def test_batch_size_does_not_change_results(tiny_run, scanner_files, tmp_path):
    folder = scanner_files["dual"].parent
    assert run_predict(tiny_run, [folder], tmp_path / "b1", batch_size=1) == 0
    assert run_predict(tiny_run, [folder], tmp_path / "b5", batch_size=5) == 0
    for path in (tmp_path / "b1").glob("*.json"):
        one, five = _load(tmp_path / "b1", path.stem), _load(tmp_path / "b5", path.stem)
        assert one["view"] == five["view"]
        for name, mark in one["landmarks"].items():
            assert mark["x"] == pytest.approx(five["landmarks"][name]["x"], abs=1e-3)


def test_a_failed_sr_keeps_the_prediction_and_fails_the_exit_code(
    tiny_run, scanner_files, tmp_path, capsys
):
    import pydicom

    ds = pydicom.dcmread(scanner_files["j2k"])
    del ds.SOPInstanceUID  # an SR cannot reference an image without one
    ds.save_as(tmp_path / "no_uid.dcm")
    assert run_predict(tiny_run, [tmp_path / "no_uid.dcm"], tmp_path / "out", sr=True) == 1
    record = _load(tmp_path / "out", "no_uid")
    assert record["error"].startswith("SR not written") and "SOPInstanceUID" in record["error"]
    assert record["view"] in VIEW_NAMES  # the prediction itself is there
    assert "SR not written" in capsys.readouterr().err


def test_reader_warnings_go_to_stderr_one_line_per_file_and_into_the_json(
    tiny_run, scanner_files, tmp_path, capsys
):
    import pydicom

    ds = pydicom.dcmread(scanner_files["j2k"])
    ds.Modality = "OT"  # a screen grab stored as Secondary Capture: not an ultrasound image
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.save_as(tmp_path / "screen_grab.dcm")
    inputs = [tmp_path / "screen_grab.dcm", scanner_files["png"], scanner_files["clip"]]
    assert run_predict(tiny_run, inputs, tmp_path / "out", view=KT_VIEW) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("warning: ") for line in err)  # none: clip
    assert err[0].startswith(f"warning: {tmp_path / 'screen_grab.dcm'}: ")
    assert "not an ultrasound image" in err[0] and "modality OT" in err[0]
    assert err[1].startswith(f"warning: {scanner_files['png']}: ") and "spacing" in err[1]
    record = _load(tmp_path / "out", "screen_grab")
    assert any("not an ultrasound image" in w for w in record["warnings"])
    assert record["view"] == KT_VIEW and record["error"] is None  # still predicted


def test_device_choice(tiny_run, scanner_files, tmp_path):
    png = [scanner_files["png"]]
    options = {"view": KT_VIEW, "device": "cpu", "backend": "torch"}
    assert run_predict(tiny_run, png, tmp_path / "cpu", **options) == 0
    assert _load(tmp_path / "cpu", "screen")["backend"] == "torch-fp32"
    with pytest.raises(AbdusInputError, match="unknown device 'tpu'; valid: auto, cpu, cuda"):
        run_predict(tiny_run, png, tmp_path, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(AbdusInputError, match="CUDA is not available"):
            run_predict(tiny_run, png, tmp_path, device="cuda:0")
        assert resolve_device(None) == resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_predicts_what_the_cpu_predicts(tiny_run, scanner_files, tmp_path):
    inputs = [scanner_files["dual"], scanner_files["j2k"]]
    assert resolve_device("auto") == torch.device("cuda")
    assert run_predict(tiny_run, inputs, tmp_path / "cpu", device="cpu") == 0
    assert run_predict(tiny_run, inputs, tmp_path / "gpu", device="cuda") == 0
    for path in (tmp_path / "cpu").glob("*.json"):
        cpu, gpu = _load(tmp_path / "cpu", path.stem), _load(tmp_path / "gpu", path.stem)
        assert cpu["view"] == gpu["view"]
        for name, mark in cpu["landmarks"].items():
            assert mark["x"] == pytest.approx(gpu["landmarks"][name]["x"], abs=0.05)
            assert mark["y"] == pytest.approx(gpu["landmarks"][name]["y"], abs=0.05)
