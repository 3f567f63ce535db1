"""Report figures as PNG bytes: confusion matrices (Fig. 3), Bland–Altman, radial errors, gallery.

Which images the gallery shows is ``abdus.evaluation.cases``; this module only draws.

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

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from abdus.evaluation.metrics import RADIAL_THRESHOLDS_MM, bland_altman, row_normalised
from abdus.evaluation.tables import ConfusionPanel
from abdus.io.atomic import atomic_write_bytes
from abdus.taxonomy import (
    LANDMARK_INDEX,
    MEASUREMENTS,
    NUM_VIEWS,
    TASKS,
    VIEW_NAMES,
)

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
    share = row_normalised(counts)
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
