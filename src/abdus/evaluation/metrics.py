"""Metric functions on plain arrays: view classification, measurements (mm), landmarks (mm).

All functions are pure; the evaluation driver decides which images enter each metric (the
paper's protocol: a measurement is scored on the images whose *reference* view has its task).
Counts, accuracy, precision/recall and absolute errors come from ``sklearn.metrics``, the
Wilson interval from ``scipy.stats``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as sk_metrics

from abdus.taxonomy import NUM_VIEWS, VIEW_NAMES

RADIAL_THRESHOLDS_MM = (2.0, 4.0, 8.0)
FAR_OFF_MM = 20.0  # a landmark this far from the reference is a failure, not an imprecision


def confusion_matrix(
    true: Sequence[int], pred: Sequence[int], num_classes: int = NUM_VIEWS
) -> np.ndarray:
    """Counts (num_classes, num_classes): rows are the reference class, columns the prediction."""
    if len(true) == 0 and len(pred) == 0:
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    return sk_metrics.confusion_matrix(true, pred, labels=np.arange(num_classes)).astype(np.int64)


def row_normalised(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its total (rows with no images stay 0)."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)


def _defined(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def view_metrics(true: Sequence[int], pred: Sequence[int]) -> dict:
    """Accuracy, confusion matrix (counts and row-normalised), per-view precision and recall.

    Precision/recall of a view with no predicted/reference images is None (undefined).
    """
    counts = confusion_matrix(true, pred)
    n = int(counts.sum())
    labels = np.arange(NUM_VIEWS)
    if n:
        precision, recall, _, _ = sk_metrics.precision_recall_fscore_support(
            true, pred, labels=labels, zero_division=np.nan
        )
    else:
        precision = recall = np.full(NUM_VIEWS, np.nan)
    reference = counts.sum(axis=1)
    per_view = {
        name: {
            "precision": _defined(precision[i]),
            "recall": _defined(recall[i]),
            "n_reference": int(reference[i]),
        }
        for i, name in enumerate(VIEW_NAMES)
    }
    return {
        "view_accuracy": float(sk_metrics.accuracy_score(true, pred)) if n else None,
        "n_images": n,
        "confusion_matrix": counts.tolist(),
        "confusion_matrix_normalised": row_normalised(counts).round(6).tolist(),
        "per_view": per_view,
    }


def wilson_interval(successes: int, n: int) -> tuple[float, float] | None:
    """95% Wilson score interval of a proportion (Wilson 1927), or None when n = 0."""
    if n <= 0:
        return None
    interval = stats.binomtest(successes, n).proportion_ci(0.95, method="wilson")
    return float(interval.low), float(interval.high)


def bland_altman(pred: Sequence[float], ref: Sequence[float]) -> dict[str, float | None]:
    """Bias (mean of pred - ref) and 95% limits of agreement (bias ± 1.96 SD), in mm."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(ref, dtype=np.float64)
    if diff.size == 0:
        return {"bias": None, "sd": None, "loa_low": None, "loa_high": None}
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
    return {"bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd}


def measurement_summary(
    pairs: Mapping[str, Sequence[tuple[float, float]]],
) -> dict[str, dict[str, float | int | None]]:
    """Per measurement code, from (predicted mm, reference mm) pairs: n, MAE, median AE, BA."""
    out: dict[str, dict[str, float | int | None]] = {}
    for code, code_pairs in pairs.items():
        arr = np.asarray(code_pairs, dtype=np.float64).reshape(-1, 2)
        pred, ref = arr[:, 0], arr[:, 1]
        out[code] = {
            "n": int(arr.shape[0]),
            "mae_mm": float(sk_metrics.mean_absolute_error(ref, pred)) if ref.size else None,
            "median_mm": float(sk_metrics.median_absolute_error(ref, pred)) if ref.size else None,
            **{f"ba_{k}_mm": v for k, v in bland_altman(pred, ref).items()},
        }
    return out


def radial_summary(errors_mm: Mapping[str, Sequence[float]]) -> dict[str, dict]:
    """Per landmark, from radial errors in mm: n, mean, median, share within 2/4/8 mm."""
    out: dict[str, dict] = {}
    for name, errs in errors_mm.items():
        e = np.asarray(errs, dtype=np.float64)
        row: dict[str, float | int | None] = {
            "n": int(e.size),
            "mean_mm": float(e.mean()) if e.size else None,
            "median_mm": float(np.median(e)) if e.size else None,
        }
        for t in RADIAL_THRESHOLDS_MM:
            row[f"within_{t:g}mm"] = float((e <= t).mean()) if e.size else None
        out[name] = row
    return out


def far_off_share(errors_mm: Mapping[str, Sequence[float]], limit_mm: float = FAR_OFF_MM) -> dict:
    """Over all landmarks: how many are more than ``limit_mm`` from the reference, and share."""
    e = np.concatenate([np.asarray(v, dtype=np.float64) for v in errors_mm.values()] or [[]])
    n_far = int((e > limit_mm).sum())
    return {"limit_mm": limit_mm, "n": int(e.size), "n_far": n_far,
            "share": n_far / e.size if e.size else None}  # fmt: skip
