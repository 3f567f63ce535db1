"""Which images the report shows: the best, median and worst by landmark error, and every
image with a landmark far off (the outliers), as ``plots.GalleryCase`` overlays.

Errors are radial distances in mm between the model's landmarks and reader A's, over the
landmarks of the *reference* view's task (as they are scored). Points are model pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from abdus.evaluation.metrics import FAR_OFF_MM
from abdus.evaluation.plots import GalleryCase
from abdus.evaluation.predictions import SplitPredictions
from abdus.taxonomy import (
    LANDMARK_INDEX,
    LANDMARKS,
    NUM_LANDMARKS,
    NUM_VIEWS,
    VIEW_NAMES,
    VIEWS,
    landmark_channels_of_view,
    measurements_of_view,
)


def _task_channel_mask() -> np.ndarray:
    """(11, 14) bool: the landmark channels of each view's task."""
    mask = np.zeros((NUM_VIEWS, NUM_LANDMARKS), dtype=bool)
    for view in VIEWS:
        mask[view.index, list(landmark_channels_of_view(view.index))] = True
    return mask


def landmark_errors_mm(preds: SplitPredictions) -> np.ndarray:
    """(N, 14) radial error (mm) of each landmark of the reference view's task; NaN elsewhere.

    Only landmarks present in both the prediction and reader A's read count; images without a
    reference task, a reference read or a pixel spacing are all NaN.
    """
    ref_points, ref_views = preds.reads["reference"]
    ref_views = np.asarray(ref_views)
    known = (ref_views >= 0) & (ref_views < NUM_VIEWS)
    task_mask = np.where(known[:, None], _task_channel_mask()[np.clip(ref_views, 0, None)], False)
    dist = np.hypot(*np.moveaxis(preds.points - ref_points, -1, 0)) * preds.spacing[:, None]
    return np.where(task_mask, dist, np.nan)


def landmark_error_per_image_mm(preds: SplitPredictions) -> np.ndarray:
    """(N,) mean radial error (mm) over the reference view's task landmarks; NaN if none."""
    errors = landmark_errors_mm(preds)
    valid = np.isfinite(errors)
    count = valid.sum(axis=1)
    total = np.where(valid, errors, 0.0).sum(axis=1)
    return np.divide(total, count, out=np.full(len(count), np.nan), where=count > 0)


def _case_image(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]  # (1, H, W) as the dataset yields it
    if array.ndim != 2:
        raise ValueError(f"gallery images must be (H, W), got shape {array.shape}")
    return array


def _make_case(preds: SplitPredictions, image: np.ndarray, i: int, title: str) -> GalleryCase:
    ref_points, ref_views = preds.reads["reference"]
    ref_view = int(ref_views[i])
    channels = list(landmark_channels_of_view(ref_view))
    pred_points = np.full((NUM_LANDMARKS, 2), np.nan)
    pred_points[channels] = preds.points[i, channels]  # the reference task, as it is scored
    spacing = float(preds.spacing[i])
    measured = {}
    for m in measurements_of_view(ref_view):
        a, b = (LANDMARK_INDEX[n] for n in m.landmarks)
        p = float(np.hypot(*(pred_points[a] - pred_points[b])) * spacing)
        r = float(np.hypot(*(ref_points[i, a] - ref_points[i, b])) * spacing)
        measured[m.code] = (p if math.isfinite(p) else None, r if math.isfinite(r) else None)
    pred_view = int(preds.views[i])
    return GalleryCase(
        image=_case_image(image),
        pred_points=pred_points,
        ref_points=np.asarray(ref_points[i], dtype=np.float64),
        pred_view=VIEW_NAMES[pred_view] if 0 <= pred_view < NUM_VIEWS else "— (no classifier)",
        ref_view=VIEW_NAMES[ref_view],
        measurements=measured,
        title=title,
    )


@dataclass(frozen=True)
class Outlier:
    """An image with a landmark off by more than the threshold: its record id, reference view,
    and the error (mm) of every landmark of its task, worst first."""

    index: int
    image_id: str
    ref_view: str
    errors_mm: dict[str, float]


def find_outliers(preds: SplitPredictions, threshold_mm: float = FAR_OFF_MM) -> list[Outlier]:
    """Images with at least one landmark more than ``threshold_mm`` from reader A's, worst
    first (by their largest error)."""
    errors = landmark_errors_mm(preds)
    worst = np.max(np.nan_to_num(errors, nan=-np.inf), axis=1)
    _, ref_views = preds.reads["reference"]
    found = []
    for i in np.flatnonzero(worst > threshold_mm)[np.argsort(-worst[worst > threshold_mm])]:
        by_landmark = {
            LANDMARKS[c]: float(errors[i, c]) for c in np.argsort(-np.nan_to_num(errors[i], nan=-1))
            if np.isfinite(errors[i, c])
        }  # fmt: skip
        view = VIEW_NAMES[int(ref_views[i])]
        found.append(Outlier(int(i), preds.records[i].id, view, by_landmark))
    return found


def outlier_cases(
    preds: SplitPredictions, images: Sequence[np.ndarray], outliers: Sequence[Outlier]
) -> list[GalleryCase]:
    """Gallery cases (thumbnails) of ``outliers``, titled with their worst landmark."""
    cases = []
    for o in outliers:
        name, error = next(iter(o.errors_mm.items()))
        title = f"{o.image_id}: {name} off by {error:.1f} mm"
        cases.append(_make_case(preds, images[o.index], o.index, title))
    return cases


def gallery_cases(
    preds: SplitPredictions, images: Sequence[np.ndarray], k: int = 3
) -> list[GalleryCase]:
    """Pick ``k`` images spread from best to worst by mean landmark radial error (mm).

    ``images`` (N,) arrays (H, W) or (1, H, W) in [0, 1], aligned with ``preds.records``. With
    k = 3: best, median and worst. Images with no scorable landmark are skipped; fewer than k
    cases come back when fewer images are scorable.
    """
    if len(images) != len(preds.records):
        raise ValueError(f"{len(images)} images for {len(preds.records)} predictions")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    errors = landmark_error_per_image_mm(preds)
    scorable = np.flatnonzero(np.isfinite(errors))
    if scorable.size == 0:
        return []
    ranked = scorable[np.argsort(errors[scorable], kind="stable")]  # best first
    positions = np.unique(np.round(np.linspace(0, ranked.size - 1, min(k, ranked.size))))
    cases = []
    for pos in positions.astype(int):
        i = int(ranked[pos])
        rank = (
            "best" if pos == 0 else "worst" if pos == ranked.size - 1
            else "median" if len(positions) == 3 else f"rank {pos + 1}/{ranked.size}"
        )  # fmt: skip
        title = f"{rank}: {preds.records[i].id} (mean error {errors[i]:.1f} mm)"
        cases.append(_make_case(preds, images[i], i, title))
    return cases
