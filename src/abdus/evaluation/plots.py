"""Report figures as PNG bytes: confusion matrices (Fig. 3), Bland–Altman, radial errors, gallery.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas directly (no pyplot
state, no GUI backend), so they render the same in a server, a test or a worker process.
Every function returns PNG bytes; ``write_png`` stores them atomically.

Coordinates: gallery points are (x, y) in *model pixels* of the model canvas (pixel centres at
integers, as ``imshow`` draws them); distances and errors are in mm.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from abdus.evaluation.metrics import RADIAL_THRESHOLDS_MM, bland_altman
from abdus.evaluation.tables import ConfusionPanel
from abdus.io.atomic import atomic_write_bytes
from abdus.taxonomy import (
    LANDMARK_INDEX,
    LANDMARKS,
    MEASUREMENTS,
    NUM_LANDMARKS,
    NUM_VIEWS,
    TASKS,
    VIEW_NAMES,
    VIEWS,
    landmark_channels_of_view,
    measurements_of_view,
)

if TYPE_CHECKING:
    from abdus.evaluation.evaluate import SplitPredictions

DPI = 110
# Okabe–Ito colour-blind-safe pair: prediction orange, reference sky blue (both visible on grey).
PRED_COLOUR, REF_COLOUR = "#E69F00", "#56B4E9"


def figure_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def write_png(path: str | Path, png: bytes) -> Path:
    """Write PNG bytes to ``path`` atomically; return the path."""
    atomic_write_bytes(path, png)
    return Path(path)


# ---------------------------------------------------------------------- confusion matrices


def _draw_confusion(ax, panel: ConfusionPanel, *, names: bool):
    """Row-normalised colour, counts annotated, view index (and name) on the axes."""
    ticks = np.arange(NUM_VIEWS)
    ax.set_xticks(ticks, [str(i) for i in ticks])
    labels = (
        [f"{name} {i}" for i, name in enumerate(VIEW_NAMES)] if names else list(map(str, ticks))
    )
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set_xlabel("predicted view")
    ax.set_ylabel("reference view (reader A)")
    if panel.counts is None:
        ax.set_title(f"{panel.label}: not available")
        ax.text(5, 5, "no view labels", ha="center", va="center")
        ax.set_xlim(-0.5, 10.5)
        ax.set_ylim(10.5, -0.5)
        return None
    counts = panel.counts
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    shown = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    rows, cols = np.nonzero(counts)
    for r, c in zip(rows, cols, strict=True):  # one label per non-empty cell, not per pixel
        colour = "white" if share[r, c] > 0.6 else "black"
        ax.text(c, r, str(counts[r, c]), ha="center", va="center", fontsize=7, color=colour)
    accuracy = "—" if panel.accuracy is None else f"{100 * panel.accuracy:.2f}%"
    ax.set_title(f"{panel.label}: accuracy {accuracy} (n={panel.n_images})")
    return shown


def confusion_png(panels: Sequence[ConfusionPanel]) -> bytes:
    """One figure, a panel per confusion matrix side by side (the paper's Fig. 3 layout).

    Colour = share of the reference row (0–1); numbers = image counts; view names are on the
    first panel's rows, indices (Fig. 1 order) on every axis.
    """
    if not panels:
        raise ValueError("no confusion matrices to draw")
    fig = Figure(figsize=(1.6 + 4.6 * len(panels), 5.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    drawn = [
        _draw_confusion(ax, panel, names=i == 0)
        for i, (ax, panel) in enumerate(zip(axes, panels, strict=True))
    ]
    shown = [d for d in drawn if d is not None]
    if shown:
        fig.colorbar(shown[0], ax=list(axes), shrink=0.8, label="share of the reference row")
    return figure_png(fig)


# ---------------------------------------------------------------------- Bland–Altman


def _draw_bland_altman(ax, code: str, pairs: np.ndarray, reader: str, reference: str) -> None:
    """Mean of the two (mm) against their difference (mm); bias solid, 95% LoA dashed."""
    pred, ref = pairs[:, 0], pairs[:, 1]
    stats = bland_altman(pred, ref)
    ax.scatter((pred + ref) / 2, pred - ref, s=12, alpha=0.7, color="#0072B2", linewidths=0)
    ax.axhline(0.0, color="0.7", lw=0.8)
    title = f"{code} (n={len(pairs)})"
    if stats["bias"] is not None:
        for value, style in (
            (stats["bias"], "-"),
            (stats["loa_low"], "--"),
            (stats["loa_high"], "--"),
        ):
            ax.axhline(value, color="black", lw=1.1, ls=style)
        loa = f"{stats['loa_low']:+.2f} to {stats['loa_high']:+.2f}"
        title += f"\nbias {stats['bias']:+.2f}, LoA {loa} mm"
        ax.margins(y=0.15)  # keep the LoA lines off the frame
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(f"mean of {reader} and {reference} (mm)", fontsize=8)
    ax.set_ylabel(f"{reader} − {reference} (mm)", fontsize=8)


def bland_altman_png(
    pairs_mm: Mapping[str, Sequence[Sequence[float]]],
    *,
    reader: str = "model",
    reference: str = "reader A",
) -> bytes:
    """Bland–Altman panels, one per measurement code with pairs (taxonomy order).

    ``pairs_mm``: {code: [[rater mm, reference mm], ...]} as in ``measurement_pairs_mm``. Each
    panel: mean of the two (mm) against the difference (mm), bias and bias ± 1.96 SD lines.
    """
    codes = [m.code for m in MEASUREMENTS if len(pairs_mm.get(m.code) or []) > 0]
    if not codes:
        raise ValueError("no measurement pairs to draw")
    cols = min(4, len(codes))
    rows = math.ceil(len(codes) / cols)
    fig = Figure(figsize=(3.6 * cols, 3.2 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, code in zip(axes, codes, strict=False):
        pairs = np.asarray(pairs_mm[code], dtype=np.float64).reshape(-1, 2)
        _draw_bland_altman(ax, code, pairs, reader, reference)
    for ax in axes[len(codes) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"Bland–Altman: {reader} against {reference} (solid: bias; dashed: 95% limits of agreement)"
    )
    return figure_png(fig)


# ---------------------------------------------------------------------- radial errors


def radial_error_histogram_png(
    errors_mm: Mapping[str, Sequence[float]], *, title: str = "Landmark radial error"
) -> bytes:
    """Histogram of landmark radial errors (mm), stacked by landmark task, 2/4/8 mm marked.

    The x range ends at 1.25 x the 95th percentile (at least 12 mm) so the bulk stays readable;
    errors beyond it are counted in the last bin and the title says how many, so outliers are
    never silently dropped. The share within 2/4/8 mm is over all errors.
    """
    by_task = {
        task.name: np.concatenate(
            [np.asarray(errors_mm.get(lm, ()), dtype=np.float64) for lm in task.landmarks]
        )
        for task in TASKS
    }
    by_task = {name: e[np.isfinite(e)] for name, e in by_task.items() if np.isfinite(e).any()}
    if not by_task:
        raise ValueError("no landmark errors to draw")
    every = np.concatenate(list(by_task.values()))
    upper = max(12.0, float(np.ceil(1.25 * np.percentile(every, 95))))
    fig = Figure(figsize=(8.0, 4.4), layout="constrained")
    ax = fig.subplots()
    clipped = [np.minimum(e, upper) for e in by_task.values()]
    ax.hist(clipped, bins=np.linspace(0.0, upper, 41), stacked=True, label=list(by_task))
    shares = []
    for t in RADIAL_THRESHOLDS_MM:
        ax.axvline(t, color="black", ls="--", lw=1.0)
        ax.text(t, 0.98, f"{t:g} mm ", transform=ax.get_xaxis_transform(), rotation=90,
                ha="right", va="top", fontsize=8)  # fmt: skip
        shares.append(f"within {t:g} mm: {100 * float((every <= t).mean()):.1f}%")
    beyond = int((every > upper).sum())
    note = f"\n{beyond} errors beyond {upper:g} mm are counted in the last bin" if beyond else ""
    ax.set_title(f"{title}: n={every.size}, mean {every.mean():.2f} mm{note}", fontsize=10)
    ax.set_xlabel("radial error (mm)")
    ax.set_ylabel("landmarks")
    ax.legend(fontsize=8, title="\n".join(shares), title_fontsize=8, loc="upper right")
    return figure_png(fig)


# ---------------------------------------------------------------------- gallery


@dataclass(frozen=True)
class GalleryCase:
    """One overlay: ``image`` (H, W) in [0, 1] on the model canvas; points (14, 2) model px.

    ``pred_points``/``ref_points`` hold NaN for landmarks not to draw; ``measurements`` maps a
    measurement code to (predicted mm, reference mm), either None when not measurable.
    """

    image: np.ndarray
    pred_points: np.ndarray
    ref_points: np.ndarray
    pred_view: str
    ref_view: str
    measurements: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    title: str = ""


def _draw_calipers(ax, points: np.ndarray, colour: str, marker: str, style: str) -> None:
    """Landmarks as markers, each measurement's pair joined by a line."""
    for m in MEASUREMENTS:
        pair = points[[LANDMARK_INDEX[n] for n in m.landmarks]]
        if np.isfinite(pair).all():
            ax.plot(pair[:, 0], pair[:, 1], ls=style, color=colour, lw=1.3)
    shown = points[np.isfinite(points).all(axis=1)]
    ax.plot(shown[:, 0], shown[:, 1], ls="none", marker=marker, color=colour, ms=7, mew=1.8,
            mfc="none")  # fmt: skip


def _draw_case(ax, case: GalleryCase) -> None:
    image = np.asarray(case.image, dtype=np.float32)
    ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    _draw_calipers(ax, np.asarray(case.ref_points, float), REF_COLOUR, "o", "--")
    _draw_calipers(ax, np.asarray(case.pred_points, float), PRED_COLOUR, "x", "-")
    drawn = np.concatenate(
        [np.asarray(case.ref_points, float), np.asarray(case.pred_points, float)]
    )
    drawn = drawn[np.isfinite(drawn).all(axis=1)]  # points off the canvas stay visible
    low = np.minimum(drawn.min(axis=0, initial=np.inf) - 2.0, -0.5)
    high = np.maximum(drawn.max(axis=0, initial=-np.inf) + 2.0, np.array(image.shape[::-1]) - 0.5)
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(high[1], low[1])
    ax.set_xticks([])
    ax.set_yticks([])
    classified = case.pred_view in VIEW_NAMES
    mark = ("✓" if case.pred_view == case.ref_view else "✗") if classified else ""
    views = f"view: predicted {case.pred_view} {mark}\nreference {case.ref_view}"
    ax.set_title(f"{case.title}\n{views}", fontsize=8)
    lines = [
        f"{code}: predicted {_mm(p)}, reference {_mm(r)}"
        for code, (p, r) in case.measurements.items()
    ]
    ax.set_xlabel("\n".join(lines) or "no measurement on this view", fontsize=8)


def _mm(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.1f} mm"


def gallery_png(cases: Sequence[GalleryCase], columns: int | None = None) -> bytes:
    """The cases side by side (``columns`` per row; default all in one row): image, predicted
    (orange ×, solid) and reference (blue ○, dashed) calipers with each pair joined, both view
    names, and the measurement values (mm)."""
    if not cases:
        raise ValueError("no gallery cases to draw")
    columns = min(columns or len(cases), len(cases))
    rows = math.ceil(len(cases) / columns)
    fig = Figure(figsize=(4.2 * columns, 5.6 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax, case in zip(axes, cases, strict=False):
        _draw_case(ax, case)
    for ax in axes[len(cases) :]:
        ax.set_axis_off()
    handles = [
        axes[0].plot([], [], color=PRED_COLOUR, marker="x", ls="-", label="prediction")[0],
        axes[0].plot([], [], color=REF_COLOUR, marker="o", mfc="none", ls="--",
                     label="reference (reader A)")[0],
    ]  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8)
    return figure_png(fig)


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


def find_outliers(preds: SplitPredictions, threshold_mm: float = 20.0) -> list[Outlier]:
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
