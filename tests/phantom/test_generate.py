"""`abdus generate`: a whole synthetic cohort (real renderer), its files and manifest."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from abdus.cli import main as cli_main
from abdus.errors import AbdusInputError
from abdus.io.manifest import Manifest, load_manifest
from abdus.phantom import generate
from abdus.phantom.contact_sheet import TILE_WIDTH
from abdus.phantom.generate import generate_cohort
from abdus.phantom.readers import measure_mm
from abdus.taxonomy import VIEW_NAMES, measurements_of_view

PATIENTS = 2
IMAGES_PER_PATIENT = 13  # 10 standard views + 3 others


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dicom_cohort(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    out = tmp_path_factory.mktemp("one") / "cohort"
    return generate_cohort(out, patients=PATIENTS, seed=3, progress=False)


def test_manifest_loads_and_holds_every_view(dicom_cohort: Manifest) -> None:
    loaded = load_manifest(dicom_cohort.root)  # validates views, landmarks, bounds, files
    assert loaded.records == dicom_cohort.records
    assert len(loaded) == PATIENTS * IMAGES_PER_PATIENT
    for records in loaded.by_patient().values():
        counts = Counter(r.truth.view for r in records)
        assert counts["others"] == 3
        assert all(counts[v] == 1 for v in VIEW_NAMES if v != "others")
    assert loaded.meta["generator"] == generate.GENERATOR and loaded.meta["seed"] == 3
    # reader B read a subset (default 30 %), reader A read everything
    n_second = sum(r.second_read is not None for r in loaded.records)
    assert 0 < n_second < len(loaded)


def test_same_seed_same_bytes_whatever_jobs(
    dicom_cohort: Manifest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = tmp_path_factory.mktemp("two") / "cohort"
    generate_cohort(out, patients=PATIENTS, seed=3, jobs=2, progress=False)
    first, second = _digests(dicom_cohort.root), _digests(out)
    assert "manifest.json" in first and "contact_sheet.png" in first
    assert first == second


def test_truth_measurements_follow_from_manifest_landmarks(dicom_cohort: Manifest) -> None:
    for record in dicom_cohort.records:
        truth_mm = record.meta["truth_measurements_mm"]
        expected = {m.code for m in measurements_of_view(record.truth.view)}
        assert set(truth_mm) == expected
        measured = measure_mm(record.truth.landmarks, record.meta["spacing_mm"])
        for code, value in truth_mm.items():
            assert measured[code] == pytest.approx(value, rel=1e-9, abs=1e-9)


def test_abdus_reader_gives_back_the_written_spacing(dicom_cohort: Manifest) -> None:
    from abdus.io.reader import read_any

    encodings = set()
    for record in dicom_cohort.records[:IMAGES_PER_PATIENT]:
        (image,) = read_any(dicom_cohort.path_of(record))
        spacing = record.meta["spacing_mm"]
        assert image.spacing_source == "ultrasound_region"
        assert image.spacing_mm == pytest.approx((spacing, spacing), rel=1e-12)
        assert image.region is not None
        assert list(image.region.box) == record.meta["region_box"]
        assert image.shape == record.size
        encodings.add(record.meta["encoding"])
    assert len(encodings) >= 2  # the scanner-export mix is really used


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) missing")
def test_generated_dicom_passes_dciodvfy(dicom_cohort: Manifest) -> None:
    seen: dict[str, Path] = {}
    for record in dicom_cohort.records:
        seen.setdefault(record.meta["encoding"], dicom_cohort.path_of(record))
    for path in seen.values():
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [
            ln for ln in (result.stdout + result.stderr).splitlines() if ln.startswith("Error")
        ]
        assert errors == [], path
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.6.1"


def test_contact_sheet_shows_every_view(dicom_cohort: Manifest) -> None:
    with Image.open(dicom_cohort.root / "contact_sheet.png") as sheet:
        pixels = np.asarray(sheet.convert("RGB")).astype(np.float32)
    cell_h, cell_w = pixels.shape[0] // 3, pixels.shape[1] // 4  # 11 views in a 4 x 3 grid
    assert cell_w >= TILE_WIDTH
    cells = [pixels[r * cell_h : (r + 1) * cell_h, c * cell_w : (c + 1) * cell_w] for r in range(3)
             for c in range(4)]  # fmt: skip
    assert all(cell.std() > 10 for cell in cells[:11])  # a picture in every view's cell
    assert cells[11].std() < 1  # the 12th cell is empty


def test_png_cohort_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "png"
    args = ["generate", str(out), "--patients", "1", "--seed", "5", "--format", "png"]
    assert cli_main([*args, "--second-read-fraction", "1"]) == 0
    manifest = load_manifest(out)
    assert all(r.second_read is not None for r in manifest.records)
    for record in manifest.records:
        assert record.file.endswith(".png")
        assert record.spacing_mm == (record.meta["spacing_mm"],) * 2
    with Image.open(manifest.path_of(manifest.records[0])) as image:
        assert image.format == "PNG" and image.size[::-1] == manifest.records[0].size
    # reader A's reads do not move when reader B reads fewer images
    again = generate_cohort(
        tmp_path / "png0", patients=1, seed=5, image_format="png", second_read_fraction=0.0,
        progress=False,
    )  # fmt: skip
    assert all(r.second_read is None for r in again.records)
    assert [r.reference for r in again.records] == [r.reference for r in manifest.records]


def test_refuses_a_folder_that_is_not_a_cohort(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(AbdusInputError, match="not an abdus cohort"):
        generate_cohort(tmp_path, patients=1, seed=0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert cli_main(["generate", str(tmp_path), "--patients", "1"]) == 2
    with pytest.raises(AbdusInputError, match="not a folder"):
        generate_cohort(tmp_path / "notes.txt", patients=1, seed=0, progress=False)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("patients", 0, "--patients"),
        ("seed", -1, "--seed"),
        ("second_read_fraction", 1.5, "--second-read-fraction"),
        ("image_format", "jpeg", "valid: dicom, png"),
        ("jobs", 0, "--jobs"),
    ],
)
def test_bad_options_are_user_errors(
    tmp_path: Path, option: str, value: object, message: str
) -> None:
    kwargs = {"patients": 1, "seed": 0, "progress": False, option: value}
    with pytest.raises(AbdusInputError, match=message):
        generate_cohort(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_failure_leaves_no_manifest_and_the_folder_can_be_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cohort"
    real_scan, calls = generate.scan_view, []

    def failing_scan(anatomy, view, rng):
        calls.append(view)
        if len(calls) == 4:
            raise RuntimeError("renderer crashed")
        return real_scan(anatomy, view, rng)

    monkeypatch.setattr(generate, "scan_view", failing_scan)
    with pytest.raises(RuntimeError, match="crashed"):
        generate_cohort(out, patients=1, seed=0, progress=False)
    assert not (out / "manifest.json").exists()
    assert len(list(out.rglob("IM_*"))) == 3  # the files before the crash
    monkeypatch.setattr(generate, "scan_view", real_scan)
    (out / "mine.txt").write_text("keep")
    manifest = generate_cohort(out, patients=1, seed=0, progress=False)  # a half cohort: reusable
    assert len(load_manifest(out)) == len(manifest) == IMAGES_PER_PATIENT
    assert (out / "mine.txt").read_text() == "keep"
