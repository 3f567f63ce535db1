"""DICOM reading: pixel values per photometric / transfer syntax, regions, spacing, errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from abdus.errors import AbdusInputError
from abdus.io.dicom import read_dicom, read_dicom_header, ultrasound_warning
from abdus.io.images import luminance
from abdus.io.reader import read_any, read_frame

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dicom_factory as factory

# BT.601 luma of pure red, green, blue (0.299, 0.587, 0.114) * 255.
RED, GREEN, BLUE = 76.245, 149.685, 29.07


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dicom")


@pytest.fixture(scope="module")
def dual_view(folder: Path) -> Path:
    rows, cols = factory.DUAL_VIEW_SHAPE
    return factory.make_us_dicom(
        folder / "dual.dcm", rows=rows, cols=cols, frames=3, regions=factory.dual_view_regions()
    )


def colour_chart(rows: int = 16, cols: int = 20) -> np.ndarray:
    """(H, W, 3) uint8: quadrants red, green, blue, white; mid-grey bottom strip."""
    rgb = np.zeros((rows, cols, 3), np.uint8)
    h, w = rows // 2, cols // 2
    rgb[:h, :w, 0] = 255
    rgb[:h, w:, 1] = 255
    rgb[h:, :w, 2] = 255
    rgb[h:, w:] = 255
    rgb[-2:] = 128
    return rgb


def check_chart(image, tolerance: float) -> None:
    rows, cols = image.shape
    h, w = rows // 2, cols // 2
    expected = {(0, 0): RED, (0, w): GREEN, (h, 0): BLUE, (h, w): 255.0, (rows - 1, 0): 128.0}
    for (y, x), value in expected.items():
        assert image.pixels[y, x] == pytest.approx(value, abs=tolerance)
    assert image.saturation is not None
    assert image.saturation[0, 0] == pytest.approx(255.0, abs=tolerance)
    assert image.saturation[rows - 1, 0] == pytest.approx(0.0, abs=tolerance)


# --- regions and spacing -------------------------------------------------------------------


def test_dual_view_uses_largest_tissue_region_and_warns(dual_view: Path) -> None:
    images = read_dicom(dual_view)
    assert [image.frame for image in images] == [0, 1, 2]
    image = images[0]
    assert image.shape == factory.DUAL_VIEW_SHAPE
    assert image.pixels.dtype == np.float32
    assert len(image.regions) == 4
    assert image.region == image.regions[0]
    assert image.region.box == (0, 0, 88, 90)  # inclusive 87 / 89 in the file
    assert image.spacing_mm == pytest.approx((0.2, 0.2))  # 0.02 cm
    assert image.spacing_source == "ultrasound_region"
    assert any("split_regions" in warning for warning in image.warnings)


def test_split_regions_gives_each_tissue_region_its_spacing(dual_view: Path) -> None:
    images = read_dicom(dual_view, split_regions=True)
    assert len(images) == 3 * 2  # two tissue regions per frame; Doppler and bar are not tissue
    left, right = images[0], images[1]
    assert left.frame == right.frame == 0
    assert left.region.box == (0, 0, 88, 90)
    assert right.region.box == (88, 0, 160, 90)
    assert right.spacing_mm == pytest.approx((0.3, 0.3))  # |-0.03| cm -> 0.3 mm
    assert right.region.flipped_y and not right.region.flipped_x
    assert not left.region.flipped_y
    assert left.pixels.shape == right.pixels.shape == factory.DUAL_VIEW_SHAPE


def test_non_tissue_regions_are_parsed_but_not_used(dual_view: Path) -> None:
    regions = read_dicom(dual_view, frames=[0])[0].regions
    doppler, bar = regions[2], regions[3]
    assert (doppler.spatial_format, doppler.data_type) == (3, 3)
    assert doppler.spacing_mm is None  # seconds by cm/s: no length
    assert not doppler.is_tissue_2d and not bar.is_tissue_2d


def test_largest_tissue_region_wins_even_when_listed_last(folder: Path) -> None:
    small = factory.RegionSpec(box=(0, 0, 19, 19), delta=(0.05, 0.05))
    big = factory.RegionSpec(box=(20, 0, 79, 63), delta=(0.01, 0.01))
    doppler = factory.dual_view_regions()[2]
    doppler = factory.RegionSpec(box=(0, 40, 19, 63), delta=doppler.delta, units=doppler.units,
                                 spatial_format=3, data_type=3)  # fmt: skip
    path = factory.make_us_dicom(folder / "order.dcm", regions=[small, doppler, big])
    image = read_dicom(path)[0]
    assert image.region.box == (20, 0, 80, 64)
    assert image.spacing_mm == pytest.approx((0.1, 0.1))


def test_spacing_falls_back_to_pixel_spacing_then_caller_then_none(folder: Path) -> None:
    with_ps = factory.make_us_dicom(folder / "ps.dcm", pixel_spacing=(0.3, 0.4))
    image = read_dicom(with_ps, spacing_mm=0.3)[0]
    assert image.spacing_mm == pytest.approx((0.3, 0.4))
    assert image.spacing_source == "pixel_spacing"
    assert image.region is None

    bare = factory.make_us_dicom(folder / "nospacing.dcm")
    user = read_dicom(bare, spacing_mm=0.25)[0]
    assert user.spacing_mm == (0.25, 0.25) and user.spacing_source == "user"
    manifest = read_dicom(bare, spacing_mm=0.25, spacing_source="manifest")[0]
    assert manifest.spacing_source == "manifest"
    none = read_dicom(bare)[0]
    assert none.spacing_mm is None and none.spacing_source == "none"
    assert any("null" in warning for warning in none.warnings)


def test_region_spacing_beats_pixel_spacing_and_given_spacing(folder: Path) -> None:
    region = factory.RegionSpec(box=(0, 0, 79, 63), delta=(0.015, 0.02))
    path = factory.make_us_dicom(folder / "both.dcm", regions=[region], pixel_spacing=(0.9, 0.9))
    image = read_dicom(path, spacing_mm=0.5)[0]
    assert image.spacing_mm == pytest.approx((0.2, 0.15))  # (row = dy, col = dx) in mm
    assert image.spacing_source == "ultrasound_region"
    assert any("spacing_mm=0.5" in warning for warning in image.warnings)


def test_tissue_region_without_cm_units_gives_no_spacing(folder: Path) -> None:
    region = factory.RegionSpec(box=(0, 0, 79, 63), units=(factory.UNIT_NONE, factory.UNIT_CM))
    path = factory.make_us_dicom(folder / "nocm.dcm", regions=[region])
    image = read_dicom(path)[0]
    assert image.region is not None and image.region.spacing_mm is None
    assert image.spacing_mm is None and image.spacing_source == "none"
    assert any("no length spacing" in warning for warning in image.warnings)


def test_region_one_pixel_past_edge_is_clipped(folder: Path) -> None:
    region = factory.RegionSpec(box=(0, 0, 80, 63))  # MaxX1 == Columns: a vendor off-by-one
    path = factory.make_us_dicom(folder / "offbyone.dcm", regions=[region])
    image = read_dicom(path)[0]
    assert image.region.box == (0, 0, 80, 64)
    assert any("clipped" in warning for warning in image.warnings)


# --- pixel values --------------------------------------------------------------------------


def test_monochrome2_multiframe_values_and_frame_order(dual_view: Path) -> None:
    source = pydicom.dcmread(dual_view).pixel_array
    images = read_dicom(dual_view, frames=[2, 0])
    assert [image.frame for image in images] == [2, 0]
    np.testing.assert_array_equal(images[0].pixels, source[2].astype(np.float32))
    np.testing.assert_array_equal(images[1].pixels, source[0].astype(np.float32))
    assert images[0].saturation is None


def test_monochrome1_is_inverted(folder: Path) -> None:
    stored = factory.speckle_pattern(32, 40)[0]
    path = factory.make_us_dicom(folder / "mono1.dcm", pixels=stored, photometric="MONOCHROME1")
    image = read_dicom(path)[0]
    np.testing.assert_array_equal(image.pixels, 255.0 - stored.astype(np.float32))


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_12_bit_data_is_scaled_by_bits_stored(folder: Path, photometric: str) -> None:
    stored = np.array([[0, 4095, 2048, 1000]], np.uint16).repeat(4, axis=0)
    path = factory.make_us_dicom(
        folder / f"bits12_{photometric}.dcm",
        pixels=stored,
        photometric=photometric,
        bits_stored=12,
    )
    pixels = read_dicom(path)[0].pixels
    expected = stored[0] * (255.0 / 4095.0)
    if photometric == "MONOCHROME1":
        expected = 255.0 - expected
    np.testing.assert_allclose(pixels[0], expected, atol=1e-3)
    assert pixels.min() >= 0.0 and pixels.max() <= 255.0


@pytest.mark.parametrize("syntax", [pydicom.uid.ExplicitVRLittleEndian, RLELossless])
def test_rgb_luminance_of_known_colours(folder: Path, syntax: str) -> None:
    path = factory.make_us_dicom(
        folder / f"rgb_{syntax}.dcm", pixels=colour_chart(), photometric="RGB",
        transfer_syntax=syntax,
    )  # fmt: skip
    check_chart(read_dicom(path)[0], tolerance=1e-3)


def test_ybr_full_gives_the_same_luminance(folder: Path) -> None:
    path = factory.make_us_dicom(folder / "ybr.dcm", pixels=colour_chart(), photometric="YBR_FULL")
    assert pydicom.dcmread(path).PhotometricInterpretation == "YBR_FULL"
    check_chart(read_dicom(path)[0], tolerance=1.5)  # YBR <-> RGB rounding to 8 bits


def test_ybr_full_422_jpeg_baseline_multiframe(folder: Path) -> None:
    source = factory.speckle_pattern(48, 64, frames=2, colour=True)
    path = factory.make_us_dicom(
        folder / "jpeg422.dcm", pixels=source, photometric="YBR_FULL_422",
        transfer_syntax=JPEGBaseline8Bit,
    )  # fmt: skip
    images = read_dicom(path)
    assert len(images) == 2
    for image, frame in zip(images, source, strict=True):
        error = np.abs(image.pixels - luminance(frame))
        assert error.mean() < 3.0  # JPEG quality 95 on a smooth image
        assert image.photometric == "YBR_FULL_422"
    # Frames are not swapped: frame 1 is closer to source 1 than to source 0.
    assert (
        np.abs(images[1].pixels - luminance(source[1])).mean()
        < np.abs(images[1].pixels - luminance(source[0])).mean()
    )


def test_grey_jpeg_baseline(folder: Path) -> None:
    source = factory.speckle_pattern(48, 64)[0]
    path = factory.make_us_dicom(
        folder / "jpeg_grey.dcm", pixels=source, transfer_syntax=JPEGBaseline8Bit
    )
    assert np.abs(read_dicom(path)[0].pixels - source).mean() < 3.0


@pytest.mark.parametrize(
    ("photometric", "frames", "bits"),
    [("MONOCHROME2", 3, 8), ("MONOCHROME2", 1, 12), ("RGB", 1, 8)],
)
def test_jpeg2000_lossless_is_exact(folder: Path, photometric: str, frames: int, bits: int) -> None:
    colour = photometric == "RGB"
    source = factory.speckle_pattern(40, 48, frames, colour=colour, seed=3)
    if bits == 12:
        source = source.astype(np.uint16) * 16 + 7  # use the low bits too
    path = factory.make_us_dicom(
        folder / f"j2k_{photometric}_{frames}_{bits}.dcm", pixels=source,
        photometric=photometric, transfer_syntax=JPEG2000Lossless, bits_stored=bits,
    )  # fmt: skip
    native = factory.make_us_dicom(
        folder / f"native_{photometric}_{frames}_{bits}.dcm", pixels=source,
        photometric=photometric, bits_stored=bits,
    )  # fmt: skip
    assert read_dicom_header(path).syntax == JPEG2000Lossless
    for coded, plain in zip(read_dicom(path), read_dicom(native), strict=True):
        np.testing.assert_array_equal(coded.pixels, plain.pixels)
    decoded = pydicom.dcmread(path).pixel_array
    np.testing.assert_array_equal(decoded.reshape(source.shape), source)


def test_jpeg2000_with_colour_transform_ybr_rct_is_exact(folder: Path) -> None:
    source = factory.speckle_pattern(40, 48, colour=True, seed=5)[0]
    path = factory.make_us_dicom(folder / "rct_plain.dcm", pixels=source, photometric="RGB")
    ds = pydicom.dcmread(path)
    ds.compress(JPEG2000Lossless, source, use_mct=True)
    ds.PhotometricInterpretation = "YBR_RCT"  # PS3.5 8.2.4: lossless J2K colour transform
    ds.save_as(folder / "rct.dcm")
    image = read_dicom(folder / "rct.dcm")[0]
    np.testing.assert_allclose(image.pixels, luminance(source), atol=1e-3)


def test_jpeg2000_lossy_and_rle_multiframe(folder: Path) -> None:
    source = factory.speckle_pattern(40, 48, 2)
    lossy = factory.make_us_dicom(folder / "j2k91.dcm", pixels=source, transfer_syntax=JPEG2000)
    rle = factory.make_us_dicom(folder / "rle.dcm", pixels=source, transfer_syntax=RLELossless)
    assert read_dicom_header(lossy).syntax == JPEG2000
    for image, frame in zip(read_dicom(lossy), source, strict=True):
        assert np.abs(image.pixels - frame).mean() < 8.0  # ratio 10 smooths the speckle
    for image, frame in zip(read_dicom(rle), source, strict=True):
        np.testing.assert_array_equal(image.pixels, frame.astype(np.float32))


def test_palette_colour_applies_the_lut(folder: Path) -> None:
    palette = np.zeros((256, 3), np.uint16)
    palette[1] = (65535, 0, 0)
    palette[2] = (0, 65535, 0)
    palette[3] = (0, 0, 65535)
    palette[4] = (65535, 65535, 65535)
    indices = np.array([[0, 1, 2, 3, 4]], np.uint8).repeat(3, axis=0)
    path = factory.make_us_dicom(
        folder / "palette.dcm", pixels=indices, photometric="PALETTE COLOR", palette=palette
    )
    image = read_dicom(path)[0]
    np.testing.assert_allclose(image.pixels[0], [0.0, RED, GREEN, BLUE, 255.0], atol=1e-3)
    np.testing.assert_allclose(image.saturation[0], [0, 255, 255, 255, 0], atol=1e-3)
    assert image.photometric == "PALETTE COLOR"


def test_bare_dataset_without_preamble_reads(folder: Path) -> None:
    source = factory.speckle_pattern(16, 24)[0]
    path = factory.make_us_dicom(folder / "bare.dcm", pixels=source, preamble=False)
    assert Path(path).read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(read_any(path)[0].pixels, source.astype(np.float32))


def test_read_frame_decodes_only_the_asked_frame(folder: Path, dual_view: Path) -> None:
    # Cut the end of the last frame: every frame but that one must still read.
    data = dual_view.read_bytes()
    truncated = folder / "cut_last_frame.dcm"
    truncated.write_bytes(data[:-500])
    source = pydicom.dcmread(dual_view).pixel_array
    image = read_frame(truncated, 1)
    assert image.frame == 1
    assert image.spacing_source == "ultrasound_region"
    np.testing.assert_array_equal(image.pixels, source[1].astype(np.float32))
    with pytest.raises(AbdusInputError, match="frame 2"):
        read_any(truncated)


# --- not ultrasound ------------------------------------------------------------------------


def test_secondary_capture_reads_with_a_not_ultrasound_warning(folder: Path) -> None:
    path = factory.make_secondary_capture(folder / "screen.dcm")
    warning = ultrasound_warning(pydicom.dcmread(path, stop_before_pixels=True))
    assert warning is not None and "\n" not in warning
    assert "modality OT" in warning
    assert f"Secondary Capture Image Storage ({factory.SECONDARY_CAPTURE_STORAGE})" in warning
    (image,) = read_any(path)
    assert image.photometric == "RGB"
    # The reader attaches it; `abdus predict` copies image warnings into its JSON and CSV.
    assert image.warnings[0] == warning


def test_ultrasound_files_are_not_warned_about(folder: Path, dual_view: Path) -> None:
    single = factory.make_us_dicom(folder / "us_single.dcm")
    for path in (single, dual_view):
        assert ultrasound_warning(pydicom.dcmread(path, stop_before_pixels=True)) is None
        assert not any("not an ultrasound" in w for w in read_any(path)[0].warnings)
    ds = pydicom.dcmread(single, stop_before_pixels=True)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6"  # the retired Ultrasound Image Storage
    assert ultrasound_warning(ds) is None
    ds.Modality = "CT"
    assert "modality CT, SOP class" in str(ultrasound_warning(ds))
    ds.Modality = "US"
    del ds.SOPClassUID
    assert "modality US, SOP class (none)" in str(ultrasound_warning(ds))


# --- bad input -----------------------------------------------------------------------------


def _modified(folder: Path, name: str, edit) -> Path:
    path = factory.make_us_dicom(folder / name)
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path)
    return path


def _set_unknown_syntax(ds: pydicom.Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"


def _set_video_syntax(ds: pydicom.Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML  # known, but no decoder exists
    ds.PixelData = encapsulate([ds.PixelData])


def _zero_rows(ds: pydicom.Dataset) -> None:
    ds.Rows = 0


def _drop_pixels(ds: pydicom.Dataset) -> None:
    del ds.PixelData


def _region_outside(ds: pydicom.Dataset) -> None:
    ds.SequenceOfUltrasoundRegions = [factory.RegionSpec(box=(10, 10, 200, 50)).to_dataset()]


def _bad_photometric(ds: pydicom.Dataset) -> None:
    ds.PhotometricInterpretation = "HSV"


@pytest.mark.parametrize(
    ("name", "edit", "problem"),
    [
        ("unknown_ts.dcm", _set_unknown_syntax, "unknown UID 1.2.3.4.5.6.7"),
        ("mpeg2.dcm", _set_video_syntax, "unsupported transfer syntax MPEG2"),
        ("zero_rows.dcm", _zero_rows, "zero size"),
        ("no_pixels.dcm", _drop_pixels, "no pixel data"),
        ("region_outside.dcm", _region_outside, "outside"),
        ("hsv.dcm", _bad_photometric, "PhotometricInterpretation"),
    ],
)
def test_bad_files_raise_one_line_errors(folder: Path, name: str, edit, problem: str) -> None:
    path = _modified(folder, name, edit)
    with pytest.raises(AbdusInputError, match=problem) as caught:
        read_dicom(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_truncated_and_foreign_files_raise(folder: Path, dual_view: Path) -> None:
    jpeg = factory.make_us_dicom(folder / "t.dcm", frames=2, transfer_syntax=JPEGBaseline8Bit)
    cases = {
        "cut_jpeg.dcm": jpeg.read_bytes()[:-300],
        "cut_header.dcm": dual_view.read_bytes()[:300],
        "text.dcm": b"this is not a DICOM file at all " * 10,
    }
    for name, data in cases.items():
        (folder / name).write_bytes(data)
        with pytest.raises(AbdusInputError) as caught:
            read_dicom(folder / name)
        assert str(caught.value).startswith(str(folder / name))
    with pytest.raises(AbdusInputError, match="not found"):
        read_dicom(folder / "missing.dcm")


def test_bad_arguments(dual_view: Path) -> None:
    with pytest.raises(AbdusInputError, match="frame 3 does not exist"):
        read_dicom(dual_view, frames=[3])
    with pytest.raises(AbdusInputError, match="positive"):
        read_dicom(dual_view, spacing_mm=-0.1)
    with pytest.raises(ValueError, match="manifest, user"):
        read_dicom(dual_view, spacing_source="guess")


# --- the factory writes valid ultrasound objects ---------------------------------------------


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_factory_files_pass_dciodvfy(folder: Path, dual_view: Path) -> None:
    jpeg = factory.make_us_dicom(
        folder / "valid_jpeg.dcm", photometric="YBR_FULL_422", transfer_syntax=JPEGBaseline8Bit,
        regions=[factory.RegionSpec(box=(0, 0, 79, 63))],
    )  # fmt: skip
    for path in (dual_view, jpeg):
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        report = result.stdout + result.stderr
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert errors == [], report
