"""Classification mask on synthetic scanner screens: text and icons hidden, tissue kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from abdus.data import masking
from abdus.data.masking import (
    Box,
    MaskConfig,
    boxes_mask,
    classification_mask,
    landmark_region,
    overlay_mask,
    region_mask,
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


def test_white_text_needs_a_surround_darker_than_the_dark_level() -> None:
    pixels = np.full((80, 80), 25.0, np.float32)  # exactly dark_level: not dark background
    pixels[15:20, 15:25] = 255.0
    assert not overlay_mask(pixels, None).any()
    pixels[pixels == 25.0] = 24.0
    assert overlay_mask(pixels, None)[12:23, 12:28].all()


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


def test_landmark_region_fills_overlay_holes_and_keeps_the_padding_out() -> None:
    kept = np.zeros((2, 20, 30), bool)
    kept[0, 3:17, 5:25] = True  # the ultrasound region on the canvas, padding around it
    kept[0, 8:10, 12:14] = False  # burned-in calipers inside it
    kept[0, 3:5, 5:9] = False  # text on the region's edge: not a hole, stays out
    region = landmark_region(kept)
    expected = np.zeros((20, 30), bool)
    expected[3:17, 5:25] = True
    expected[3:5, 5:9] = False
    assert (region[0] == expected).all()
    assert region[1].all()  # nothing kept: no restriction


def test_boxes_are_clipped_to_the_frame() -> None:
    inside = boxes_mask((10, 12), [(-5, -5, 3, 2), (10, 8, 40, 40)])
    assert inside.sum() == 3 * 2 + 2 * 2
    assert inside[0, 0] and inside[9, 11] and not inside[5, 5]


# -- agreement with the plain full-frame scipy implementation ----------------------------------
# The functions below are the implementation before the speed-up, verbatim (renamed, comments
# trimmed). The overlays have no float step: they must be identical. The texture test now uses
# float32 box sums instead of scipy's float64 running means, so a pixel sitting exactly on a
# threshold may go either way: at most 0.01% of the pixels may differ.

MAX_DIFFERING = 1e-4  # fraction of the frame's pixels

_DEFAULT = MaskConfig()


def _ref_dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    return ndimage.maximum_filter(mask.view(np.uint8), size=2 * radius + 1).view(bool)


def _ref_erode(mask: np.ndarray, radius: int) -> np.ndarray:
    return ndimage.minimum_filter(mask.view(np.uint8), size=2 * radius + 1).view(bool)


def _reference_overlay_mask(
    pixels: np.ndarray, saturation: np.ndarray | None, config: MaskConfig = _DEFAULT
) -> np.ndarray:
    white = pixels >= config.saturated_level
    coloured = saturation >= config.chroma_level if saturation is not None else np.zeros_like(white)
    candidates = white | coloured
    labels, count = ndimage.label(candidates, structure=np.ones((3, 3)))
    if count == 0:
        return candidates
    index = np.arange(1, count + 1)
    area = ndimage.sum_labels(np.ones_like(pixels, dtype=np.float32), labels, index)
    small = area <= config.max_overlay_fraction * pixels.size
    near = ndimage.grey_dilation(labels, size=(3, 3))
    ring = np.where(near == 0, ndimage.grey_dilation(labels, size=(7, 7)), 0)
    ring_count = ndimage.sum_labels(np.ones_like(pixels, dtype=np.float32), ring, index)
    ring_dark = ndimage.sum_labels(pixels < config.dark_level, ring, index)
    on_dark = (ring_count >= 8) & (ring_dark >= config.dark_ring_fraction * ring_count)
    has_colour = ndimage.maximum(coloured, labels, index).astype(bool)
    is_overlay = small & (has_colour | on_dark)
    keep_label = np.concatenate(([False], is_overlay))
    overlays = keep_label[labels]
    if config.overlay_dilation_px > 0 and overlays.any():
        overlays = _ref_dilate(overlays, config.overlay_dilation_px)
    return overlays


def _reference_sector_mask(
    pixels: np.ndarray, exclude: np.ndarray | None = None, config: MaskConfig = _DEFAULT
) -> np.ndarray:
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
        r = config.closing_radius_px
        padded = np.pad(textured, r, mode="edge")
        textured = _ref_erode(_ref_dilate(padded, r), r)[r:-r, r:-r]  # closing
    labels, count = ndimage.label(textured)
    if count == 0:
        return np.ones_like(textured)
    area = np.bincount(labels.ravel(), minlength=count + 1)
    area[0] = 0
    return ndimage.binary_fill_holes(labels == int(area.argmax()))


def _reference_classification_mask(
    image: UltrasoundImage,
    overlay_boxes: Sequence[Box] | None = None,
    *,
    config: MaskConfig = _DEFAULT,
) -> np.ndarray:
    shape = image.shape
    inside = region_mask(shape, image.region)
    if overlay_boxes:
        return inside & ~boxes_mask(shape, overlay_boxes)
    overlays = _reference_overlay_mask(image.pixels, image.saturation, config)
    sector = _reference_sector_mask(image.pixels, overlays | ~inside, config)
    return inside & sector & ~overlays


def scanner_images(folder: Path) -> list[UltrasoundImage]:
    """Phantom scanner screens: the RGB DICOM (with a tissue region) of every view, as
    ``abdus.inference.benchmark.generated_dicom(folder, view, seed=k)`` writes it (not imported:
    it pulls in torch, ~1 s), and two PNG screenshots (no region, JPEG artefacts)."""
    from abdus.io.reader import read_any
    from abdus.phantom import writers
    from abdus.phantom.render import sample_patient, scan_view
    from abdus.taxonomy import VIEW_NAMES

    images = []
    for k, view in enumerate(VIEW_NAMES):
        scan = scan_view(sample_patient(_rng(k), "BENCH"), view, _rng(k + 1))
        writers.write_dicom(folder / f"{view}.dcm", scan, writers.dicom_identity(k, "BENCH", 0))
        images.append(read_any(folder / f"{view}.dcm")[0])
    for k, view in enumerate(("kidney_left_long", "liver_right_trans")):
        scan = scan_view(sample_patient(_rng(50 + k), "PNG"), view, _rng(k))
        writers.write_png(folder / f"screen_{k}.png", scan)
        images.append(read_any(folder / f"screen_{k}.png")[0])
    return images


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def screens(tmp_path_factory: pytest.TempPathFactory) -> list[UltrasoundImage]:
    return scanner_images(tmp_path_factory.mktemp("screens"))


def _differing(mask: np.ndarray, expected: np.ndarray) -> int:
    """Pixels where two (H, W) bool masks differ, asserted within the tolerance."""
    assert mask.shape == expected.shape and mask.dtype == bool
    differing = int(np.count_nonzero(mask != expected))
    assert differing <= MAX_DIFFERING * mask.size
    return differing


def test_mask_matches_the_reference_on_scanner_screens(screens: list[UltrasoundImage]) -> None:
    """Overlays identical; sector and mask within the tolerance (the reference mask is built
    from the reference overlays and sector, as ``_reference_classification_mask`` does)."""
    cases = []
    for k, image in enumerate(screens):  # 13 screens, each also without region or colour
        cases += [image, replace(image, **{"region" if k % 2 else "saturation": None})]
    for image in cases:
        overlays = _reference_overlay_mask(image.pixels, image.saturation)
        assert np.array_equal(overlay_mask(image.pixels, image.saturation), overlays)
        inside = region_mask(image.shape, image.region)
        sector = _reference_sector_mask(image.pixels, overlays | ~inside)
        _differing(sector_mask(image.pixels, overlays | ~inside), sector)
        kept = classification_mask(image)
        assert 0.05 < kept.mean() < 0.95
        _differing(kept, inside & sector & ~overlays)


@pytest.mark.parametrize(
    "config",
    [
        MaskConfig(),
        MaskConfig(overlay_dilation_px=0, closing_radius_px=0),
        MaskConfig(overlay_dilation_px=5, closing_radius_px=8),
        MaskConfig(texture_window_px=6, texture_mean_level=30.0),
        MaskConfig(texture_window_px=3, texture_std_level=20.0),
    ],
)
def test_mask_matches_the_reference_for_other_settings(config: MaskConfig) -> None:
    for seed, region in [(0, None), (1, Region(box=(0, 0, 400, 300), spacing_mm=None))]:
        screen = synthetic_screen(seed, colour=seed == 0, speckle_scale=90.0)
        image = _image(screen, region)
        expected = _reference_classification_mask(image, config=config)
        _differing(classification_mask(image, config=config), expected)
    pixels = screen["pixels"]
    assert np.array_equal(
        overlay_mask(pixels, None, config), _reference_overlay_mask(pixels, None, config)
    )
    exclude = np.random.default_rng(7).random(pixels.shape) < 0.01
    exclude[:, :30] = True
    expected = _reference_sector_mask(pixels, exclude, config)
    _differing(sector_mask(pixels, exclude, config), expected)
    _differing(sector_mask(pixels, None, config), _reference_sector_mask(pixels, None, config))


def test_saturated_speckle_with_thousands_of_components_matches_the_reference() -> None:
    screen = synthetic_screen(8, colour=True, speckle_scale=110.0)
    expected = _reference_overlay_mask(screen["pixels"], screen["saturation"])
    assert ndimage.label(screen["pixels"] >= 250, np.ones((3, 3)))[1] > 300  # > uint8 labels
    assert np.array_equal(overlay_mask(screen["pixels"], screen["saturation"]), expected)


@pytest.mark.parametrize(
    "pixels",
    [
        np.full((40, 50), -1.0, np.float32),
        np.random.default_rng(9).uniform(0, 255, (6, 7)).astype(np.float32),  # smaller than s
        np.zeros((30, 30), np.float32),
    ],
)
def test_unusual_inputs_give_the_reference_result(pixels: np.ndarray) -> None:
    assert np.array_equal(sector_mask(pixels), _reference_sector_mask(pixels))
    image = _image({"pixels": pixels, "saturation": None})
    assert np.array_equal(classification_mask(image), _reference_classification_mask(image))


def _plateau_image(seed: int, shape: tuple[int, int] = (70, 90)) -> np.ndarray:
    """Integer pixels around the texture thresholds: a constant-10 plateau whose local means sit
    exactly on the mean level, and a 6-or-14 patch whose local variance is near std^2."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 21, shape).astype(np.float32)
    pixels[10:40, 5:45] = 10.0
    pixels[45:, 50:] = rng.integers(0, 2, (shape[0] - 45, shape[1] - 50)) * 8.0 + 6.0
    pixels[:, -6:] = 0.0
    pixels[:3, :] = 5.0
    return pixels


