"""Tables of the evaluation report: a small table model, Table 1 and the Fig. 3 panel layout.

A ``Table`` holds display strings, rendered as Markdown here and as HTML by the report's
template (``abdus.evaluation.document``), so the Markdown and HTML reports can never disagree.
Table 1 follows the paper's layout (Xu et al., MICCAI 2018, Table 1): rows Human, PBT, SFCN,
MFCN, MGCN, MGCN_R; columns the 7 measurements, mean absolute error in mm against reader A. Each
of our rows is printed beside the paper's row of the same name, labelled as the paper's,
because the paper's numbers come from its own 187,219 images and are not re-measured here.
Missing rows or cells are shown as "—".
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from abdus.io.atomic import atomic_write_text
from abdus.taxonomy import MEASUREMENT_CODES, NUM_VIEWS, PAPER_TABLE1_MM

MISSING = "—"
TABLE1_ROWS = ("Human", "PBT", "SFCN", "MFCN", "MGCN", "MGCN_R")
PAPER_SOURCE = "paper (Xu et al. 2018)"
OURS_SOURCE = "ours"
TABLE1_CAPTION = (
    "Table 1: mean absolute measurement error (mm) against reader A, reference-view protocol "
    "(each measurement scored on the images whose reference view carries it). Rows marked "
    f"'{PAPER_SOURCE}' are the numbers published in Xu et al., MICCAI 2018, Table 1, on the "
    "paper's own data; they are printed for orientation and are not re-measured here. "
    "Human = reader B against reader A. n = images each number rests on."
)


def format_number(value: Any, digits: int = 2, *, scale: float = 1.0) -> str:
    """``value * scale`` with ``digits`` decimals, or "—" for None, NaN or a missing value."""
    if value is None or isinstance(value, bool):
        return MISSING
    try:
        number = float(value) * scale
    except (TypeError, ValueError):
        return MISSING
    return f"{number:.{digits}f}" if math.isfinite(number) else MISSING


def format_percent(fraction: Any, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage string without the sign ("93.4"), or "—"."""
    return format_number(fraction, digits, scale=100.0)


@dataclass(frozen=True)
class Table:
    """Display strings: ``headers`` (C,) and ``rows`` (R, C); headers carry units (mm, %)."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.headers):
                raise ValueError(f"row {row} has {len(row)} cells, expected {len(self.headers)}")

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table, the caption as a paragraph above it."""

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

        lines = [self.caption, ""] if self.caption else []
        lines += [line(self.headers), "|" + "|".join("---" for _ in self.headers) + "|"]
        lines += [line(row) for row in self.rows]
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- Table 1


def table1_cell(metrics: Mapping[str, Any] | None, code: str) -> tuple[float | None, int]:
    """(MAE mm or None, n images) of one measurement in a metrics dict (reference protocol)."""
    entry = ((metrics or {}).get("measurements") or {}).get(code) or {}
    mae = entry.get("mae_mm")
    n = int(entry.get("n") or 0)
    if mae is None or not math.isfinite(float(mae)) or n == 0:
        return None, n
    return float(mae), n


def _row_names(rows: Mapping[str, Any]) -> list[str]:
    """The paper's rows in its order, then any other rows we were given."""
    return list(TABLE1_ROWS) + [name for name in rows if name not in TABLE1_ROWS]


def table1_table(rows: Mapping[str, Mapping[str, Any] | None]) -> Table:
    """Table 1: each method twice, ours (MAE mm with n) then the paper's, "—" where missing."""
    headers = ("Method", "Source", *(f"{code} (mm)" for code in MEASUREMENT_CODES))
    lines: list[tuple[str, ...]] = []
    for name in _row_names(rows):
        ours = []
        for code in MEASUREMENT_CODES:
            mae, n = table1_cell(rows.get(name), code)
            ours.append(MISSING if mae is None else f"{mae:.3f} (n={n})")
        lines.append((name, OURS_SOURCE, *ours))
        if name in PAPER_TABLE1_MM:
            paper = PAPER_TABLE1_MM[name]
            lines.append((name, PAPER_SOURCE, *(f"{paper[c]:.3f}" for c in MEASUREMENT_CODES)))
    return Table(headers, tuple(lines), TABLE1_CAPTION)


