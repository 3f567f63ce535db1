"""Haar-like features against brute-force sums on small random images."""

from __future__ import annotations

import numpy as np
import pytest

from abdus.baselines.haar import (
    FEATURE_KINDS,
    CandidateFeatures,
    HaarFeatureBank,
    box_sums,
    build_feature_bank,
    feature_rects,
    gain_normalised,
    haar_features,
    integral_image,
    quantile_edges,
    quantise,
)

PAD = 64  # zero margin for brute force: wider than any rectangle reach used below


def _padded(image: np.ndarray) -> np.ndarray:
    return np.pad(image.astype(np.float64), PAD)


def _brute_box(image: np.ndarray, x: int, y: int, box: tuple[int, int, int, int]) -> float:
    """Sum of a rectangle (offsets from (x, y)) over the zero-padded image, by slicing."""
    x0, y0, x1, y1 = box
    return float(_padded(image)[PAD + y + y0 : PAD + y + y1, PAD + x + x0 : PAD + x + x1].sum())


def _brute_mean(image: np.ndarray, x: int, y: int, boxes: list[tuple[int, int, int, int]]) -> float:
    """Mean over the union of disjoint boxes, zero padding, by explicit pixel lists."""
    total = sum(_brute_box(image, x, y, b) for b in boxes)
    return total / sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes)


