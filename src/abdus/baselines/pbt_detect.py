"""The PBT detector: training positions, coarse-to-fine search, shape priors, ``PBTModel``.

All positions here are ``(x, y)`` *model pixels* (the preprocessed canvas, ``abdus.data.
preprocess``); distances in the shape priors are millimetres. The search functions know nothing
about trees: they take functions that compute features and posteriors, so they are tested on
their own. ``PBTModel`` (built by ``abdus.baselines.pbt.train_pbt``) puts the pieces together.

Detection follows the usual scheme of PBT landmark detectors (e.g. Zheng et al., "Four-chamber
heart modeling and automatic segmentation for 3-D cardiac CT volumes using marginal space
learning and steerable features", IEEE TMI 2008: keep the best candidates of one stage for the
next): score a coarse grid, keep each landmark's ``top_k`` separated maxima, rescore a dense
window around each at 1 px stride, then choose one candidate per landmark jointly with a shape
prior (``select_landmarks``), because the posterior alone cannot tell the two ends of an organ
from two points on one end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from abdus.baselines.haar import CandidateFeatures, HaarFeatureBank, gain_normalised, quantise
from abdus.baselines.pbt_config import PBTConfig
from abdus.baselines.pbt_tree import ProbabilisticBoostingTree
from abdus.data.dataset import read_record_image
from abdus.data.preprocess import PreprocessConfig, PreprocessedImage, preprocess_image
from abdus.errors import AbdusInputError
from abdus.io.manifest import ImageRecord, Manifest
from abdus.io.types import UltrasoundImage
from abdus.taxonomy import MEASUREMENT_BY_CODE, TASKS, LandmarkTask, task_of_view

LOG_FLOOR = 1e-6  # posteriors are floored before the log so one zero cannot veto a whole pair


# --------------------------------------------------------------------------- training positions


def disc_offsets(radius_px: float) -> np.ndarray:
    """(M, 2) int (dx, dy) of every integer offset within ``radius_px`` of (0, 0)."""
    r = int(np.floor(radius_px))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dx**2 + dy**2 <= radius_px**2
    return np.stack([dx[keep], dy[keep]], axis=1)


def training_positions(
    landmarks_px: np.ndarray,
    size_hw: tuple[int, int],
    *,
    positive_radius_px: float,
    negative_radius_px: float,
    hard_radius_px: float,
    hard_per_landmark: int,
    random_count: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Positions to sample on one image and their distance to each landmark.

    ``landmarks_px``: (L, 2) model px (NaN rows = absent). Returns ``positions`` (M, 2) int
    inside the canvas and ``distances`` (M, L) px (NaN for absent landmarks): every position
    within ``positive_radius_px`` of a landmark, ``hard_per_landmark`` hard negatives uniform in
    the ring ``negative_radius_px .. hard_radius_px`` around it, and ``random_count`` positions
    uniform on the canvas. Labels follow from the distances (see ``pbt.collect_samples``); the
    positives of one landmark are hard negatives of the others.
    """
    H, W = size_hw
    points = np.asarray(landmarks_px, dtype=np.float64).reshape(-1, 2)
    present = points[np.isfinite(points).all(axis=1)]
    nearest = np.rint(present).astype(np.int64)  # (L', 2)
    positives = (nearest[:, None, :] + disc_offsets(positive_radius_px + 1.0)[None]).reshape(-1, 2)
    radius = np.sqrt(
        rng.uniform(negative_radius_px**2, hard_radius_px**2, (len(present), hard_per_landmark))
    )
    angle = rng.uniform(0.0, 2.0 * np.pi, radius.shape)
    ring = (
        present[:, None, :] + np.stack([np.cos(angle), np.sin(angle)], axis=-1) * radius[..., None]
    )
    uniform = np.stack([rng.integers(0, W, random_count), rng.integers(0, H, random_count)], 1)
    positions = np.concatenate([positives, np.rint(ring).reshape(-1, 2), uniform]).astype(np.int64)
    inside = (positions[:, 0] >= 0) & (positions[:, 0] < W)
    inside &= (positions[:, 1] >= 0) & (positions[:, 1] < H)
    positions = positions[inside]
    distances = np.linalg.norm(positions[:, None, :] - points[None, :, :], axis=-1)  # (M, L)
    return positions, distances


# --------------------------------------------------------------------------- coarse-to-fine search


