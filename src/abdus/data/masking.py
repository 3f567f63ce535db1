"""The classification mask: hide view-revealing icons and burned-in text (paper section 2.1).

Paper 2.1: "For each image used for training the view classification, a mask was applied to block
view-informative icons and texts" -- on scanner screens the view is typed or drawn as an icon
next to the image, so a classifier that sees them learns to read labels, not anatomy. Only the
classification input is masked; the landmark input keeps every pixel.

The mask is in *source pixels*, (H, W) bool, True = kept. ``abdus.data.preprocess`` maps it to
model pixels. Rules (``classification_mask``):

* Manifest boxes given (``ImageRecord.overlay_boxes``, source px): everything inside them is
  masked. An empty box list counts as "not given" (the manifest default), so detection runs.
* Otherwise detection, all vectorised with scipy.ndimage:
  1. pixels outside the DICOM tissue region box (``image.region``) are masked;
  2. overlays: connected components of near-white (>= ``saturated_level``) or coloured
     (chroma >= ``chroma_level``, from ``image.saturation``) pixels that are small
     (<= ``max_overlay_fraction`` of the frame). White ones count only on a dark surround (text
     drawn on the black screen border), so bright speckle inside the tissue is not punched out;
     coloured ones always count (tissue is grayscale). Overlays are dilated by
     ``overlay_dilation_px``;
  3. the imaging sector: the largest connected textured area (local mean or local standard
     deviation above a floor, overlays removed, morphologically closed, holes filled); pixels
     outside it are masked. Dark parts of the sector that fall outside it change nothing: a
     masked black pixel stays black.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from abdus.io.types import Region, UltrasoundImage

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) source px, x1/y1 exclusive


@dataclass(frozen=True)
class MaskConfig:
    """Thresholds of the automatic overlay / sector detection (intensities on the 0-255 scale)."""

    saturated_level: float = 250.0  # near-white text and icons
    chroma_level: float = 40.0  # max(R, G, B) - min(R, G, B) of coloured overlays
    max_overlay_fraction: float = 0.02  # larger bright/coloured areas are not text or icons
    dark_level: float = 25.0  # screen background (black) is below this
    dark_ring_fraction: float = 0.8  # white text: this much of its ring is dark background
    overlay_dilation_px: int = 3  # margin around text/icons (anti-aliased edges, shadows)
    texture_window_px: int = 7  # window of the local mean / standard deviation
    texture_mean_level: float = 10.0  # local mean above this: tissue
    texture_std_level: float = 4.0  # or local standard deviation above this: tissue
    closing_radius_px: int = 5  # bridges dark speckle gaps inside the sector


def boxes_mask(shape: tuple[int, int], boxes: Sequence[Box]) -> np.ndarray:
    """(H, W) bool, True inside any ``(x0, y0, x1, y1)`` box (source px, clipped to the frame)."""
    H, W = shape
    inside = np.zeros((H, W), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        inside[
            max(int(y0), 0) : max(min(int(y1), H), 0), max(int(x0), 0) : max(min(int(x1), W), 0)
        ] = True
    return inside


def region_mask(shape: tuple[int, int], region: Region | None) -> np.ndarray:
    """(H, W) bool, True inside the region's box (everywhere when there is no region)."""
    if region is None:
        return np.ones(shape, dtype=bool)
    return boxes_mask(shape, [region.box])


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2r+1)^2 square (separable max filter: fast)."""
    return ndimage.maximum_filter(mask.view(np.uint8), size=2 * radius + 1).view(bool)


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion by a (2r+1)^2 square (separable min filter: fast)."""
    return ndimage.minimum_filter(mask.view(np.uint8), size=2 * radius + 1).view(bool)


def overlay_mask(
    pixels: np.ndarray, saturation: np.ndarray | None, config: MaskConfig = MaskConfig()
) -> np.ndarray:
    """(H, W) bool, True on detected text and icons (dilated). ``pixels`` (H, W) in [0, 255]."""
    white = pixels >= config.saturated_level
    coloured = saturation >= config.chroma_level if saturation is not None else np.zeros_like(white)
    candidates = white | coloured
    labels, count = ndimage.label(candidates, structure=np.ones((3, 3)))
    if count == 0:
        return candidates
    index = np.arange(1, count + 1)
    area = ndimage.sum_labels(np.ones_like(pixels, dtype=np.float32), labels, index)
    small = area <= config.max_overlay_fraction * pixels.size
    # Surround: a ring 2-3 px away from each component (its anti-aliased edge excluded).
    near = ndimage.grey_dilation(labels, size=(3, 3))
    ring = np.where(near == 0, ndimage.grey_dilation(labels, size=(7, 7)), 0)
    ring_count = ndimage.sum_labels(np.ones_like(pixels, dtype=np.float32), ring, index)
    ring_dark = ndimage.sum_labels(pixels < config.dark_level, ring, index)
    # Text on the screen border: nearly all of its ring is dark. Speckle inside (or at the edge
    # of) the sector has tissue around it; a ring too small to judge does not count as dark.
    on_dark = (ring_count >= 8) & (ring_dark >= config.dark_ring_fraction * ring_count)
    has_colour = ndimage.maximum(coloured, labels, index).astype(bool)
    is_overlay = small & (has_colour | on_dark)
    keep_label = np.concatenate(([False], is_overlay))
    overlays = keep_label[labels]
    if config.overlay_dilation_px > 0 and overlays.any():
        overlays = _dilate(overlays, config.overlay_dilation_px)
    return overlays


def sector_mask(
    pixels: np.ndarray, exclude: np.ndarray | None = None, config: MaskConfig = MaskConfig()
) -> np.ndarray:
    """(H, W) bool, True inside the imaging sector: the largest connected textured area.

    ``exclude`` (H, W) bool marks pixels that cannot be tissue (overlays, outside the region).
    An image with no textured pixel at all gives an all-True mask (there is nothing to hide).
    """
    image = pixels.astype(np.float32, copy=False)
    size = config.texture_window_px
    mean = ndimage.uniform_filter(image, size)
    variance = ndimage.uniform_filter(image * image, size) - mean * mean
    textured = (mean > config.texture_mean_level) | (
        variance > config.texture_std_level * config.texture_std_level
    )
    if exclude is not None:
        textured &= ~exclude
    if config.closing_radius_px > 0:
        # Pad so the closing does not eat into a sector that touches the frame edge.
        r = config.closing_radius_px
        padded = np.pad(textured, r, mode="edge")
        textured = _erode(_dilate(padded, r), r)[r:-r, r:-r]  # closing
    labels, count = ndimage.label(textured)
    if count == 0:
        return np.ones_like(textured)
    area = np.bincount(labels.ravel(), minlength=count + 1)
    area[0] = 0
    return ndimage.binary_fill_holes(labels == int(area.argmax()))


def classification_mask(
    image: UltrasoundImage,
    overlay_boxes: Sequence[Box] | None = None,
    *,
    config: MaskConfig = MaskConfig(),
) -> np.ndarray:
    """(H, W) bool in source pixels, True = kept in the classification input (see module doc).

    ``overlay_boxes``: manifest boxes ``(x0, y0, x1, y1)`` in source px; when non-empty they
    replace the automatic detection (the region box still applies).
    """
    shape = image.shape
    inside = region_mask(shape, image.region)
    if overlay_boxes:
        return inside & ~boxes_mask(shape, overlay_boxes)
    overlays = overlay_mask(image.pixels, image.saturation, config)
    sector = sector_mask(image.pixels, overlays | ~inside, config)
    return inside & sector & ~overlays
