"""``abdus info``: describe_file, run_info text / JSON output and exit codes, the CLI, SR files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import JPEGBaseline8Bit

from abdus.cli import main
from abdus.io.info import describe_file, run_info
from abdus.io.sr import CaliperMeasurement, write_sr

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dicom_factory as factory


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("info")
    rows, cols = factory.DUAL_VIEW_SHAPE
    dual = factory.make_us_dicom(
        folder / "dual.dcm", rows=rows, cols=cols, frames=2, regions=factory.dual_view_regions()
    )
    jpeg = factory.make_us_dicom(
        folder / "jpeg.dcm", photometric="YBR_FULL_422", transfer_syntax=JPEGBaseline8Bit
    )
    png = folder / "still.png"
    Image.fromarray(factory.speckle_pattern(20, 30)[0]).save(png)
    broken = folder / "broken.dcm"
    broken.write_bytes(dual.read_bytes()[:-1000])  # last frame cut short
    return {"dual": dual, "jpeg": jpeg, "png": png, "broken": broken}


def test_describe_dual_view(files: dict[str, Path]) -> None:
    info = describe_file(files["dual"])
    json.dumps(info, allow_nan=False)  # JSON-serialisable, no NaN
    assert info["format"] == "dicom"
    assert info["size"] == list(factory.DUAL_VIEW_SHAPE)
    assert info["frames"] == 2
    assert info["photometric"] == "MONOCHROME2"
    assert info["transfer_syntax"]["name"] == "Explicit VR Little Endian"
    assert info["sop_class"]["uid"] == factory.US_MULTIFRAME_STORAGE
    assert info["modality"] == "US"
    assert info["tissue_regions"] == [0, 1]
    assert info["chosen_region"] == 0
    assert info["spacing_mm"] == pytest.approx([0.2, 0.2])
    assert info["spacing_source"] == "ultrasound_region"
    regions = info["regions"]
    assert [r["tissue"] for r in regions] == [True, True, False, False]
    assert regions[1]["box"] == [88, 0, 160, 90]
    assert regions[1]["flipped_y"] is True
    assert regions[2]["units"] == ["seconds", "cm/sec"]
    assert regions[2]["data_type_name"] == "PW spectral Doppler"
    assert regions[2]["flags"] == 0b100


def test_describe_uses_given_spacing_only_when_file_has_none(files: dict[str, Path]) -> None:
    png = describe_file(files["png"], spacing_mm=0.35)
    assert png["format"] == "png" and png["size"] == [20, 30]
    assert png["spacing_mm"] == [0.35, 0.35] and png["spacing_source"] == "user"
    jpeg = describe_file(files["jpeg"])
    assert jpeg["spacing_mm"] is None and jpeg["spacing_source"] == "none"
    assert jpeg["transfer_syntax"]["uid"] == JPEGBaseline8Bit
    assert any("null" in warning for warning in jpeg["warnings"])
    dual = describe_file(files["dual"], spacing_mm=0.35)
    assert dual["spacing_mm"] == pytest.approx([0.2, 0.2])


def test_run_info_text(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = run_info([str(files["dual"]), str(files["png"])])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert str(files["dual"]) in out and str(files["png"]) in out
    assert "128 x 192 px" in out and "2 frame(s)" in out
    assert "0.2 x 0.2 mm/px" in out and "ultrasound_region" in out
    assert "tissue: 0, 1" in out and "<- used" in out
    assert "PW spectral Doppler" in out


def test_run_info_keeps_going_after_a_broken_file(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    names = [str(files["broken"]), str(files["png"]), str(files["png"].parent / "nope.png")]
    code = run_info(names)
    out, err = capsys.readouterr()
    assert code == 1
    assert str(files["png"]) in out
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"error: {files['broken']}: ")
    assert lines[1] == f"error: {names[2]}: file not found"
    assert "Traceback" not in out + err


def test_run_info_json(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = run_info([str(files["jpeg"]), str(files["broken"])], as_json=True, spacing_mm=0.3)
    out, err = capsys.readouterr()
    assert code == 1
    document = json.loads(out)
    assert [entry["path"] for entry in document] == [str(files["jpeg"]), str(files["broken"])]
    assert document[0]["spacing_mm"] == [0.3, 0.3]
    assert "error" not in document[0]
    assert "frame 1" in document[1]["error"]
    assert err.startswith(f"error: {files['broken']}: ")


def test_cli_info(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(files["png"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["frames"] == 1
    assert main(["info", str(files["png"]), "--spacing-mm", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_describe_checks_pixels_not_only_the_header(tmp_path: Path) -> None:
    # A header-perfect file whose pixel data was cut: describe must fail, not report success.
    path = factory.make_us_dicom(tmp_path / "one.dcm", pixels=np.zeros((32, 32), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    assert run_info([str(path)]) == 1


def test_info_on_an_abdus_sr_shows_view_measurements_and_landmarks(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calipers = [CaliperMeasurement("KL_LA", 98.765, (10.0, 20.0), (70.5, 40.25))]
    sr = write_sr(tmp_path / "a.sr.dcm", files["dual"], calipers, view="kidney_right_long", frame=1)
    info = describe_file(sr)
    json.dumps(info, allow_nan=False)
    assert info["format"] == "dicom" and info["modality"] == "SR"
    block = info["sr"]
    assert block["view"] == "kidney_right_long"
    assert block["measurements_mm"] == {"KL_LA": pytest.approx(98.765)}
    assert block["landmark_space"] == "source_px"
    assert block["landmarks"]["kl_la_1"] == pytest.approx([10.0, 20.0], abs=1e-4)
    assert block["landmarks"]["kl_la_2"] == pytest.approx([70.5, 40.25], abs=1e-4)
    assert block["source_image"]["frame"] == 1
    assert block["source_image"]["sop_class"]["uid"] == factory.US_MULTIFRAME_STORAGE

    assert main(["info", str(sr)]) == 0
    out = capsys.readouterr().out
    assert "view             kidney_right_long" in out
    assert "KL_LA" in out and "98.77 mm" in out and "source px" in out
    assert "kl_la_1 (10.00, 20.00)" in out and "kl_la_2 (70.50, 40.25)" in out
    assert "frame 1" in out


def test_info_warns_about_a_file_that_is_not_ultrasound(tmp_path: Path) -> None:
    info = describe_file(factory.make_secondary_capture(tmp_path / "screen.dcm"))
    assert info["modality"] == "OT" and info["photometric"] == "RGB"
    assert "not an ultrasound image: modality OT" in info["warnings"][0]
