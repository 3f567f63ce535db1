"""The evaluation report (``report.md`` + ``report.html``); the reproduction report is
``abdus.evaluation.reproduce_report``.

The report is built as a list of blocks and rendered to Markdown (PNGs beside it) and one
self-contained HTML page by ``abdus.evaluation.document``; every file goes through
``abdus.io.atomic``.

Input: the metrics dict of ``abdus.evaluation.evaluate.evaluate_predictions`` (model against
reader A; ``human`` = reader B against reader A; ``truth`` / ``reader_a_vs_truth`` on synthetic
data) plus the lead's top-level ``model``, ``preset``, ``run``, ``data``, ``split``,
``n_patients``. Any key may be missing; its section then says so instead of failing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from abdus.evaluation import plots
from abdus.evaluation.cases import Outlier
from abdus.evaluation.curves import learning_curves_png
from abdus.evaluation.document import Block, Bullets, Heading, Image, Paragraph, write_document
from abdus.evaluation.metrics import FAR_OFF_MM, wilson_interval
from abdus.evaluation.tables import (
    MISSING,
    PAPER_SOURCE,
    Table,
    confusion_panel,
    format_number,
    format_percent,
)
from abdus.taxonomy import LANDMARK_TASK, LANDMARKS, MEASUREMENT_CODES, PAPER_TABLE1_MM, VIEW_NAMES

Z95 = 1.959964  # two-sided 95% normal quantile

# ------------------------------------------------------------------------ comparisons


def _abs_errors(metrics: Mapping[str, Any], code: str) -> np.ndarray:
    pairs = (metrics.get("measurement_pairs_mm") or {}).get(code) or []
    arr = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
    return np.abs(arr[:, 0] - arr[:, 1])


VERDICTS = ("better", "worse", "no clear difference", "too few images", "not comparable")


def human_verdict(code: str, model: Mapping[str, Any], human: Mapping[str, Any]) -> tuple[str, str]:
    """(verdict, one honest sentence): is the model's MAE (mm) better or worse than reader B's?

    The verdict is one of ``VERDICTS``. Unpaired 95% interval of the MAE difference from the
    two standard errors (normal approximation): the images differ (reader B read only a
    subset), so no paired test is made. "no clear difference" when the interval contains 0.
    """
    m, h = _abs_errors(model, code), _abs_errors(human, code)
    if m.size == 0 or h.size == 0:
        return VERDICTS[4], f"{code}: not comparable (model n={m.size}, reader B n={h.size})."
    diff = float(m.mean() - h.mean())
    text = f"model {m.mean():.2f} mm (n={m.size}) vs reader B {h.mean():.2f} mm (n={h.size})"
    if h.mean() > 0:
        text += f", difference {diff:+.2f} mm, {m.mean() / h.mean():.2f}× the inter-reader error"
    if m.size < 2 or h.size < 2:
        return VERDICTS[3], f"{code}: too few images to tell — {text}."
    se = math.sqrt(m.var(ddof=1) / m.size + h.var(ddof=1) / h.size)
    low, high = diff - Z95 * se, diff + Z95 * se
    verdict = VERDICTS[2] if low <= 0.0 <= high else VERDICTS[0] if diff < 0 else VERDICTS[1]
    sentence = {
        VERDICTS[0]: "model better than the human reader",
        VERDICTS[1]: "model worse than the human reader",
        VERDICTS[2]: "no clear difference from the human reader",
    }[verdict]
    return verdict, f"{code}: {sentence} — {text} (95% interval {low:+.2f} to {high:+.2f} mm)."


def _accuracy_text(label: str, metrics: Mapping[str, Any]) -> str:
    accuracy = metrics.get("view_accuracy")
    counts = metrics.get("confusion_matrix")
    if accuracy is None or counts is None:
        return f"{label}: no view classification"
    total = int(np.asarray(counts).sum())
    interval = wilson_interval(round(accuracy * total), total)
    ci = "" if interval is None else f", 95% CI {100 * interval[0]:.1f}–{100 * interval[1]:.1f}%"
    return f"{label}: {100 * accuracy:.1f}% of {total} images{ci}"


# ------------------------------------------------------------------------ report sections


def _mae_cells(metrics: Mapping[str, Any] | None) -> tuple[str, ...]:
    """Per measurement code: "MAE (n=...)" in mm, or "—"."""
    cells = []
    for code in MEASUREMENT_CODES:
        entry = ((metrics or {}).get("measurements") or {}).get(code) or {}
        mae = format_number(entry.get("mae_mm"))
        cells.append(mae if mae == MISSING else f"{mae} (n={entry.get('n', 0)})")
    return tuple(cells)


def _context_blocks(metrics: Mapping[str, Any]) -> list[Block]:
    keys = ("model", "preset", "run", "data", "split", "n_images", "n_patients")
    names = {"n_images": "images with a reader A label", "n_patients": "patients"}
    items = tuple(f"{names.get(k, k)}: {metrics[k]}" for k in keys if metrics.get(k) is not None)
    return [Bullets(items)] if items else []


def _summary_blocks(metrics: Mapping[str, Any]) -> list[Block]:
    human = metrics.get("human")
    blocks: list[Block] = [Heading("Summary")]
    accuracy = [_accuracy_text("Model view accuracy", metrics)]
    if human:
        accuracy.append(_accuracy_text("Reader B against reader A (double-read images)", human))
    blocks.append(Bullets(tuple(accuracy)))
    headers = ("Rater", *(f"{code} MAE (mm)" for code in MEASUREMENT_CODES))
    rows = [("Model vs reader A (this data)", *_mae_cells(metrics))]
    rows.append(("Reader B vs reader A (this data)", *_mae_cells(human)))
    for name in ("MGCN_R", "Human"):
        paper = PAPER_TABLE1_MM[name]
        rows.append((f"{name}, {PAPER_SOURCE}", *(f"{paper[c]:.3f}" for c in MEASUREMENT_CODES)))
    caption = (
        "Mean absolute measurement error (mm), reference-view protocol, n = images. The last "
        "two rows are the paper's published numbers on its own data, for orientation only."
    )
    blocks.append(Table(headers, tuple(rows), caption))
    blocks.append(Paragraph("Model against the human reader, per measurement:"))
    if human:
        verdicts = [human_verdict(c, metrics, human) for c in MEASUREMENT_CODES]
        tally = [f"{sum(v == key for v, _ in verdicts)} {key}" for key in VERDICTS]
        blocks.append(Bullets(tuple(sentence for _, sentence in verdicts)))
        blocks.append(Paragraph(f"Overall, of {len(verdicts)} measurements: {', '.join(tally)}."))
    else:
        blocks.append(
            Paragraph(
                "No second reads on this data: the model cannot be compared with a human reader "
                "here. The paper's human row above comes from other images and is no substitute."
            )
        )
    return blocks


def _basis_blocks(metrics: Mapping[str, Any]) -> list[Block]:
    human = metrics.get("human") or {}
    counts = {code: (metrics.get("measurements") or {}).get(code, {}).get("n", 0)
              for code in MEASUREMENT_CODES}  # fmt: skip
    items = [
        f"split: {metrics.get('split', MISSING)}; patients: {metrics.get('n_patients', MISSING)}",
        f"images with a reader A label: {metrics.get('n_images', MISSING)}",
        f"images read twice (reader B): {human.get('n_images', 0) if human else 0}",
        "images per measurement (model): " + ", ".join(f"{code} {n}" for code, n in counts.items()),
    ]
    note = (
        "Reader A is the reference standard throughout. Human numbers rest only on the "
        "double-read images, so they carry more sampling noise than the model's."
    )
    return [Heading("What the numbers rest on"), Bullets(tuple(items)), Paragraph(note)]


def _view_blocks(metrics: Mapping[str, Any]) -> list[Block]:
    blocks: list[Block] = [Heading("View classification")]
    human = metrics.get("human") or {}
    panels = [confusion_panel("Model", metrics)]
    if human.get("confusion_matrix") is not None:
        panels.append(confusion_panel("Reader B", human))
    if panels[0].counts is None:
        blocks.append(Paragraph("This model does not classify views."))
        if len(panels) == 1:
            return blocks
    caption = (
        "Confusion matrices against reader A (rows: reference view, columns: predicted; colour "
        "= share of the row, numbers = images; view indices as in the view list)."
    )
    blocks.append(Image("confusion.png", plots.confusion_png(panels), caption))
    headers = ("View", "n reference", "Model precision (%)", "Model recall (%)",
               "Reader B precision (%)", "Reader B recall (%)")  # fmt: skip
    rows = []
    for i, name in enumerate(VIEW_NAMES):
        ours = (metrics.get("per_view") or {}).get(name) or {}
        theirs = (human.get("per_view") or {}).get(name) or {}
        rows.append((f"{i} {name}", str(ours.get("n_reference", 0)),
                     format_percent(ours.get("precision")), format_percent(ours.get("recall")),
                     format_percent(theirs.get("precision")),
                     format_percent(theirs.get("recall"))))  # fmt: skip
    blocks.append(Table(headers, tuple(rows), "Per-view precision and recall (%)."))
    return blocks


def _measurement_table(metrics: Mapping[str, Any], rater: str) -> Table:
    """Both protocols of one rater: reference view (MAE, median, BA) and end to end."""
    headers = ("Measurement", "n", "MAE (mm)", "median AE (mm)", "BA bias (mm)",
               "BA 95% LoA (mm)", "end-to-end coverage (%)", "end-to-end MAE (mm)",
               "end-to-end n")  # fmt: skip
    rows = []
    for code in MEASUREMENT_CODES:
        ref = (metrics.get("measurements") or {}).get(code) or {}
        e2e = (metrics.get("end_to_end") or {}).get(code) or {}
        low, high = (
            format_number(ref.get("ba_loa_low_mm")),
            format_number(ref.get("ba_loa_high_mm")),
        )
        rows.append((code, str(ref.get("n", 0)), format_number(ref.get("mae_mm")),
                     format_number(ref.get("median_mm")), format_number(ref.get("ba_bias_mm")),
                     MISSING if MISSING in (low, high) else f"{low} to {high}",
                     format_percent(e2e.get("coverage")), format_number(e2e.get("mae_mm")),
                     str(e2e.get("n", 0))))  # fmt: skip
    caption = (
        f"{rater} against reader A. Reference-view protocol (paper Table 1): scored on images "
        "whose reference view carries the measurement. End to end: landmarks kept only when "
        "the predicted view has the task; coverage = share of measurements still produced."
    )
    return Table(headers, tuple(rows), caption)


def _measurement_blocks(metrics: Mapping[str, Any]) -> list[Block]:
    human = metrics.get("human")
    blocks: list[Block] = [Heading("Measurements"), _measurement_table(metrics, "Model")]
    if human:
        blocks.append(_measurement_table(human, "Reader B"))
    blocks.append(Heading("Bland–Altman plots", 3))
    for rater, part, name in (("model", metrics, "model"), ("reader B", human, "human")):
        pairs = (part or {}).get("measurement_pairs_mm") or {}
        if any(len(v) for v in pairs.values()):
            png = plots.bland_altman_png(pairs, reader=rater, reference="reader A")
            caption = f"Bland–Altman, {rater} against reader A: bias and 95% limits of agreement."
            blocks.append(Image(f"bland_altman_{name}.png", png, caption))
        elif part:
            blocks.append(Paragraph(f"No measurement pairs for {rater}."))
    return blocks


def _landmark_table(metrics: Mapping[str, Any], rater: str) -> Table:
    headers = ("Landmark", "task", "n", "mean (mm)", "median (mm)", "≤2 mm (%)",
               "≤4 mm (%)", "≤8 mm (%)")  # fmt: skip
    rows = []
    for name in LANDMARKS:
        entry = (metrics.get("landmarks") or {}).get(name) or {}
        rows.append((name, LANDMARK_TASK[name], str(entry.get("n", 0)),
                     format_number(entry.get("mean_mm")), format_number(entry.get("median_mm")),
                     *(format_percent(entry.get(f"within_{t}mm")) for t in (2, 4, 8))))  # fmt: skip
    caption = f"{rater}: radial landmark error against reader A (mm), reference view's task."
    return Table(headers, tuple(rows), caption)


def _landmark_blocks(metrics: Mapping[str, Any]) -> list[Block]:
    blocks: list[Block] = [Heading("Landmarks"), _landmark_table(metrics, "Model")]
    if metrics.get("human"):
        blocks.append(_landmark_table(metrics["human"], "Reader B"))
    errors = metrics.get("landmark_errors_mm") or {}
    if any(len(v) for v in errors.values()):
        png = plots.radial_error_histogram_png(errors, title="Model landmark radial error")
        caption = "Model landmark radial errors (mm), stacked by task; dashed lines 2, 4, 8 mm."
        blocks.append(Image("radial_errors.png", png, caption))
    return blocks


def _training_blocks(history: Sequence[Mapping[str, Any]]) -> list[Block]:
    """Learning curves of the run (validation metric per epoch, both stages)."""
    png = learning_curves_png(history)
    if png is None:
        return []
    caption = (
        "Validation metric after every epoch of each stage (patients outside both the training "
        "and the test split), training loss dashed; the star marks the epoch the stage kept."
    )
    return [Heading("Training"), Image("learning_curves.png", png, caption)]


OUTLIER_MM = FAR_OFF_MM
MAX_OUTLIER_THUMBNAILS = 12


def _outlier_blocks(
    metrics: Mapping[str, Any],
    outliers: Sequence[Outlier],
    cases: Sequence[plots.GalleryCase],
) -> list[Block]:
    """Every image with a landmark off by more than 20 mm: a table and thumbnails."""
    far = metrics.get("landmarks_far_off") or {}
    if not far.get("n"):
        return []
    blocks: list[Block] = [Heading(f"Landmarks off by more than {OUTLIER_MM:g} mm")]
    text = f"{far['n_far']} of {far['n']} landmarks ({100 * far['share']:.1f}%)"
    blocks.append(Paragraph(f"{text} on {len(outliers)} images, against reader A."))
    if not outliers:
        return blocks
    rows = tuple(
        (o.image_id, o.ref_view,
         ", ".join(f"{n} {e:.1f}" for n, e in o.errors_mm.items() if e > OUTLIER_MM))
        for o in outliers
    )  # fmt: skip
    headers = ("image", "reference view", "landmarks off by > 20 mm (error, mm)")
    blocks.append(Table(headers, rows, "Worst first."))
    if cases:
        caption = f"The {len(cases)} worst: prediction orange × (solid), reader A blue ○ (dashed)."
        blocks.append(Image("outliers.png", plots.gallery_png(cases, columns=4), caption))
    return blocks


def _gallery_blocks(gallery: Sequence[plots.GalleryCase]) -> list[Block]:
    if not gallery:
        return []
    caption = (
        "Cases by mean landmark error: prediction orange × joined by solid lines, reader A "
        "blue ○ joined by dashed lines; measurements in mm."
    )
    return [Heading("Gallery"), Image("gallery.png", plots.gallery_png(gallery), caption)]


def _truth_blocks(metrics: Mapping[str, Any]) -> list[Block]:
    raters = (("Model vs truth", metrics.get("truth")),
              ("Reader A vs truth", metrics.get("reader_a_vs_truth")))  # fmt: skip
    raters = tuple((label, part) for label, part in raters if part)
    if not raters:
        return []
    headers = ("Rater", "view accuracy (%)", *(f"{c} MAE (mm)" for c in MEASUREMENT_CODES))
    rows = tuple(
        (label, format_percent(part.get("view_accuracy")), *_mae_cells(part))
        for label, part in raters
    )
    note = (
        "Synthetic data only: the noise-free truth shows how much of the error against "
        "reader A is reader A's own annotation noise."
    )
    return [Heading("Against the noise-free truth"), Table(headers, rows), Paragraph(note)]


def write_report(
    metrics: dict,
    out_dir: Path,
    *,
    gallery: Sequence[plots.GalleryCase] = (),
    title: str = "abdus evaluation",
    history: Sequence[Mapping[str, Any]] = (),
    outliers: Sequence[Outlier] = (),
    outlier_cases: Sequence[plots.GalleryCase] = (),
) -> tuple[Path, Path]:
    """Write ``report.md`` (PNGs beside it) and self-contained ``report.html``; return both.

    ``metrics``: the dict of ``evaluate_predictions`` plus top-level context keys (any may be
    missing); ``gallery``: cases from ``cases.gallery_cases``; ``history``: the run's epoch
    records (learning curves); ``outliers`` / ``outlier_cases``: images with a landmark off
    by more than 20 mm (``cases.find_outliers``) and thumbnails of the worst. All writes are
    atomic.
    """
    blocks: list[Block] = [
        *_context_blocks(metrics),
        *_summary_blocks(metrics),
        *_basis_blocks(metrics),
        *_training_blocks(history),
        *_view_blocks(metrics),
        *_measurement_blocks(metrics),
        *_landmark_blocks(metrics),
        *_outlier_blocks(metrics, outliers, outlier_cases),
        *_gallery_blocks(gallery),
        *_truth_blocks(metrics),
    ]
    return write_document(blocks, Path(out_dir), "report", title)
