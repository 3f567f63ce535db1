"""PNG / JPEG reading, format sniffing by content, and caller-given spacing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from abdus.errors import AbdusInputError
from abdus.io.images import read_image
from abdus.io.reader import read_any, read_frame, sniff_format

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dicom_factory as factory

RED, GREEN, BLUE = 76.245, 149.685, 29.07  # BT.601 luma * 255


@pytest.fixture
def grey() -> np.ndarray:
    return factory.speckle_pattern(24, 32)[0]


def save(array: np.ndarray, path: Path, **kwargs) -> Path:
    """Write ``array`` with Pillow (mode inferred from shape and dtype); return ``path``."""
    Image.fromarray(array).save(path, **kwargs)
    return path


def test_grey_png_is_exact_and_has_no_saturation(tmp_path: Path, grey: np.ndarray) -> None:
    image = read_image(save(grey, tmp_path / "g.png"))[0]
    np.testing.assert_array_equal(image.pixels, grey.astype(np.float32))
    assert image.pixels.dtype == np.float32
    assert image.saturation is None
    assert image.photometric == "MONOCHROME2"
    assert image.region is None and image.regions == ()


def test_16_bit_png_spans_0_to_255(tmp_path: Path) -> None:
    values = np.array([[0, 65535, 32768, 257]], np.uint16).repeat(3, axis=0)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    pixels = read_image(path)[0].pixels
    np.testing.assert_allclose(pixels[0], values[0] * (255.0 / 65535.0), atol=1e-3)


def test_rgb_and_rgba_png_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, :, 0], rgb[1, :, 1], rgb[2, :, 2], rgb[3] = 255, 255, 255, 255
    image = read_image(save(rgb, tmp_path / "c.png"))[0]
    np.testing.assert_allclose(image.pixels[:, 0], [RED, GREEN, BLUE, 255.0], atol=1e-3)
    np.testing.assert_allclose(image.saturation[:, 0], [255, 255, 255, 0], atol=1e-3)
    assert image.photometric == "RGB"

    rgba = np.concatenate([rgb, np.full((4, 4, 1), 255, np.uint8)], axis=-1)
    rgba[:, 2:, 3] = 0  # transparent half composites over black
    image = read_image(save(rgba, tmp_path / "c_alpha.png"))[0]
    np.testing.assert_allclose(image.pixels[:, 0], [RED, GREEN, BLUE, 255.0], atol=1e-3)
    np.testing.assert_array_equal(image.pixels[:, 2:], 0.0)


def test_palette_png(tmp_path: Path) -> None:
    indices = np.array([[0, 1, 2, 3]], np.uint8).repeat(2, axis=0)
    image = Image.fromarray(indices, "P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 128, 128, 128] + [0] * (3 * 252))
    image.save(tmp_path / "p.png")
    read = read_image(tmp_path / "p.png")[0]
    np.testing.assert_allclose(read.pixels[0], [0.0, RED, GREEN, 128.0], atol=1e-3)
    assert read.photometric == "PALETTE COLOR"


def test_jpeg_grey_and_colour(tmp_path: Path, grey: np.ndarray) -> None:
    image = read_image(save(grey, tmp_path / "g.jpg", quality=95))[0]
    assert np.abs(image.pixels - grey).mean() < 3.0
    colour = factory.speckle_pattern(24, 32, colour=True)[0]
    image = read_image(save(colour, tmp_path / "c.jpg", quality=95))[0]
    expected = colour.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    assert np.abs(image.pixels - expected).mean() < 3.0
    assert image.saturation is not None


def test_animated_png_frames(tmp_path: Path) -> None:
    frames = factory.speckle_pattern(8, 10, frames=2)
    path = tmp_path / "anim.png"
    first, second = Image.fromarray(frames[0]), Image.fromarray(frames[1])
    first.save(path, save_all=True, append_images=[second])
    images = read_image(path)
    assert [image.frame for image in images] == [0, 1]
    np.testing.assert_array_equal(images[1].pixels, frames[1].astype(np.float32))
    np.testing.assert_array_equal(read_frame(path, 1).pixels, frames[1].astype(np.float32))
    with pytest.raises(AbdusInputError, match="frame 2 does not exist"):
        read_frame(path, 2)


def test_spacing_only_from_caller(tmp_path: Path, grey: np.ndarray) -> None:
    path = save(grey, tmp_path / "g.png")
    none = read_image(path)[0]
    assert none.spacing_mm is None and none.spacing_source == "none"
    assert any("null" in warning for warning in none.warnings)
    user = read_any(path, spacing_mm=0.4)[0]
    assert user.spacing_mm == (0.4, 0.4) and user.spacing_source == "user"
    assert user.warnings == []
    manifest = read_frame(path, spacing_mm=0.4)
    assert manifest.spacing_source == "manifest"
    with pytest.raises(AbdusInputError, match="positive"):
        read_image(path, spacing_mm=0.0)
    with pytest.raises(AbdusInputError, match="number"):
        read_image(path, spacing_mm="wide")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="manifest, user"):
        read_image(path, spacing_source="ultrasound_region")


def test_format_is_chosen_by_content_not_suffix(tmp_path: Path, grey: np.ndarray) -> None:
    png_named_jpg = save(grey, tmp_path / "really_png.jpg", format="PNG")
    dicom_named_png = factory.make_us_dicom(tmp_path / "really_dicom.png", pixels=grey)
    jpeg_no_suffix = save(grey, tmp_path / "jpeg_without_suffix", format="JPEG")
    assert sniff_format(png_named_jpg) == "png"
    assert sniff_format(dicom_named_png) == "dicom"
    assert sniff_format(jpeg_no_suffix) == "jpeg"
    np.testing.assert_array_equal(read_any(png_named_jpg)[0].pixels, grey.astype(np.float32))
    np.testing.assert_array_equal(read_any(dicom_named_png)[0].pixels, grey.astype(np.float32))


def test_bad_image_files(tmp_path: Path, grey: np.ndarray) -> None:
    data = save(grey, tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image, just words " * 20)
    (tmp_path / "folder.png").mkdir()
    bmp = tmp_path / "picture.bmp"
    Image.fromarray(grey).save(bmp)
    cases = {
        "cut.png": "truncated",
        "empty.png": "empty",
        "notes.png": "not a DICOM, PNG or JPEG",
        "folder.png": "folder",
        "missing.png": "not found",
        "picture.bmp": "not a DICOM, PNG or JPEG",
    }
    for name, problem in cases.items():
        with pytest.raises(AbdusInputError, match=problem) as caught:
            read_any(tmp_path / name)
        message = str(caught.value)
        assert message.startswith(str(tmp_path / name)) and "\n" not in message