@pytest.mark.parametrize("window", [3, 6, 7])
@pytest.mark.parametrize("box", [(0, 0, 90, 70), (11, 7, 60, 50), (30, 0, 90, 33), (0, 40, 20, 70)])
def test_texture_on_a_box_is_the_full_frame_local_mean_and_variance(window: int, box: Box) -> None:
    """Window placement (even and odd sizes), pixels read outside the box, the mirrored frame
    edge, and the strict thresholds (a mean exactly on its level is not texture)."""
    config = MaskConfig(texture_window_px=window)
    x0, y0, x1, y1 = box
    for seed in range(3):
        pixels = _plateau_image(seed)
        mean = ndimage.uniform_filter(pixels.astype(np.float64), window)
        variance = ndimage.uniform_filter(pixels.astype(np.float64) ** 2, window) - mean**2
        mean, variance = np.round(mean, 9), np.round(variance, 9)  # exact for these integers
        assert np.count_nonzero(mean == 10.0) > 100  # the plateau sits exactly on the level
        expected = ((mean > 10.0) | (variance > 16.0))[y0:y1, x0:x1]
        # A float32 mean of integer sums is exact (so is its tie), a float32 variance is not.
        decided = variance[y0:y1, x0:x1] != 16.0
        textured = masking._textured(pixels, box, None, config)
        assert np.array_equal(textured[decided], expected[decided])
    keep = np.random.default_rng(0).random((y1 - y0, x1 - x0)) < 0.5
    kept = masking._textured(pixels, box, keep, config)
    assert not kept[~keep].any() and np.array_equal(kept[keep], textured[keep])


