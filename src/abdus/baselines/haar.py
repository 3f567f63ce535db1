"""Haar-like features from integral images, for many candidate positions at once.

The classical landmark detectors that the paper's PBT row stands for (Tu, "Probabilistic
Boosting-Tree", ICCV 2005; Viola & Jones, "Rapid object detection using a boosted cascade of
simple features", CVPR 2001) describe a candidate position by Haar-like features: differences of
mean intensities of a few axis-aligned rectangles placed around it. With a summed-area table
(integral image) every rectangle sum costs four look-ups, whatever its size.

Conventions: positions are ``(x, y)`` integer *model pixels* (x = column, y = row, pixel centres
at integers). A rectangle is ``(x0, y0, x1, y1)`` offsets from the candidate, half-open: it holds
the pixels ``x + x0 <= col < x + x1`` and ``y + y0 <= row < y + y1``. Pixels outside the image
count as 0 (the same zero padding as the preprocessed canvas); a rectangle's mean always divides
by its full nominal area, so a feature is a fixed linear function of the zero-padded image.

Feature kinds (``unit`` u px, see ``feature_rects``)::

    mean             mean of the 2u x 2u box centred on the candidate
    edge_x, edge_y   2-rect edges: right minus left / bottom minus top halves of that box
    line_x, line_y   3-rect lines: the centre strip minus the two side strips
    checker          4-rect: (top-left + bottom-right) minus (top-right + bottom-left)
    centre_surround  the 2u x 2u centre box minus the ring out to 4u x 4u
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FEATURE_KINDS = (
    "mean",
    "edge_x",
    "edge_y",
    "line_x",
    "line_y",
    "checker",
    "centre_surround",
)

# (x0, y0, x1, y1) offsets in px and a weight (applied to the rectangle's *sum*).
Rect = tuple[tuple[int, int, int, int], float]

# Positions per chunk when computing features: bounds the (N, R) float64 box-sum matrix.
_CHUNK = 2048


def _area(box: tuple[int, int, int, int]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def _mean_difference(
    plus: Sequence[tuple[int, int, int, int]], minus: Sequence[tuple[int, int, int, int]]
) -> list[Rect]:
    """Rectangles whose weighted sums give mean(plus boxes) - mean(minus boxes)."""
    area_plus = sum(_area(b) for b in plus)
    area_minus = sum(_area(b) for b in minus)
    return [(b, 1.0 / area_plus) for b in plus] + [(b, -1.0 / area_minus) for b in minus]


def feature_rects(kind: str, unit: int, offset: tuple[int, int] = (0, 0)) -> list[Rect]:
    """The rectangles of one Haar-like feature of ``kind`` at scale ``unit`` px.

    ``offset``: (dx, dy) px from the candidate to the feature's centre. Returns a list of
    ``((x0, y0, x1, y1), weight)``; the feature value is ``sum(weight * box_sum)``, a difference
    of mean intensities (or one mean for ``mean``).
    """
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown Haar feature kind {kind!r}; valid kinds: {FEATURE_KINDS}")
    u = int(unit)
    if u < 1:
        raise ValueError(f"Haar feature unit must be >= 1 px, got {unit}")
    h = max(1, u // 2)  # half-width of the centre strip of line features
    if kind == "mean":
        rects = [((-u, -u, u, u), 1.0 / (4 * u * u))]
    elif kind == "edge_x":
        rects = _mean_difference([(0, -u, u, u)], [(-u, -u, 0, u)])
    elif kind == "edge_y":
        rects = _mean_difference([(-u, 0, u, u)], [(-u, -u, u, 0)])
    elif kind == "line_x":
        rects = _mean_difference([(-h, -u, h, u)], [(-h - u, -u, -h, u), (h, -u, h + u, u)])
    elif kind == "line_y":
        rects = _mean_difference([(-u, -h, u, h)], [(-u, -h - u, u, -h), (-u, h, u, h + u)])
    elif kind == "checker":
        rects = _mean_difference([(-u, -u, 0, 0), (0, 0, u, u)], [(0, -u, u, 0), (-u, 0, 0, u)])
    else:  # centre_surround: inner mean minus ring mean, the ring as (outer sum - inner sum)
        inner, outer = (-u, -u, u, u), (-2 * u, -2 * u, 2 * u, 2 * u)
        ring = _area(outer) - _area(inner)
        rects = [(inner, 1.0 / _area(inner) + 1.0 / ring), (outer, -1.0 / ring)]
    dx, dy = offset
    return [((x0 + dx, y0 + dy, x1 + dx, y1 + dy), w) for (x0, y0, x1, y1), w in rects]


@dataclass(frozen=True)
class HaarFeatureBank:
    """A fixed list of F Haar-like features made of R rectangles in all.

    ``rects``: (R, 4) int64 ``(x0, y0, x1, y1)`` offsets, px. ``weights``: (R,) float64.
    ``starts``: (F,) int64, index of each feature's first rectangle (features are contiguous
    runs of rectangles). ``names``: F names such as ``"edge_x@4px(+0,+0)"``.
    """

    rects: np.ndarray
    weights: np.ndarray
    starts: np.ndarray
    names: tuple[str, ...]

    @property
    def num_features(self) -> int:
        """F, the number of features."""
        return len(self.names)

    @property
    def reach(self) -> int:
        """Largest |offset| of any rectangle edge, px: how far a feature looks."""
        return int(np.abs(self.rects).max()) if len(self.rects) else 0

    @classmethod
    def from_features(cls, features: Sequence[tuple[str, int, tuple[int, int]]]) -> HaarFeatureBank:
        """A bank from ``(kind, unit_px, (dx, dy))`` triples, in that order."""
        rects: list[tuple[int, int, int, int]] = []
        weights: list[float] = []
        starts: list[int] = []
        names: list[str] = []
        for kind, unit, (dx, dy) in features:
            starts.append(len(rects))
            for box, weight in feature_rects(kind, unit, (dx, dy)):
                rects.append(box)
                weights.append(weight)
            names.append(f"{kind}@{int(unit)}px({int(dx):+d},{int(dy):+d})")
        return cls(
            rects=np.asarray(rects, dtype=np.int64).reshape(-1, 4),
            weights=np.asarray(weights, dtype=np.float64),
            starts=np.asarray(starts, dtype=np.int64),
            names=tuple(names),
        )


def build_feature_bank(
    units_px: Sequence[int], *, random_features: int = 0, window_px: int = 0, seed: int = 0
) -> HaarFeatureBank:
    """Every kind centred on the candidate at every unit, plus ``random_features`` more.

    The random ones (Viola & Jones' exhaustive pool, subsampled) draw a kind, a unit from
    ``units_px`` and a centre offset uniform in ``[-window_px, window_px]^2`` px, so the detector
    also sees context around the candidate (an organ end is defined by what lies beyond it).
    """
    units = sorted({int(u) for u in units_px})
    if not units or units[0] < 1:
        raise ValueError(f"units_px must hold positive unit sizes, got {tuple(units_px)}")
    features = [(kind, u, (0, 0)) for u in units for kind in FEATURE_KINDS]
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, len(FEATURE_KINDS), random_features)
    picked_units = rng.choice(units, random_features)
    offsets = rng.integers(-window_px, window_px + 1, (random_features, 2))
    for k, u, (dx, dy) in zip(kinds, picked_units, offsets, strict=True):
        features.append((FEATURE_KINDS[k], int(u), (int(dx), int(dy))))
    return HaarFeatureBank.from_features(features)


def integral_image(pixels: np.ndarray) -> np.ndarray:
    """(H, W) image -> (H + 1, W + 1) float64 summed-area table with a zero first row/column.

    ``table[y, x]`` is the sum of ``pixels[:y, :x]``.
    """
    image = np.asarray(pixels, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"expected an (H, W) image, got shape {image.shape}")
    table = np.zeros((image.shape[0] + 1, image.shape[1] + 1), dtype=np.float64)
    np.cumsum(np.cumsum(image, axis=0), axis=1, out=table[1:, 1:])
    return table


def box_sums(table: np.ndarray, positions_xy: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """Sums of R rectangles around N positions: (N, R) float64.

    ``table``: (H + 1, W + 1) from ``integral_image``. ``positions_xy``: (N, 2) int (x, y) px.
    ``rects``: (R, 4) int ``(x0, y0, x1, y1)`` offsets. Rectangles are clipped to the image
    (pixels outside count as 0); four fancy-indexed look-ups, no loop over positions.
    """
    H, W = table.shape[0] - 1, table.shape[1] - 1
    p = np.asarray(positions_xy, dtype=np.int64)
    x0 = np.clip(p[:, :1] + rects[None, :, 0], 0, W)  # (N, R)
    y0 = np.clip(p[:, 1:] + rects[None, :, 1], 0, H)
    x1 = np.clip(p[:, :1] + rects[None, :, 2], 0, W)
    y1 = np.clip(p[:, 1:] + rects[None, :, 3], 0, H)
    return table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]


def haar_features(table: np.ndarray, positions_xy: np.ndarray, bank: HaarFeatureBank) -> np.ndarray:
    """Features of N positions: (N, F) float32 (see ``HaarFeatureBank``), in chunks of positions."""
    p = np.asarray(positions_xy, dtype=np.int64).reshape(-1, 2)
    out = np.empty((len(p), bank.num_features), dtype=np.float32)
    for start in range(0, len(p), _CHUNK):
        sums = box_sums(table, p[start : start + _CHUNK], bank.rects)  # (n, R)
        weighted = sums * bank.weights
        out[start : start + _CHUNK] = np.add.reduceat(weighted, bank.starts, axis=1)
    return out


def gain_normalised(pixels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(H, W) float64 pixels divided by the mean of the ``mask`` (tissue) pixels, so features do
    not depend on the overall gain of the scanner or file (all pixels when the mask is empty)."""
    image = np.asarray(pixels, dtype=np.float64)
    kept = image[mask] if mask is not None and mask.any() else image
    gain = float(kept.mean()) if kept.size else 0.0
    return image / (gain if gain > 1e-6 else 1.0)


def position_features(positions_xy: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(N, 2) px -> (N, 2) float32 ``(x / (W - 1), y / (H - 1))``: where on the canvas.

    Landmarks of a standard view sit in typical places (the kidney's poles in a kidney long
    view), a prior that boosted stumps on these two numbers can use.
    """
    H, W = size_hw
    scale = np.array([max(W - 1, 1), max(H - 1, 1)], dtype=np.float64)
    return (np.asarray(positions_xy, dtype=np.float64) / scale).astype(np.float32)


class CandidateFeatures:
    """Features of candidate positions on one image: Haar-like (+ position) features.

    ``pixels``: (H, W) model pixels (gain-normalised by the caller if wanted). Calling the
    object with positions (N, 2) int (x, y) px *on the canvas* returns (N, F) float32, F = bank
    features (+ 2 with ``use_position``). Same values as ``haar_features``, faster: the image
    is zero-padded by the bank's reach once, so each rectangle corner is one flat index
    (position index + a per-rectangle constant) with no clipping.
    """

    def __init__(self, pixels: np.ndarray, bank: HaarFeatureBank, *, use_position: bool) -> None:
        self.size = (int(pixels.shape[0]), int(pixels.shape[1]))
        self.margin = bank.reach + 1
        self.flat = integral_image(np.pad(np.asarray(pixels, np.float64), self.margin)).ravel()
        self.row = self.size[1] + 2 * self.margin + 1  # table row length
        x0, y0, x1, y1 = bank.rects.T
        self.corners = [y * self.row + x for y, x in ((y1, x1), (y0, x1), (y1, x0), (y0, x0))]
        self.bank = bank
        self.use_position = use_position

    def __call__(self, positions_xy: np.ndarray) -> np.ndarray:
        p = np.asarray(positions_xy, dtype=np.int64).reshape(-1, 2)
        H, W = self.size
        if ((p < 0) | (p >= [W, H])).any():
            raise ValueError(f"candidate positions must lie on the {H}x{W} canvas")
        out = np.empty((len(p), self.bank.num_features), dtype=np.float32)
        for start in range(0, len(p), _CHUNK):
            chunk = p[start : start + _CHUNK]
            base = ((chunk[:, 1] + self.margin) * self.row + chunk[:, 0] + self.margin)[:, None]
            a, b, c, d = (self.flat[base + corner] for corner in self.corners)  # (n, R) each
            weighted = (a - b - c + d) * self.bank.weights
            out[start : start + _CHUNK] = np.add.reduceat(weighted, self.bank.starts, axis=1)
        if not self.use_position:
            return out
        return np.concatenate([out, position_features(p, self.size)], axis=1)


def quantile_edges(X: np.ndarray, bins: int) -> np.ndarray:
    """(F, bins - 1) float32 inner quantiles of each column of X (N, F): level boundaries."""
    levels = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    return np.quantile(np.asarray(X, np.float64), levels, axis=0).T.astype(np.float32)


def quantise(X: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """X (N, F) -> (N, F) float32 level codes 0 .. bins - 1 (one searchsorted per feature).

    Boosted stumps only compare a feature with thresholds, so quantising to quantile levels
    keeps what they can express while bounding the thresholds to search (Viola & Jones 2001).
    """
    X = np.asarray(X)
    codes = np.empty(X.shape, dtype=np.float32)
    for j in range(X.shape[1]):  # over features, not pixels
        codes[:, j] = np.searchsorted(edges[j], X[:, j], side="left")
    return codes