def _brute_feature(image: np.ndarray, x: int, y: int, kind: str, u: int) -> float:
    """Each kind written out independently of ``feature_rects`` (the definition in haar.py)."""
    h = max(1, u // 2)
    m = lambda *boxes: _brute_mean(image, x, y, list(boxes))  # noqa: E731
    if kind == "mean":
        return m((-u, -u, u, u))
    if kind == "edge_x":
        return m((0, -u, u, u)) - m((-u, -u, 0, u))
    if kind == "edge_y":
        return m((-u, 0, u, u)) - m((-u, -u, u, 0))
    if kind == "line_x":
        return m((-h, -u, h, u)) - m((-h - u, -u, -h, u), (h, -u, h + u, u))
    if kind == "line_y":
        return m((-u, -h, u, h)) - m((-u, -h - u, u, -h), (-u, h, u, h + u))
    if kind == "checker":
        return m((-u, -u, 0, 0), (0, 0, u, u)) - m((0, -u, u, 0), (-u, 0, 0, u))
    # centre_surround: the ring pixels listed explicitly through a mask.
    padded = _padded(image)
    ys, xs = np.mgrid[-2 * u : 2 * u, -2 * u : 2 * u]
    inner = (np.abs(xs + 0.5) < u) & (np.abs(ys + 0.5) < u)
    window = padded[PAD + y - 2 * u : PAD + y + 2 * u, PAD + x - 2 * u : PAD + x + 2 * u]
    return float(window[inner].mean() - window[~inner].mean())


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(3).uniform(0, 1, (23, 31))


def _positions(image: np.ndarray) -> np.ndarray:
    """Interior points plus every corner and points on and beyond each border, (x, y)."""
    H, W = image.shape
    return np.array(
        [(0, 0), (W - 1, H - 1), (W - 1, 0), (0, H - 1), (15, 11), (3, 12), (W - 2, 5),
         (10, 1), (20, H - 2), (-2, 4), (W + 1, 9), (7, -3)]
    )  # fmt: skip


def test_integral_image_is_the_summed_area_table(image: np.ndarray) -> None:
    table = integral_image(image)
    assert table.shape == (24, 32)
    assert table[0].sum() == 0 and table[:, 0].sum() == 0
    assert table[9, 17] == pytest.approx(image[:9, :17].sum())
    assert table[-1, -1] == pytest.approx(image.sum())


def test_box_sums_match_slicing_with_zero_padding(image: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    lo = rng.integers(-12, 3, (40, 2))
    rects = np.concatenate([lo, lo + rng.integers(1, 14, (40, 2))], axis=1)  # (x0, y0, x1, y1)
    positions = _positions(image)
    got = box_sums(integral_image(image), positions, rects)
    want = [[_brute_box(image, x, y, tuple(r)) for r in rects] for x, y in positions]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("kind", FEATURE_KINDS)
@pytest.mark.parametrize("unit", [1, 2, 3, 5])
def test_every_feature_kind_matches_brute_force(image: np.ndarray, kind: str, unit: int) -> None:
    positions = _positions(image)
    bank = HaarFeatureBank.from_features([(kind, unit, (0, 0))])
    got = haar_features(integral_image(image), positions, bank)[:, 0]
    want = [_brute_feature(image, int(x), int(y), kind, unit) for x, y in positions]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_offset_features_look_at_the_shifted_position(image: np.ndarray) -> None:
    table = integral_image(image)
    shifted = HaarFeatureBank.from_features([("edge_y", 3, (4, -2)), ("checker", 2, (-5, 3))])
    centred = HaarFeatureBank.from_features([("edge_y", 3, (0, 0)), ("checker", 2, (0, 0))])
    positions = _positions(image)
    got = haar_features(table, positions, shifted)
    np.testing.assert_allclose(
        got[:, 0], haar_features(table, positions + np.array([4, -2]), centred)[:, 0]
    )
    np.testing.assert_allclose(
        got[:, 1], haar_features(table, positions + np.array([-5, 3]), centred)[:, 1]
    )


def test_difference_features_vanish_on_a_constant_image_and_see_an_edge() -> None:
    bank = build_feature_bank([2, 4], random_features=0)
    flat = integral_image(np.full((40, 40), 0.7))
    values = haar_features(flat, np.array([[20, 20]]), bank)[0]
    means = [i for i, n in enumerate(bank.names) if n.startswith("mean")]
    others = [i for i in range(bank.num_features) if i not in means]
    np.testing.assert_allclose(values[means], 0.7, rtol=1e-6)
    np.testing.assert_allclose(values[others], 0.0, atol=1e-6)
    step = np.zeros((40, 40))
    step[:, 20:] = 1.0  # dark left, bright right: edge_x = +1 at the step, edge_y = 0
    values = haar_features(integral_image(step), np.array([[20, 20]]), bank)[0]
    named = dict(zip(bank.names, values, strict=True))
    assert named["edge_x@4px(+0,+0)"] == pytest.approx(1.0)
    assert named["edge_y@4px(+0,+0)"] == pytest.approx(0.0)


def test_chunks_give_the_same_features_as_one_pass(image: np.ndarray, monkeypatch) -> None:
    bank = build_feature_bank([1, 3], random_features=20, window_px=6, seed=1)
    table = integral_image(image)
    ys, xs = np.mgrid[0:23, 0:31]
    positions = np.stack([xs.ravel(), ys.ravel()], axis=1)
    whole = haar_features(table, positions, bank)
    monkeypatch.setattr("abdus.baselines.haar._CHUNK", 50)
    np.testing.assert_array_equal(haar_features(table, positions, bank), whole)


def test_bank_is_reproducible_and_bounded() -> None:
    a = build_feature_bank([2, 4], random_features=30, window_px=5, seed=7)
    b = build_feature_bank([4, 2], random_features=30, window_px=5, seed=7)
    assert a.names == b.names
    np.testing.assert_array_equal(a.rects, b.rects)
    assert a.num_features == 2 * len(FEATURE_KINDS) + 30
    assert a.reach <= 5 + 2 * 4  # offset + centre_surround's outer half-size at the largest unit
    assert build_feature_bank([2], random_features=30, seed=8).names != a.names


def test_bad_arguments_name_the_valid_choices() -> None:
    with pytest.raises(ValueError, match="valid kinds"):
        feature_rects("diagonal", 2)
    with pytest.raises(ValueError, match=">= 1"):
        feature_rects("mean", 0)
    with pytest.raises(ValueError, match="positive"):
        build_feature_bank([])


def test_candidate_features_match_the_clipped_reference(image: np.ndarray, monkeypatch) -> None:
    bank = build_feature_bank([1, 2, 4], random_features=40, window_px=9, seed=2)
    ys, xs = np.mgrid[0:23, 0:31]
    positions = np.stack([xs.ravel(), ys.ravel()], axis=1)  # every pixel, borders included
    want = haar_features(integral_image(image), positions, bank)
    monkeypatch.setattr("abdus.baselines.haar._CHUNK", 100)
    got = CandidateFeatures(image, bank, use_position=True)(positions)
    np.testing.assert_allclose(got[:, :-2], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[0, -2:], [0.0, 0.0])
    np.testing.assert_allclose(got[-1, -2:], [1.0, 1.0])  # (W - 1, H - 1) -> (1, 1)
    plain = CandidateFeatures(image, bank, use_position=False)(positions[:5])
    assert plain.shape == (5, bank.num_features)
    with pytest.raises(ValueError, match="on the 23x31 canvas"):
        CandidateFeatures(image, bank, use_position=False)(np.array([[31, 0]]))


def test_quantise_gives_monotone_levels_within_range() -> None:
    rng = np.random.default_rng(0)
    X = np.stack([rng.normal(size=500), rng.exponential(size=500), np.zeros(500)], axis=1)
    edges = quantile_edges(X, 8)
    codes = quantise(X, edges)
    assert edges.shape == (3, 7) and codes.dtype == np.float32
    assert codes.min() >= 0 and codes.max() <= 7
    for j in range(2):  # order is kept, and the levels are about equally filled
        order = np.argsort(X[:, j])
        assert (np.diff(codes[order, j]) >= 0).all()
        assert np.bincount(codes[:, j].astype(int), minlength=8).min() >= 50
    assert len(np.unique(codes[:, 2])) == 1  # a constant feature is one level


def test_gain_normalised_divides_by_the_tissue_mean() -> None:
    pixels = np.zeros((4, 4))
    pixels[:2] = 0.5
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    np.testing.assert_allclose(gain_normalised(pixels, mask)[:2], 1.0)
    np.testing.assert_allclose(gain_normalised(pixels * 3, mask), gain_normalised(pixels, mask))
    np.testing.assert_allclose(gain_normalised(np.zeros((3, 3))), 0.0)  # no division by zero
