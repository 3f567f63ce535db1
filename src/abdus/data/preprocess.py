"""Preprocessing: resample to isotropic spacing, pad / crop to the model canvas (paper 2.1).

Paper 2.1: "the images were resampled into 0.5mm isotropic resolution, and zero-padded to
512 x 512". Both numbers are ``PreprocessConfig`` defaults; small presets use coarser ones.

Coordinate spaces (x = column, y = row, pixel centres at integer coordinates in both):
*source pixels* of the full frame, and *model pixels* of the (H, W) canvas. ``SourceToModel``
is the exact affine map between them, per axis ``model = scale * source + offset``. It includes
the crop to the tissue region box (multi-region DICOM), the resampling and the centring on the
canvas. With pixel *edges* at half-integers, a resampling by ``s`` maps edge coordinate ``u`` to
``s * u``, so a centre ``x`` maps to ``s * (x - x0 + 0.5) - 0.5 + pad``.

Without a pixel spacing the region is scaled (keeping its aspect ratio) to fit the canvas so the
image can still be classified; ``model_spacing_mm`` is then None: no millimetre is invented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from abdus.data.masking import Box, classification_mask
from abdus.errors import AbdusInputError
from abdus.io.types import UltrasoundImage


@dataclass(frozen=True)
class PreprocessConfig:
    """``spacing_mm``: model pixel size (isotropic, mm). ``size``: canvas (H, W) model px."""

    spacing_mm: float = 0.5
    size: tuple[int, int] = (512, 512)

    def __post_init__(self) -> None:
        if not self.spacing_mm > 0:
            raise ValueError(f"spacing_mm must be positive, got {self.spacing_mm}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be (H, W) positive, got {self.size}")


@dataclass(frozen=True)
class SourceToModel:
    """Affine map between source pixels and model pixels, per axis: ``m = scale * s + offset``.

    ``scale_xy``: model px per source px along (x, y). ``offset_xy``: model px. ``model_size``:
    canvas (H, W). ``resampled_size``: (h, w) of the resampled region before padding / cropping.
    ``model_spacing_mm``: mm per model pixel (isotropic), None when the source had no spacing.
    """

    scale_xy: tuple[float, float]
    offset_xy: tuple[float, float]
    model_size: tuple[int, int]
    resampled_size: tuple[int, int]
    model_spacing_mm: float | None

    def to_model(self, points_xy: np.ndarray) -> np.ndarray:
        """(..., 2) source px -> (..., 2) model px (float64; NaN stays NaN)."""
        p = np.asarray(points_xy, dtype=np.float64)
        return p * np.asarray(self.scale_xy) + np.asarray(self.offset_xy)

    def to_source(self, points_xy: np.ndarray) -> np.ndarray:
        """(..., 2) model px -> (..., 2) source px (float64; NaN stays NaN)."""
        p = np.asarray(points_xy, dtype=np.float64)
        return (p - np.asarray(self.offset_xy)) / np.asarray(self.scale_xy)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (stored in caches and predictions)."""
        return {
            "scale_xy": list(self.scale_xy),
            "offset_xy": list(self.offset_xy),
            "model_size": list(self.model_size),
            "resampled_size": list(self.resampled_size),
            "model_spacing_mm": self.model_spacing_mm,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceToModel:
        """Inverse of ``to_dict``."""
        spacing = data.get("model_spacing_mm")
        return cls(
            scale_xy=(float(data["scale_xy"][0]), float(data["scale_xy"][1])),
            offset_xy=(float(data["offset_xy"][0]), float(data["offset_xy"][1])),
            model_size=(int(data["model_size"][0]), int(data["model_size"][1])),
            resampled_size=(int(data["resampled_size"][0]), int(data["resampled_size"][1])),
            model_spacing_mm=None if spacing is None else float(spacing),
        )


@dataclass(frozen=True)
class PreprocessedImage:
    """One image on the model canvas (all (H, W) arrays in model pixels).

    ``pixels``: float32 in [0, 1], every pixel kept (landmark input). ``classification_pixels``:
    float32 in [0, 1], masked pixels zeroed (view classification input). ``mask``: bool, True
    where the classification input keeps the pixel (False in the padding). ``transform``: the
    source px <-> model px map.
    """

    pixels: np.ndarray
    classification_pixels: np.ndarray
    mask: np.ndarray
    transform: SourceToModel


def make_transform(
    region_box: tuple[int, int, int, int],
    spacing_mm: tuple[float, float] | None,
    config: PreprocessConfig,
) -> SourceToModel:
    """The transform for a region ``(x0, y0, x1, y1)`` (source px) with ``(row_mm, col_mm)``.

    Anisotropic spacing gets a separate scale per axis. Without spacing the region is scaled
    to fit the canvas with one scale for both axes.
    """
    x0, y0, x1, y1 = region_box
    h, w = y1 - y0, x1 - x0
    H, W = config.size
    if spacing_mm is not None:
        row_mm, col_mm = spacing_mm
        scale_x, scale_y = col_mm / config.spacing_mm, row_mm / config.spacing_mm
        model_spacing: float | None = config.spacing_mm
    else:
        scale_x = scale_y = min(H / h, W / w)
        model_spacing = None
    # floor(n * s) in float64, exactly as torch's interpolate sizes its output for a scale factor.
    rh, rw = math.floor(h * scale_y), math.floor(w * scale_x)
    pad_x, pad_y = (W - rw) // 2, (H - rh) // 2  # centre on the canvas (negative = crop)
    offset_x = scale_x * (0.5 - x0) - 0.5 + pad_x
    offset_y = scale_y * (0.5 - y0) - 0.5 + pad_y
    return SourceToModel((scale_x, scale_y), (offset_x, offset_y), (H, W), (rh, rw), model_spacing)


def _region_box(image: UltrasoundImage) -> tuple[int, int, int, int]:
    """The region box clipped to the frame; the whole frame when there is no region."""
    H, W = image.shape
    if image.region is None:
        return 0, 0, W, H
    x0, y0, x1, y1 = image.region.box
    box = max(int(x0), 0), max(int(y0), 0), min(int(x1), W), min(int(y1), H)
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        raise AbdusInputError(
            f"region box {image.region.box} is empty inside the {H}x{W} frame", image.source
        )
    return box


def resample_to_canvas(stack: np.ndarray, transform: SourceToModel) -> np.ndarray:
    """(C, h, w) float32 region in source px -> (C, H, W) float32 model px, zero padded.

    Bilinear with antialiasing when downsampling (torch, exact scale factors so the geometry
    is exactly ``transform``).
    """
    scale_x, scale_y = transform.scale_xy
    tensor = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[None]
    resampled = F.interpolate(
        tensor,
        scale_factor=(scale_y, scale_x),
        mode="bilinear",
        align_corners=False,
        antialias=scale_x < 1 or scale_y < 1,
        recompute_scale_factor=False,
    )[0]  # (C, rh, rw)
    H, W = transform.model_size
    rh, rw = transform.resampled_size
    pad_x, pad_y = (W - rw) // 2, (H - rh) // 2
    canvas = torch.zeros((stack.shape[0], H, W), dtype=torch.float32)
    # Paste the overlap of the resampled region and the canvas (pad or centre-crop per axis).
    sy, dy, ny = max(-pad_y, 0), max(pad_y, 0), min(rh, H)
    sx, dx, nx = max(-pad_x, 0), max(pad_x, 0), min(rw, W)
    canvas[:, dy : dy + ny, dx : dx + nx] = resampled[:, sy : sy + ny, sx : sx + nx]
    return canvas.numpy()


def preprocess_image(
    image: UltrasoundImage,
    config: PreprocessConfig = PreprocessConfig(),
    *,
    overlay_boxes: Sequence[Box] | None = None,
    mask: np.ndarray | None = None,
) -> PreprocessedImage:
    """Crop to the tissue region, resample to ``config.spacing_mm``, pad / crop to the canvas.

    Args:
        image: source frame, ``pixels`` (H_src, W_src) in [0, 255].
        config: target spacing and canvas.
        overlay_boxes: manifest text / icon boxes (source px) for the classification mask.
        mask: a precomputed (H_src, W_src) bool classification mask (source px), if any.

    Returns:
        ``PreprocessedImage`` with (H, W) model-pixel arrays and the transform.
    """
    x0, y0, x1, y1 = _region_box(image)
    if image.spacing_mm is not None and not min(image.spacing_mm) > 0:
        raise AbdusInputError(f"pixel spacing {image.spacing_mm} mm is not positive", image.source)
    transform = make_transform((x0, y0, x1, y1), image.spacing_mm, config)
    if min(transform.resampled_size) < 1:
        raise AbdusInputError(
            f"region {x1 - x0}x{y1 - y0} px is under one model pixel at {config.spacing_mm} mm",
            image.source,
        )
    if mask is None:
        mask = classification_mask(image, overlay_boxes)
    crop = np.s_[y0:y1, x0:x1]
    stack = np.stack((image.pixels[crop] / 255.0, mask[crop]), dtype=np.float32)
    pixels, kept = resample_to_canvas(stack, transform)
    pixels = np.clip(pixels, 0.0, 1.0)
    model_mask = kept >= 0.5
    return PreprocessedImage(
        pixels=pixels,
        classification_pixels=np.where(model_mask, pixels, 0.0).astype(np.float32),
        mask=model_mask,
        transform=transform,
    )