@pytest.mark.parametrize("diagonal", [False, True])
def test_run_labels_are_ndimage_labels(diagonal: bool) -> None:
    rng = np.random.default_rng(11)
    structure = np.ones((3, 3)) if diagonal else None
    for density in (0.2, 0.45, 0.6):
        mask = ndimage.uniform_filter(rng.random((45, 61)), 3) < density
        expected, count = ndimage.label(mask, structure)
        runs = masking._runs(mask)
        run_label, run_count = masking._run_labels(*runs, mask.shape[1], diagonal)
        labels = np.zeros(mask.shape, dtype=np.intp)
        labels[masking._run_pixels(*runs)] = np.repeat(run_label, runs[2] - runs[1])
        assert run_count == count and np.array_equal(labels, expected)


def test_largest_component_with_holes_filled_equals_scipy() -> None:
    rng = np.random.default_rng(12)
    for density in (0.45, 0.55, 0.65):
        mask = ndimage.uniform_filter(rng.random((50, 70)), 5) < density
        labels, _ = ndimage.label(mask)
        area = np.bincount(labels.ravel())
        area[0] = 0
        expected = ndimage.binary_fill_holes(labels == area.argmax())
        assert np.array_equal(masking._largest_filled(mask), expected)
    tie = np.zeros((20, 20), bool)
    tie[12:17, 2:7] = tie[2:7, 12:17] = True  # equal areas: the first in raster order wins
    tie[14, 4] = tie[4, 14] = False  # a hole in each
    expected = np.zeros((20, 20), bool)
    expected[2:7, 12:17] = True
    assert np.array_equal(masking._largest_filled(tie), expected)
    assert masking._largest_filled(np.zeros((5, 5), bool)) is None


