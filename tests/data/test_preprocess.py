"""Preprocessing: exact source <-> model geometry, resampling, canvas, mask, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from abdus.data.preprocess import (
    PreprocessConfig,
    SourceToModel,
    make_transform,
    preprocess_image,
)
from abdus.errors import AbdusInputError
from abdus.io.types import Region, UltrasoundImage


def _blob_image(
    shape: tuple[int, int],
    centre_xy: tuple[float, float],
    spacing: tuple[float, float] | None,
    sigma_px: tuple[float, float] = (12.0, 12.0),
    region: Region | None = None,
) -> UltrasoundImage:
    """A smooth Gaussian blob (0-255) at a sub-pixel ``centre_xy`` in source px."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    g = np.exp(
        -((xs - centre_xy[0]) ** 2) / (2 * sigma_px[0] ** 2)
        - (ys - centre_xy[1]) ** 2 / (2 * sigma_px[1] ** 2)
    )
    return UltrasoundImage(
        pixels=(255 * g).astype(np.float32),
        spacing_mm=spacing,
        spacing_source="manifest" if spacing else "none",
        source="blob.png",
        region=region,
    )


def _centroid(pixels: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[0 : pixels.shape[0], 0 : pixels.shape[1]]
    return np.array([(pixels * xs).sum(), (pixels * ys).sum()]) / pixels.sum()


@pytest.mark.parametrize(
    ("shape", "spacing", "size"),
    [
        ((600, 800), (0.3, 0.3), (512, 512)),  # downsample, pad
        ((300, 400), (0.7, 0.7), (512, 512)),  # upsample, crop in x
        ((600, 800), (0.25, 0.4), (256, 320)),  # anisotropic source spacing
        ((240, 320), None, (128, 128)),  # no spacing: fit to canvas
    ],
)
def test_blob_lands_where_the_transform_says(shape, spacing, size) -> None:
    centre = (0.45 * shape[1] + 0.37, 0.52 * shape[0] + 0.81)
    image = _blob_image(shape, centre, spacing)
    config = PreprocessConfig(spacing_mm=0.5, size=size)
    out = preprocess_image(image, config, mask=np.ones(shape, bool))
    assert out.pixels.shape == size and out.pixels.dtype == np.float32
    expected = out.transform.to_model(np.array(centre))
    assert np.abs(_centroid(out.pixels) - expected).max() < 0.05


def test_transform_scales_offsets_and_spacing() -> None:
    config = PreprocessConfig(spacing_mm=0.5, size=(512, 512))
    t = make_transform((0, 0, 800, 600), (0.3, 0.4), config)
    assert t.scale_xy == pytest.approx((0.8, 0.6))
    assert t.resampled_size == (360, 640)
    assert t.model_spacing_mm == 0.5
    # Pixel edges map to edges: source column edge -0.5 -> resampled edge -0.5, then crop.
    left_edge = t.to_model(np.array([-0.5, -0.5]))
    assert left_edge == pytest.approx([-0.5 + (512 - 640) // 2, -0.5 + (512 - 360) // 2])
    fit = make_transform((0, 0, 400, 100), None, config)
    assert fit.model_spacing_mm is None
    assert fit.scale_xy == (1.28, 1.28) and fit.resampled_size == (128, 512)


def test_round_trip_source_model_source_is_exact() -> None:
    rng = np.random.default_rng(0)
    config = PreprocessConfig(spacing_mm=0.5, size=(512, 512))
    for box, spacing in [((37, 12, 777, 590), (0.31, 0.27)), ((0, 0, 640, 480), None)]:
        t = make_transform(box, spacing, config)
        points = rng.uniform(-50, 900, size=(100, 2))
        assert np.abs(t.to_source(t.to_model(points)) - points).max() < 0.01
        assert np.abs(t.to_model(t.to_source(points)) - points).max() < 0.01
    nan_points = np.array([[np.nan, np.nan], [10.0, 20.0]])
    assert np.isnan(t.to_model(nan_points)[0]).all()


def test_transform_json_round_trip() -> None:
    t = make_transform((5, 7, 805, 607), (0.3, 0.3), PreprocessConfig())
    again = SourceToModel.from_dict(json.loads(json.dumps(t.to_dict())))
    assert again == t
    none = make_transform((0, 0, 64, 64), None, PreprocessConfig(size=(128, 128)))
    assert SourceToModel.from_dict(json.loads(json.dumps(none.to_dict()))) == none


def test_region_crop_is_part_of_the_transform() -> None:
    # Two regions side by side; the blob sits in the right one at source (620.3, 250.6).
    shape = (480, 900)
    region = Region(box=(450, 40, 890, 470), spacing_mm=(0.4, 0.4), spatial_format=1, data_type=1)
    image = _blob_image(shape, (620.3, 250.6), (0.4, 0.4), region=region)
    image.pixels[:, :440] = 200.0  # the other region: must not leak into the canvas
    out = preprocess_image(image, PreprocessConfig(size=(512, 512)), mask=np.ones(shape, bool))
    expected = out.transform.to_model(np.array([620.3, 250.6]))
    assert np.abs(_centroid(out.pixels) - expected).max() < 0.05
    x0_model = out.transform.to_model(np.array([449.5, 39.5]))  # region's top-left edge
    assert out.pixels[:, : int(np.floor(x0_model[0]))].max() == 0.0
    assert out.pixels[: int(np.floor(x0_model[1])), :].max() == 0.0


def test_downsampling_is_antialiased() -> None:
    # A one-pixel checkerboard averages to mid grey; naive point sampling would alias.
    board = (np.indices((400, 400)).sum(axis=0) % 2 * 255).astype(np.float32)
    image = UltrasoundImage(board, (0.1, 0.1), "manifest", "board.png")
    out = preprocess_image(image, PreprocessConfig(spacing_mm=0.5, size=(80, 80)), mask=None)
    assert out.pixels.std() < 0.02 and out.pixels.mean() == pytest.approx(0.5, abs=0.02)


def test_classification_pixels_follow_the_mask() -> None:
    shape = (200, 300)
    image = _blob_image(shape, (150.0, 100.0), (0.5, 0.5), sigma_px=(200.0, 200.0))
    mask = np.ones(shape, bool)
    mask[:50, :100] = False  # a text box in the top-left corner (source px)
    out = preprocess_image(image, PreprocessConfig(spacing_mm=1.0, size=(128, 192)), mask=mask)
    t = out.transform
    corner = t.to_model(np.array([[10.0, 10.0], [250.0, 150.0]])).round().astype(int)
    assert not out.mask[corner[0, 1], corner[0, 0]] and out.mask[corner[1, 1], corner[1, 0]]
    assert out.classification_pixels[corner[0, 1], corner[0, 0]] == 0.0
    assert out.pixels[corner[0, 1], corner[0, 0]] > 0.5  # landmark input keeps every pixel
    np.testing.assert_array_equal(out.classification_pixels[out.mask], out.pixels[out.mask])
    assert not out.mask[0, 0]  # padding is not kept


def test_overlay_boxes_reach_the_mask() -> None:
    shape = (100, 100)
    image = _blob_image(shape, (50.0, 50.0), (0.5, 0.5), sigma_px=(80.0, 80.0))
    out = preprocess_image(image, PreprocessConfig(size=(100, 100)), overlay_boxes=[(0, 0, 30, 20)])
    assert not out.mask[:20, :30].any() and out.mask[30:, 40:].all()


def test_bad_inputs_raise_clean_errors() -> None:
    image = _blob_image((50, 60), (30.0, 20.0), (0.5, 0.5), region=Region((70, 0, 90, 40), None))
    with pytest.raises(AbdusInputError, match=r"blob\.png: region box"):
        preprocess_image(image)
    bad = _blob_image((50, 60), (30.0, 20.0), (0.0, 0.5))
    with pytest.raises(AbdusInputError, match="not positive"):
        preprocess_image(bad)
    with pytest.raises(ValueError, match="spacing_mm"):
        PreprocessConfig(spacing_mm=-1.0)
