"""Scanner-like files: DICOM validity (dciodvfy), regions, encodings, determinism, PNG export."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from PIL import Image

from abdus.phantom import writers

SPACING_MM = 0.3125  # mm/px


def _scan(quality: int = 80) -> SimpleNamespace:
    """A rendered-scan stand-in: a smooth coloured screen with a sector-like region."""
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    gray = 60 + 80 * np.sin(xx / 17.0) * np.cos(yy / 23.0) + 0.3 * yy
    screen = np.stack([gray, gray, gray], axis=-1)
    screen[10:30, 250:310] = (250, 200, 0)  # a coloured overlay (colour bar)
    return SimpleNamespace(
        screen=np.clip(screen, 0, 255).astype(np.uint8),
        spacing_mm=SPACING_MM,
        region_box=(40, 20, 280, 230),
        acquisition={"jpeg_quality": quality, "frequency_mhz": 3.5, "depth_mm": 160.0},
        depth_origin=(160.0, -12.0),
        displayed_label="RT KIDNEY LONG",
    )


def _write(tmp_path: Path, encoding: str, seed: int = 0, name: str = "") -> Path:
    path = tmp_path / f"{name or encoding}.dcm"
    writers.write_dicom(path, _scan(), writers.dicom_identity(seed, "P00001", 2), encoding)
    return path


def dciodvfy_errors(path: Path) -> list[str]:
    """Lines of dciodvfy's report that start with 'Error' (warnings are allowed)."""
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) missing")
@pytest.mark.parametrize("encoding", writers.DICOM_ENCODINGS)
def test_dciodvfy_finds_no_errors(tmp_path: Path, encoding: str) -> None:
    assert dciodvfy_errors(_write(tmp_path, encoding)) == []


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) missing")
def test_dciodvfy_would_catch_a_broken_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "rgb")
    ds = pydicom.dcmread(path)
    del ds.SOPInstanceUID  # type 1 attribute of SOP Common
    ds.save_as(path)
    assert dciodvfy_errors(path)


def test_ultrasound_region_geometry(tmp_path: Path) -> None:
    ds = pydicom.dcmread(_write(tmp_path, "rgb"))
    assert ds.SOPClassUID == writers.US_IMAGE_STORAGE and ds.Modality == "US"
    (region,) = ds.SequenceOfUltrasoundRegions
    assert (region.RegionSpatialFormat, region.RegionDataType) == (1, 1)
    box = (
        region.RegionLocationMinX0,
        region.RegionLocationMinY0,
        region.RegionLocationMaxX1,
        region.RegionLocationMaxY1,
    )
    assert box == (40, 20, 279, 229)  # DICOM max is inclusive
    assert region.PhysicalUnitsXDirection == region.PhysicalUnitsYDirection == 3  # cm
    assert region.PhysicalDeltaX * 10 == pytest.approx(SPACING_MM, abs=1e-12)
    assert region.PhysicalDeltaY * 10 == pytest.approx(SPACING_MM, abs=1e-12)
    # the probe apex, relative to the region's top-left corner
    assert (region.ReferencePixelX0, region.ReferencePixelY0) == (120, -32)
    assert region.TransducerFrequency == 3500  # kHz


def test_pixels_of_each_encoding(tmp_path: Path) -> None:
    screen = _scan().screen
    rgb = pydicom.dcmread(_write(tmp_path, "rgb"))
    assert rgb.PhotometricInterpretation == "RGB"
    np.testing.assert_array_equal(rgb.pixel_array, screen)
    mono = pydicom.dcmread(_write(tmp_path, "monochrome2"))
    assert mono.PhotometricInterpretation == "MONOCHROME2"
    np.testing.assert_array_equal(mono.pixel_array, writers.luma(screen))
    assert mono.pixel_array[15, 260] == round(0.299 * 250 + 0.587 * 200)  # the yellow box
    jpeg = pydicom.dcmread(_write(tmp_path, "jpeg_baseline"))
    assert jpeg.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
    assert jpeg.PhotometricInterpretation == "YBR_FULL_422"
    assert jpeg.LossyImageCompression == "01"
    assert jpeg.LossyImageCompressionMethod == "ISO_10918_1"
    assert float(jpeg.LossyImageCompressionRatio) > 2.0
    decoded = jpeg.pixel_array.astype(np.int16)  # pydicom converts YBR to RGB
    error = np.abs(decoded - screen).mean()
    assert 0.0 < error < 3.0  # lossy, but the same picture


def test_jpeg_quality_changes_the_stream(tmp_path: Path) -> None:
    sizes = []
    for quality in (30, 95):
        scan = _scan(quality)
        writers.write_dicom(
            tmp_path / "q.dcm", scan, writers.dicom_identity(0, "P", 0), "jpeg_baseline"
        )
        sizes.append((tmp_path / "q.dcm").stat().st_size)
    assert sizes[0] < sizes[1]


def test_same_seed_same_bytes_and_uids_differ_by_seed(tmp_path: Path) -> None:
    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    for encoding in writers.DICOM_ENCODINGS:
        first = _write(tmp_path, encoding, name=f"{encoding}_1")
        second = _write(tmp_path, encoding, name=f"{encoding}_2")
        assert digest(first) == digest(second)
    other = pydicom.dcmread(_write(tmp_path, "rgb", seed=1, name="other"))
    same = pydicom.dcmread(tmp_path / "rgb_1.dcm")
    assert other.SOPInstanceUID != same.SOPInstanceUID
    assert other.StudyInstanceUID != same.StudyInstanceUID


def test_identity_is_one_study_per_patient() -> None:
    a, b = writers.dicom_identity(5, "P00003", 0), writers.dicom_identity(5, "P00003", 1)
    assert a.study_uid == b.study_uid and a.series_uid == b.series_uid
    assert a.sop_instance_uid != b.sop_instance_uid
    assert (a.instance_number, b.instance_number) == (1, 2)
    assert writers.dicom_identity(5, "P00004", 0).study_uid != a.study_uid
    assert len(a.sop_instance_uid) <= 64


def test_unknown_encoding_names_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="monochrome2"):
        _write(tmp_path, "jpeg2000")


def test_abdus_reader_gives_back_the_written_spacing(tmp_path: Path) -> None:
    dicom = pytest.importorskip("abdus.io.dicom")
    for encoding in writers.DICOM_ENCODINGS:
        (image,) = dicom.read_dicom(_write(tmp_path, encoding))
        assert image.spacing_source == "ultrasound_region"
        assert image.spacing_mm == pytest.approx((SPACING_MM, SPACING_MM), abs=1e-9)
        assert image.region is not None and image.region.box == (40, 20, 280, 230)
        assert image.shape == (240, 320)


def test_png_is_a_jpeg_compressed_screenshot(tmp_path: Path) -> None:
    scan = _scan(quality=40)
    writers.write_png(tmp_path / "a.png", scan)
    writers.write_png(tmp_path / "b.png", scan)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    with Image.open(tmp_path / "a.png") as image:
        assert image.format == "PNG" and image.mode == "RGB"
        pixels = np.asarray(image).astype(np.int16)
    error = np.abs(pixels - scan.screen).mean()
    assert 0.0 < error < 6.0  # artefacts of quality 40, same picture
    np.testing.assert_array_equal(pixels, writers.jpeg_round_trip(scan.screen, 40))
