"""PNG / JPEG reading, and the grey-level conversions every reader shares.

A PNG or JPEG carries no physical spacing, so spacing comes only from the caller (the dataset
manifest or ``--spacing-mm``); without it measurements are null, never guessed.

Pixel values
------------
Every reader returns grey levels as float32 in [0, 255]. Colour becomes luminance with the
ITU-R BT.601 weights (0.299, 0.587, 0.114): that is exactly the Y of DICOM's YBR_FULL
(PS3.3 C.7.6.3.1.2), so an RGB and a YBR copy of one image read the same. Colour sources also
return ``saturation`` = max(R, G, B) - min(R, G, B), which the classification mask uses to
find coloured overlays. Transparent pixels are composited over black (the ultrasound
background). EXIF orientation is not applied: landmarks are in pixels as stored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from abdus.errors import AbdusInputError
from abdus.io.types import UltrasoundImage

# ITU-R BT.601 luma weights, the Y of YBR_FULL (PS3.3 C.7.6.3.1.2).
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Where a caller-given spacing can come from (see abdus.io.types.SPACING_SOURCES).
CALLER_SPACING_SOURCES = ("manifest", "user")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of ``rgb`` (..., 3) in [0, 255] -> (...) float32 in [0, 255]."""
    return np.clip(rgb.astype(np.float32, copy=False) @ LUMA_WEIGHTS, 0.0, 255.0)


def saturation(rgb: np.ndarray) -> np.ndarray:
    """max - min over the colour channels of ``rgb`` (..., 3) -> (...) float32 in [0, 255]."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # Channel-wise maximum/minimum: ~10x faster than a reduction over a length-3 last axis.
    high = np.maximum(np.maximum(red, green), blue)
    low = np.minimum(np.minimum(red, green), blue)
    return np.subtract(high, low, dtype=np.float32)


def check_spacing_mm(spacing_mm: float | None) -> float | None:
    """Validate a caller-given isotropic spacing in mm/px (None passes through)."""
    if spacing_mm is None:
        return None
    try:
        value = float(spacing_mm)
    except (TypeError, ValueError):
        message = f"spacing_mm must be a number of mm per pixel, got {spacing_mm!r}"
        raise AbdusInputError(message) from None
    if not math.isfinite(value) or value <= 0.0:
        raise AbdusInputError(f"spacing_mm must be a positive number of mm per pixel, got {value}")
    return value


def check_spacing_source(spacing_source: str) -> str:
    """Validate where a caller-given spacing came from: 'manifest' or 'user'."""
    if spacing_source not in CALLER_SPACING_SOURCES:
        raise ValueError(
            f"spacing_source must be one of {', '.join(CALLER_SPACING_SOURCES)}, "
            f"got {spacing_source!r}"
        )
    return spacing_source


def caller_spacing(
    spacing_mm: float | None, spacing_source: str, why_no_file_spacing: str
) -> tuple[tuple[float, float] | None, str, list[str]]:
    """Spacing from the caller, else none with a warning saying why measurements are null.

    Returns ``((row_mm, col_mm) | None, source, warnings)``.
    """
    if spacing_mm is not None:
        return (spacing_mm, spacing_mm), spacing_source, []
    warning = (
        f"no physical spacing: {why_no_file_spacing}, and no spacing_mm was given "
        "(manifest spacing_mm or --spacing-mm); measurements in mm will be null"
    )
    return None, "none", [warning]


def _gray_and_saturation(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None, str]:
    """One PIL frame -> ((H, W) float32 grey in [0, 255], saturation or None, photometric)."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        # 16-bit PNG: the full 0..65535 range maps to 0..255.
        values = np.asarray(image).astype(np.float32)
        return np.clip(values * (255.0 / 65535.0), 0.0, 255.0), None, "MONOCHROME2"
    if mode in ("1", "L"):
        return np.asarray(image.convert("L"), dtype=np.float32), None, "MONOCHROME2"
    if mode == "LA":
        gray_alpha = np.asarray(image, dtype=np.float32)
        return gray_alpha[..., 0] * (gray_alpha[..., 1] / 255.0), None, "MONOCHROME2"
    photometric = "PALETTE COLOR" if mode in ("P", "PA") else "RGB"
    if mode == "RGB":
        rgb = np.asarray(image)  # uint8; luminance and saturation convert
    else:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        rgb = rgba[..., :3] * (rgba[..., 3:] / 255.0)  # over black
    return luminance(rgb), saturation(rgb), photometric


def open_image(path: Path) -> Image.Image:
    """Open a PNG or JPEG lazily (pixels not decoded); AbdusInputError if it is not one."""
    try:
        return Image.open(path, formats=["PNG", "JPEG"])
    except FileNotFoundError:
        raise AbdusInputError("file not found", path) from None
    except UnidentifiedImageError:
        raise AbdusInputError("not a PNG or JPEG image (or a corrupt one)", path) from None
    except Image.DecompressionBombError as err:
        raise AbdusInputError(f"image too large to read safely: {err}", path) from None
    except OSError as err:
        raise AbdusInputError(f"cannot read image: {err}", path) from None


def _frame_indices(frames: Sequence[int] | None, count: int, path: Path) -> list[int]:
    if frames is None:
        return list(range(count))
    indices = [int(index) for index in frames]
    bad = [index for index in indices if not 0 <= index < count]
    if bad:
        raise AbdusInputError(f"frame {bad[0]} does not exist: the file has {count} frame(s)", path)
    return indices


def read_image(
    path: str | Path,
    *,
    spacing_mm: float | None = None,
    spacing_source: str = "user",
    frames: Sequence[int] | None = None,
) -> list[UltrasoundImage]:
    """Read a PNG or JPEG (8/16-bit grey, RGB, RGBA, palette; APNG frames) as grey images.

    Returns one ``UltrasoundImage`` per frame: ``pixels`` (H, W) float32 in [0, 255] in source
    pixels; ``spacing_mm`` (row_mm, col_mm) = ``(spacing_mm, spacing_mm)`` from the caller,
    labelled ``spacing_source`` ('manifest' or 'user'), or None with a warning.
    """
    path = Path(path)
    spacing_mm = check_spacing_mm(spacing_mm)
    check_spacing_source(spacing_source)
    spacing, source, warnings = caller_spacing(
        spacing_mm, spacing_source, "PNG and JPEG files carry no pixel size"
    )
    images = []
    with open_image(path) as image:
        for index in _frame_indices(frames, getattr(image, "n_frames", 1), path):
            try:
                image.seek(index)
                image.load()
                gray, sat, photometric = _gray_and_saturation(image)
            except (OSError, ValueError, SyntaxError) as err:
                raise AbdusInputError(f"truncated or corrupt image: {err}", path) from None
            images.append(
                UltrasoundImage(
                    pixels=np.ascontiguousarray(gray, dtype=np.float32),
                    spacing_mm=spacing,
                    spacing_source=source,
                    source=str(path),
                    frame=index,
                    photometric=photometric,
                    saturation=sat,
                    warnings=list(warnings),
                )
            )
    return images
