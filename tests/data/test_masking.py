"""Classification mask on synthetic scanner screens: text and icons hidden, tissue kept."""

from __future__ import annotations

import numpy as np
import pytest

from abdus.data.masking import (
    MaskConfig,
    boxes_mask,
    classification_mask,
    overlay_mask,
    sector_mask,
)
from abdus.io.types import Region, UltrasoundImage

H, W = 480, 640


def _text_block(canvas: np.ndarray, x0: int, y0: int, chars: int) -> None:
    """Draw 'characters' (8x12 px glyphs of 2 px strokes) in white, like burned-in text."""
    for i in range(chars):
        x = x0 + 11 * i
        canvas[y0 : y0 + 12, x : x + 2] = 255  # left stroke
        canvas[y0 : y0 + 2, x : x + 8] = 255  # top bar
        canvas[y0 + 5 : y0 + 7, x : x + 6 + i % 3] = 255  # middle bar, varies per glyph


def synthetic_screen(
    seed: int = 0, colour: bool = True, speckle_scale: float = 55.0
) -> dict[str, np.ndarray]:
    """A fan-shaped speckle sector with a dark cyst, white text, an icon and a coloured bar.

    Returns pixels (H, W) float32 [0, 255], saturation (H, W) float32 or None, and the truth
    masks ``sector`` and ``overlay`` (bool, source px).
    """
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    radius = np.hypot(xs - W / 2, ys - 30.0)
    angle = np.degrees(np.arctan2(xs - W / 2, ys - 30.0))
    sector = (radius > 50) & (radius < 430) & (np.abs(angle) < 38)
    speckle = rng.rayleigh(speckle_scale, size=(H, W)).astype(np.float32)  # some pixels saturate
    cyst = np.hypot(xs - 300, ys - 250) < 35
    pixels = np.where(sector, np.clip(speckle * np.where(cyst, 0.05, 1.0), 0, 255), 0.0)
    text = np.zeros((H, W), np.float32)
    _text_block(text, 12, 10, 12)  # patient / view label, top-left
    _text_block(text, 470, 440, 10)  # bottom-right annotation
    text[400:440, 20:60] = 0
    text[400:402, 20:60] = text[438:440, 20:60] = 255  # body-marker icon outline
    text[400:440, 20:22] = text[400:440, 58:60] = 255
    text[418:422, 30:50] = 255  # probe mark
    pixels = np.maximum(pixels, text).astype(np.float32)
    overlay = text > 0
    saturation = None
    if colour:
        saturation = np.zeros((H, W), np.float32)
        saturation[150:300, 600:615] = 200.0  # colour scale bar
        pixels[150:300, 600:615] = 120.0
        overlay[150:300, 600:615] = True
    return {"pixels": pixels, "saturation": saturation, "sector": sector, "overlay": overlay}


def _image(screen: dict[str, np.ndarray], region: Region | None = None) -> UltrasoundImage:
    return UltrasoundImage(
        pixels=screen["pixels"],
        spacing_mm=(0.3, 0.3),
        spacing_source="manifest",
        source="screen.png",
        region=region,
        saturation=screen["saturation"],
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_auto_mask_hides_text_icons_colour_and_keeps_sector(seed: int) -> None:
    screen = synthetic_screen(seed)
    kept = classification_mask(_image(screen))
    assert kept.shape == (H, W) and kept.dtype == bool
    assert kept[screen["sector"]].mean() > 0.95
    assert (~kept[screen["overlay"]]).mean() > 0.95
    assert not kept[screen["pixels"] > 0][screen["overlay"][screen["pixels"] > 0]].any()


def test_bright_speckle_inside_the_sector_is_not_treated_as_text() -> None:
    screen = synthetic_screen(2, colour=False, speckle_scale=110.0)  # ~7% saturate
    overlays = overlay_mask(screen["pixels"], None)
    saturated_tissue = screen["sector"] & (screen["pixels"] >= 250)
    assert saturated_tissue.sum() > 5000  # the speckle really saturates somewhere
    assert overlays[screen["sector"]].mean() < 0.01
    assert overlays[screen["overlay"]].all()


def test_coloured_bar_needs_the_saturation_map() -> None:
    screen = synthetic_screen(3)
    gray = dict(screen, saturation=None)
    assert overlay_mask(screen["pixels"], screen["saturation"])[150:300, 600:615].all()
    assert not overlay_mask(gray["pixels"], None)[150:300, 600:615].any()


def test_large_white_area_is_not_an_overlay() -> None:
    pixels = np.zeros((100, 100), np.float32)
    pixels[10:90, 10:90] = 255.0  # 64% of the frame: not text
    assert not overlay_mask(pixels, None).any()


def test_manifest_boxes_replace_detection_and_region_still_applies() -> None:
    screen = synthetic_screen(4)
    region = Region(box=(100, 20, 560, 470), spacing_mm=(0.3, 0.3))
    kept = classification_mask(_image(screen, region), overlay_boxes=[(0, 0, 200, 40)])
    assert not kept[:40, :200].any()
    assert not kept[:, :100].any() and not kept[:, 560:].any() and not kept[:20].any()
    assert kept[40:470, 200:560].all()  # no automatic detection: text at (470, 440) kept
    assert kept[445, 480]


def test_region_outside_is_masked_in_auto_mode() -> None:
    screen = synthetic_screen(5)
    region = Region(box=(150, 0, 490, 480), spacing_mm=(0.3, 0.3))
    kept = classification_mask(_image(screen, region))
    assert not kept[:, :150].any() and not kept[:, 490:].any()
    inside_sector = screen["sector"].copy()
    inside_sector[:, :150] = inside_sector[:, 490:] = False
    assert kept[inside_sector].mean() > 0.95


def test_sector_of_blank_image_keeps_everything() -> None:
    assert sector_mask(np.zeros((32, 40), np.float32)).all()


def test_sector_touching_the_frame_edge_is_kept_to_the_edge() -> None:
    rng = np.random.default_rng(6)
    pixels = np.zeros((120, 160), np.float32)
    pixels[:, 40:] = rng.rayleigh(50.0, size=(120, 120))  # linear probe, to the frame edge
    sector = sector_mask(pixels, config=MaskConfig(closing_radius_px=6))
    assert sector[:, 42:].mean() > 0.99 and not sector[:, :35].any()


def test_boxes_are_clipped_to_the_frame() -> None:
    inside = boxes_mask((10, 12), [(-5, -5, 3, 2), (10, 8, 40, 40)])
    assert inside.sum() == 3 * 2 + 2 * 2
    assert inside[0, 0] and inside[9, 11] and not inside[5, 5]