def test_a_ring_pixel_goes_to_the_higher_label_even_from_outside_the_judged_box() -> None:
    """White text whose ring is partly taken by a later coloured icon 5 px below it: 34 of the
    44 remaining ring pixels are dark (< 80%), so it is not an overlay; counting the 20 taken
    pixels too would make it one (54 of 64)."""
    pixels = np.zeros((40, 40), np.float32)
    saturation = np.zeros((40, 40), np.float32)
    pixels[10:14, 10:14] = 255.0  # white component, label 1
    pixels[7, 7:17] = 100.0  # 10 bright ring pixels above it
    saturation[18:22, 10:14] = pixels[18:22, 10:14] = 120.0  # coloured icon, label 2
    expected = _reference_overlay_mask(pixels, saturation)
    assert not expected[11, 11] and expected[19, 11]
    assert np.array_equal(overlay_mask(pixels, saturation), expected)


def test_runs_are_renumbered_in_raster_order_whatever_the_graph_labels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mask = ndimage.uniform_filter(np.random.default_rng(13).random((30, 40)), 3) < 0.45
    expected, _ = ndimage.label(mask)
    connected = masking.csgraph.connected_components

    def reversed_labels(graph: object, **kwargs: object) -> tuple[int, np.ndarray]:
        count, component = connected(graph, **kwargs)
        return count, count - 1 - component

    monkeypatch.setattr(masking.csgraph, "connected_components", reversed_labels)
    runs = masking._runs(mask)
    run_label, _ = masking._run_labels(*runs, mask.shape[1], diagonal=False)
    labels = np.zeros(mask.shape, dtype=np.intp)
    labels[masking._run_pixels(*runs)] = np.repeat(run_label, runs[2] - runs[1])
    assert np.array_equal(labels, expected)