def grid_positions(size_hw: tuple[int, int], stride_px: int) -> np.ndarray:
    """(N, 2) int (x, y) of a grid of ``stride_px`` covering the canvas, offset to centre it."""
    H, W = size_hw
    s = max(1, int(stride_px))
    xs = np.arange((W - 1) % s // 2, W, s)
    ys = np.arange((H - 1) % s // 2, H, s)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def top_separated(
    positions: np.ndarray, scores: np.ndarray, k: int, min_distance_px: float
) -> np.ndarray:
    """Indices of up to ``k`` best positions, greedily at least ``min_distance_px`` apart (NMS).

    ``positions`` (N, 2) px, ``scores`` (N,). The loop runs over the k picks, not over pixels.
    """
    alive = np.ones(len(scores), dtype=bool)
    picked: list[int] = []
    for _ in range(k):
        if not alive.any():
            break
        best = int(np.argmax(np.where(alive, scores, -np.inf)))
        picked.append(best)
        alive &= np.linalg.norm(positions - positions[best], axis=1) >= min_distance_px
    return np.asarray(picked, dtype=np.int64)


def window_positions(centres: np.ndarray, radius_px: int) -> np.ndarray:
    """(K, w*w, 2) int positions of the (2r+1)^2 windows around K centres (w = 2r + 1)."""
    r = int(radius_px)
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    offsets = np.stack([dx.ravel(), dy.ravel()], axis=1)
    return np.asarray(centres, dtype=np.int64)[:, None, :] + offsets[None]


def refine_in_windows(probs: np.ndarray, radius_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Best position of each window, refined to sub-pixel by the posterior-weighted mean of the
    3 x 3 pixels around it (mean of the neighbours inside the window).

    ``probs``: (K, w*w) posteriors on ``window_positions`` (row-major). Returns offsets (K, 2)
    float px from each window centre and the best posterior (K,).
    """
    w = 2 * int(radius_px) + 1
    grid = probs.reshape(-1, w, w)  # (K, w, w)
    flat_best = np.argmax(probs, axis=1)
    by, bx = np.divmod(flat_best, w)
    d = np.array([-1, 0, 1])
    ny, nx = by[:, None, None] + d[None, :, None], bx[:, None, None] + d[None, None, :]
    inside = (ny >= 0) & (ny < w) & (nx >= 0) & (nx < w)  # (K, 3, 3)
    ny, nx = np.clip(ny, 0, w - 1), np.clip(nx, 0, w - 1)  # (K, 3, 1), (K, 1, 3)
    weights = (grid[np.arange(len(grid))[:, None, None], ny, nx] + 1e-12) * inside  # (K, 3, 3)
    total = weights.sum(axis=(1, 2))
    x = (weights * nx).sum(axis=(1, 2)) / total - radius_px
    y = (weights * ny).sum(axis=(1, 2)) / total - radius_px
    return np.stack([x, y], axis=1), probs[np.arange(len(probs)), flat_best]


FeatureFn = Callable[[np.ndarray], np.ndarray]  # (N, 2) int positions -> (N, F) features
PosteriorFn = Callable[[np.ndarray], np.ndarray]  # (N, F) features -> (N,) p(landmark | x)


def search_candidates(
    features: FeatureFn,
    posteriors: Sequence[PosteriorFn],
    size_hw: tuple[int, int],
    *,
    stride_px: int,
    top_k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Coarse-to-fine candidates for the L landmarks of ``posteriors``.

    Coarse: every ``stride_px`` px; keep each landmark's ``top_k`` maxima at least
    ``2 * stride_px`` apart. Fine: the (2 * stride + 1)^2 window at 1 px around each (features
    computed once for all windows, each landmark scored on its own), refined to sub-pixel.
    Returns candidates (L, K, 2) float model px and their log posteriors (L, K) (K = top_k; a
    landmark with fewer coarse maxima repeats them).
    """
    H, W = size_hw
    grid = grid_positions(size_hw, stride_px)
    coarse = features(grid)  # (N, F)
    L, r = len(posteriors), max(1, int(stride_px))
    picks = []
    for posterior in posteriors:
        picks.append(np.resize(top_separated(grid, posterior(coarse), top_k, 2.0 * r), top_k))
    # Centres moved inwards so every window lies on the canvas (a canvas narrower than a window
    # keeps its centres and clips the windows).
    low, high = np.minimum(r, [W - 1, H - 1]), np.maximum([W - 1 - r, H - 1 - r], r)
    centres = np.clip(grid[np.stack(picks)], low, np.maximum(low, high))  # (L, K, 2)
    windows = window_positions(centres.reshape(-1, 2), r)  # (L*K, w*w, 2)
    windows = np.clip(windows, 0, [W - 1, H - 1]).reshape(L, -1, 2)  # (L, K*w*w, 2)
    unique, inverse = np.unique(windows.reshape(-1, 2), axis=0, return_inverse=True)
    fine = features(unique)[inverse.reshape(L, -1)]  # (L, K*w*w, F): windows overlap
    probs = np.stack([post(fine[i]) for i, post in enumerate(posteriors)])  # (L, K*w*w)
    offsets, best = refine_in_windows(probs.reshape(L * top_k, -1), r)
    candidates = centres.reshape(-1, 2) + offsets
    candidates = np.clip(candidates, 0, [W - 1, H - 1]).reshape(L, top_k, 2)
    return candidates, np.log(np.maximum(best, LOG_FLOOR)).reshape(L, top_k)


# --------------------------------------------------------------------------- shape priors


@dataclass(frozen=True)
class PairPrior:
    """Distance between a measurement's two landmarks: Gaussian, mm (learned on training reads)."""

    mean_mm: float
    sd_mm: float
    count: int

    def log_prior(self, distance_mm: np.ndarray) -> np.ndarray:
        """Unnormalised log density of distances (any shape), mm."""
        return -0.5 * ((np.asarray(distance_mm) - self.mean_mm) / self.sd_mm) ** 2


def cross_terms(la: np.ndarray, sa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|cos| of the LA-SA angle and |midpoint(SA) - midpoint(LA)| / |LA| of endpoint pairs
    ``la``, ``sa`` (..., 2, 2) in any common unit; both (...), 0 for a centred perpendicular cross.
    """
    u, v = la[..., 1, :] - la[..., 0, :], sa[..., 1, :] - sa[..., 0, :]
    length_u, length_v = np.linalg.norm(u, axis=-1), np.linalg.norm(v, axis=-1)
    cos = np.abs((u * v).sum(-1)) / (length_u * length_v + 1e-9)
    offset = np.linalg.norm(sa.mean(-2) - la.mean(-2), axis=-1) / (length_u + 1e-9)
    return cos, offset


@dataclass(frozen=True)
class CrossPrior:
    """Transverse views: how the short axis (SA) sits on the long axis (LA).

    ``cos_sd``: spread of |cos| of the LA-SA angle (0 = perpendicular). ``offset_sd``: spread of
    |midpoint(SA) - midpoint(LA)| / |LA| (0 = crossing at the middle). Both zero-mean, scale-free.
    """

    cos_sd: float
    offset_sd: float
    count: int

    def log_prior(self, la: np.ndarray, sa: np.ndarray) -> np.ndarray:
        """``la``, ``sa``: (..., 2, 2) endpoint pairs, any common unit -> (...) log density."""
        cos, offset = cross_terms(la, sa)
        return -0.5 * (cos / self.cos_sd) ** 2 - 0.5 * (offset / self.offset_sd) ** 2


@dataclass(frozen=True)
class TaskPrior:
    """The shape prior of one task: a ``PairPrior`` per measurement, a ``CrossPrior`` for quads."""

    pairs: dict[str, PairPrior]
    cross: CrossPrior | None


def fit_task_prior(task: LandmarkTask, points_mm: np.ndarray) -> TaskPrior | None:
    """Learn a task's prior from training reads: ``points_mm`` (n, L, 2), the task's landmarks in
    mm (NaN where absent). None when no read has a complete pair. SDs are floored (2 mm, 10 % of
    the mean; 0.05 for the scale-free terms) so a small training set cannot make them zero.
    """
    index = {name: i for i, name in enumerate(task.landmarks)}
    pairs: dict[str, PairPrior] = {}
    for code in task.measurements:
        a, b = (index[n] for n in MEASUREMENT_BY_CODE[code].landmarks)
        d = np.linalg.norm(points_mm[:, a] - points_mm[:, b], axis=-1)
        d = d[np.isfinite(d)]
        if len(d):
            sd = max(float(d.std()), 2.0, 0.1 * float(d.mean()))
            pairs[code] = PairPrior(float(d.mean()), sd, len(d))
    if not pairs:
        return None
    cross = None
    if len(task.measurements) == 2:
        la, sa = (_pair_points(task, code, points_mm) for code in task.measurements)
        both = np.isfinite(la).all(axis=(1, 2)) & np.isfinite(sa).all(axis=(1, 2))
        if both.any():
            terms = cross_terms(la[both], sa[both])
            sds = [max(float(np.sqrt((t**2).mean())), 0.05) for t in terms]
            cross = CrossPrior(sds[0], sds[1], int(both.sum()))
    return TaskPrior(pairs, cross)


def _pair_points(task: LandmarkTask, code: str, points: np.ndarray) -> np.ndarray:
    """(n, 2, 2) endpoints of measurement ``code`` from (n, L, 2) task points."""
    a, b = (task.landmarks.index(n) for n in MEASUREMENT_BY_CODE[code].landmarks)
    return points[:, [a, b]]


# --------------------------------------------------------------------------- joint selection


def _pair_scores(
    cands: np.ndarray,
    logp: np.ndarray,
    prior: PairPrior | None,
    spacing_mm: float | None,
    weight: float,
) -> np.ndarray:
    """(K, K) score of every (a, b) candidate pair: log p(a) + log p(b) + weight * log prior."""
    score = logp[0][:, None] + logp[1][None, :]
    if prior is not None and spacing_mm is not None:
        d = np.linalg.norm(cands[0][:, None] - cands[1][None, :], axis=-1) * spacing_mm
        score = score + weight * prior.log_prior(d)
    return score


def select_landmarks(
    task: LandmarkTask,
    candidates: np.ndarray,
    log_post: np.ndarray,
    prior: TaskPrior | None,
    *,
    spacing_mm: float | None,
    weight: float = 1.0,
    top_pairs: int = 16,
) -> np.ndarray:
    """One position per landmark of ``task``: (L, 2) model px.

    ``candidates`` (L, K, 2) model px and ``log_post`` (L, K) in ``task.landmarks`` order.
    One measurement (long views): the pair maximising log p(a) + log p(b) + weight *
    log N(|a - b| mm; learned mean, sd). Two (transverse views): the ``top_pairs`` best LA pairs
    and SA pairs, combined with the ``CrossPrior`` (SA roughly perpendicular to the LA, crossing
    near its middle). Without ``spacing_mm`` the distance terms are skipped (no mm to compare).
    """
    index = {name: i for i, name in enumerate(task.landmarks)}
    codes = list(task.measurements)
    chosen = candidates[:, 0].copy()  # fall back to each landmark's best candidate
    pairs = [tuple(index[n] for n in MEASUREMENT_BY_CODE[c].landmarks) for c in codes]
    priors = [prior.pairs.get(c) if prior else None for c in codes]
    scores = [
        _pair_scores(candidates[list(p)], log_post[list(p)], pr, spacing_mm, weight)
        for p, pr in zip(pairs, priors, strict=True)
    ]
    if len(pairs) == 1:
        i, j = np.unravel_index(np.argmax(scores[0]), scores[0].shape)
        chosen[list(pairs[0])] = candidates[pairs[0][0], i], candidates[pairs[0][1], j]
        return chosen
    (la_a, la_b), (sa_a, sa_b) = pairs[:2]
    best = [np.argsort(s.ravel())[::-1][:top_pairs] for s in scores[:2]]
    la_i, la_j = np.unravel_index(best[0], scores[0].shape)
    sa_i, sa_j = np.unravel_index(best[1], scores[1].shape)
    la = np.stack([candidates[la_a, la_i], candidates[la_b, la_j]], axis=1)  # (M, 2, 2)
    sa = np.stack([candidates[sa_a, sa_i], candidates[sa_b, sa_j]], axis=1)
    total = scores[0].ravel()[best[0]][:, None] + scores[1].ravel()[best[1]][None, :]
    if prior is not None and prior.cross is not None:
        total = total + weight * prior.cross.log_prior(la[:, None], sa[None, :])
    m, n = np.unravel_index(np.argmax(total), total.shape)
    chosen[[la_a, la_b]] = la[m]
    chosen[[sa_a, sa_b]] = sa[n]
    return chosen


def task_points_mm(points_px: np.ndarray, spacing_mm: Sequence[float] | None) -> np.ndarray:
    """(..., 2) source px (x, y) -> mm with ``(row_mm, col_mm)`` spacing; NaN without spacing."""
    p = np.asarray(points_px, dtype=np.float64)
    if spacing_mm is None:
        return np.full(p.shape, np.nan)
    return p * np.array([spacing_mm[1], spacing_mm[0]])


# --------------------------------------------------------------------------- the trained detector


def preprocess_for_detection(image: UltrasoundImage, config: PreprocessConfig) -> PreprocessedImage:
    """``preprocess_image`` without the overlay mask of the view classifier (PBT only needs the
    landmark input, and finding overlays costs more than the whole PBT scan); ``mask`` is then
    True on the resampled region, False in the padding."""
    return preprocess_image(image, config, mask=np.ones(image.shape, dtype=bool))


@dataclass
class PBTModel:
    """A trained PBT baseline: one tree per landmark, a shape prior per task.

    ``config``: the ``abdus.baselines.pbt.PBTConfig`` it was trained with (preprocessing,
    features, search). ``bank``: the Haar feature bank. ``trees``: landmark name -> tree with
    ``posterior_codes(codes) -> (N,)``. ``priors``: task name -> ``TaskPrior``. ``edges``:
    (F, bins - 1) feature quantisation shared by all trees. ``training``: statistics of the
    training run (counts, seconds, mean landmark positions in model px).
    """

    config: PBTConfig
    bank: HaarFeatureBank
    trees: dict[str, ProbabilisticBoostingTree]
    priors: dict[str, TaskPrior]
    edges: np.ndarray
    training: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # the file it was loaded from, named in error messages

    @property
    def trained_tasks(self) -> tuple[str, ...]:
        """Tasks with a tree for every one of their landmarks."""
        return tuple(t.name for t in TASKS if all(lm in self.trees for lm in t.landmarks))

    def features(self, pre: PreprocessedImage) -> FeatureFn:
        """positions (N, 2) model px -> quantised features (N, F) on a preprocessed image."""
        pixels = gain_normalised(pre.pixels, pre.mask)
        extract = CandidateFeatures(pixels, self.bank, use_position=self.config.use_position)
        return lambda positions: quantise(extract(positions), self.edges)

    def task_trees(self, task: LandmarkTask) -> list[ProbabilisticBoostingTree]:
        missing = [lm for lm in task.landmarks if lm not in self.trees]
        if missing:
            trained = ", ".join(self.trained_tasks) or "none"
            raise AbdusInputError(
                f"this PBT model cannot detect task {task.name!r}: its training set had too few "
                f"{', '.join(missing)} landmarks; trained tasks: {trained}",
                self.source,
            )
        return [self.trees[lm] for lm in task.landmarks]

    def detect_preprocessed(self, pre: PreprocessedImage, task: LandmarkTask) -> np.ndarray:
        """(L, 2) float model px of ``task``'s landmarks (``task.landmarks`` order)."""
        trees = self.task_trees(task)
        cfg = self.config
        candidates, log_post = search_candidates(
            self.features(pre),
            [tree.posterior_codes for tree in trees],
            pre.pixels.shape,
            stride_px=max(1, round(cfg.px(cfg.coarse_stride_mm))),
            top_k=cfg.top_k,
        )
        return select_landmarks(
            task,
            candidates,
            log_post,
            self.priors.get(task.name),
            spacing_mm=pre.transform.model_spacing_mm,
            weight=cfg.shape_weight,
        )

    def detect(self, image: UltrasoundImage, view: str) -> dict[str, tuple[float, float]]:
        """Landmarks of ``view``'s task on ``image``: {name: (x, y) source px}.

        A view without a task gives {}. ValueError for an unknown view name; AbdusInputError
        when the model was trained without that task's landmarks.
        """
        task = task_of_view(view)
        if task is None:
            return {}
        self.task_trees(task)  # refuse before the work
        pre = preprocess_for_detection(image, self.config.preprocess)
        points = pre.transform.to_source(self.detect_preprocessed(pre, task))
        return {lm: (float(x), float(y)) for lm, (x, y) in zip(task.landmarks, points, strict=True)}

    def predict_record(
        self, manifest: Manifest, record: ImageRecord, view: str | None = None
    ) -> dict[str, tuple[float, float]]:
        """``detect`` on a manifest record's frame, for its reference view unless ``view``."""
        return self.detect(read_record_image(manifest, record), view or record.view)