def counts_line(rows: Mapping[str, Mapping[str, Any] | None]) -> str:
    """The images / patients each number rests on, one entry per row (Table 1's footnote)."""
    parts = []
    for name in _row_names(rows):
        metrics = rows.get(name)
        if not metrics:
            parts.append(f"{name}: not run")
            continue
        images = metrics.get("n_images")
        patients = metrics.get("n_patients")
        split = metrics.get("split")
        text = f"{name}: {MISSING if images is None else images} images"
        text += f" / {MISSING if patients is None else patients} patients"
        parts.append(text + (f" ({split} split)" if split else ""))
    return "Numbers rest on (images / patients): " + "; ".join(parts) + "."


def table1_markdown(rows: Mapping[str, Mapping[str, Any] | None]) -> str:
    """Table 1 as Markdown: caption, table, and the counts line."""
    return table1_table(rows).to_markdown() + "\n" + counts_line(rows) + "\n"


def table1_csv(rows: Mapping[str, Mapping[str, Any] | None]) -> str:
    """Table 1 as CSV: method, source, then ``<code>_mae_mm`` and ``<code>_n`` per measurement.

    Missing values are empty fields (what CSV readers take as missing); the paper's rows have
    no n (the paper gives none per cell).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["method", "source"]
        + [f"{c}_mae_mm" for c in MEASUREMENT_CODES]
        + [f"{c}_n" for c in MEASUREMENT_CODES]
    )
    for name in _row_names(rows):
        cells = [table1_cell(rows.get(name), code) for code in MEASUREMENT_CODES]
        maes = ["" if mae is None else f"{mae:.6f}" for mae, _ in cells]
        writer.writerow([name, OURS_SOURCE, *maes, *(n for _, n in cells)])
        if name in PAPER_TABLE1_MM:
            paper = PAPER_TABLE1_MM[name]
            values = [f"{paper[c]:.3f}" for c in MEASUREMENT_CODES]
            writer.writerow([name, PAPER_SOURCE, *values, *([""] * len(MEASUREMENT_CODES))])
    return buffer.getvalue()


def write_table1(
    rows: Mapping[str, Mapping[str, Any] | None], out_dir: Path, *, stem: str = "table1"
) -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.csv`` into ``out_dir`` atomically; return both paths."""
    md_path, csv_path = Path(out_dir) / f"{stem}.md", Path(out_dir) / f"{stem}.csv"
    atomic_write_text(md_path, table1_markdown(rows))
    atomic_write_text(csv_path, table1_csv(rows))
    return md_path, csv_path


# ---------------------------------------------------------------------------------- Fig. 3


@dataclass(frozen=True)
class ConfusionPanel:
    """One confusion matrix of Fig. 3: ``counts`` (11, 11), rows = reference view, or None."""

    label: str
    counts: np.ndarray | None
    accuracy: float | None
    n_images: int


def confusion_panel(label: str, metrics: Mapping[str, Any] | None) -> ConfusionPanel:
    """The panel of one metrics dict; ``counts`` None when it holds no confusion matrix."""
    metrics = metrics or {}
    raw = metrics.get("confusion_matrix")
    counts = None
    if raw is not None:
        counts = np.asarray(raw, dtype=np.int64)
        if counts.shape != (NUM_VIEWS, NUM_VIEWS):
            raise ValueError(f"{label}: confusion matrix shape {counts.shape}, expected 11x11")
    accuracy = metrics.get("view_accuracy")
    n = int(counts.sum()) if counts is not None else 0
    return ConfusionPanel(label, counts, None if accuracy is None else float(accuracy), n)


def fig3_panels(confusion: Mapping[str, Mapping[str, Any] | None]) -> list[ConfusionPanel]:
    """Fig. 3's panels in the given order (the paper: STL, MTL, Human)."""
    return [confusion_panel(label, metrics) for label, metrics in confusion.items()]
