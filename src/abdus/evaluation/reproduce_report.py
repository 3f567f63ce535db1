"""The ``reproduce`` command's report: Table 1, Fig. 3 and model sizes (``reproduce.md`` +
``reproduce.html``, ``table1.md`` / ``table1.csv``, ``fig3_confusion.png``).

Built as blocks and rendered by ``abdus.evaluation.document`` like the evaluation report; every
file goes through ``abdus.io.atomic``. Sizes are parameters (millions), MB (fp32) and ms per
image as measured by ``abdus.evaluation.ablation``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from abdus.evaluation import plots
from abdus.evaluation.document import Block, Bullets, Heading, Image, Paragraph, write_document
from abdus.evaluation.tables import (
    PAPER_SOURCE,
    Table,
    counts_line,
    fig3_panels,
    format_number,
    table1_table,
    write_table1,
)

# Paper section 2.3: "The model parameters to handle all the tasks are reduced from 539MB to
# 100MB" (STL classifier + single-task landmark networks vs the one MTL network).
PAPER_SIZE_SINGLE_TASK_MB = 539.0
PAPER_SIZE_MGCN_R_MB = 100.0


def _size_cells(entry: Mapping[str, Any] | None) -> tuple[str, str, str]:
    """(parameters in millions, size MB, inference ms) display strings of one sizes entry."""
    entry = entry or {}
    return (
        format_number(entry.get("parameters"), 2, scale=1e-6),
        format_number(entry.get("size_mb"), 1),
        format_number(entry.get("inference_ms"), 1),
    )


def _summed(entries: Sequence[Mapping[str, Any] | None], key: str) -> float | None:
    values = [(e or {}).get(key) for e in entries]
    return None if any(v is None for v in values) else float(sum(values))


def _size_blocks(sizes: Mapping[str, Mapping[str, Any]]) -> list[Block]:
    headers = ("Variant", "parameters (M)", "size (MB, fp32)", "inference (ms / image)")
    rows = tuple((name, *_size_cells(entry)) for name, entry in sizes.items())
    blocks: list[Block] = [
        Heading("Model size and inference time"),
        Table(headers, rows, "Per variant, as measured in this run."),
    ]
    single = [sizes.get("stl"), sizes.get("sfcn")]
    combined = {k: _summed(single, k) for k in ("parameters", "size_mb", "inference_ms")}
    compare_rows = (
        ("STL + 5×SFCN (classifier + one network per task)", *_size_cells(combined),
         f"{PAPER_SIZE_SINGLE_TASK_MB:.0f}"),
        ("MGCN_R (one network, all tasks)", *_size_cells(sizes.get("mgcn_r")),
         f"{PAPER_SIZE_MGCN_R_MB:.0f}"),
    )  # fmt: skip
    caption = (
        "Single-task system against the one multi-task network. STL + 5×SFCN sums the 'stl' "
        "and 'sfcn' entries (the 'sfcn' entry holds all five task networks; the time is the sum "
        f"of both measured times). Last column: {PAPER_SOURCE}, section 2.3."
    )
    headers = (*headers[:4], "paper size (MB)")
    blocks.append(Table(headers, compare_rows, caption))
    ours, mtl = combined["size_mb"], (sizes.get("mgcn_r") or {}).get("size_mb")
    if ours and mtl:
        blocks.append(Paragraph(
            f"MGCN_R is {100 * mtl / ours:.0f}% of the single-task system's size here; the paper "
            f"reports {100 * PAPER_SIZE_MGCN_R_MB / PAPER_SIZE_SINGLE_TASK_MB:.0f}%."
        ))  # fmt: skip
    return blocks


def write_reproduce_report(
    rows: dict[str, dict],
    out_dir: Path,
    *,
    confusion: dict[str, dict],
    sizes: dict[str, dict],
    context: dict,
) -> tuple[Path, Path]:
    """The ``reproduce`` command's report: Table 1, Fig. 3 and model sizes; returns (md, html).

    ``rows``: Table 1 row name (Human, PBT, SFCN, MFCN, MGCN, MGCN_R, or others) -> metrics
    dict (``n_images``/``n_patients``/``split`` used for the counts line). ``confusion``:
    panel label (the paper: STL, MTL, Human) -> metrics dict with ``confusion_matrix``.
    ``sizes``: variant -> {"parameters": int, "size_mb": float, "inference_ms": float}, any
    may be missing; "sfcn" describes all five task networks together. ``context``: shown as
    "key: value" lines (preset, data, device, ...). Writes ``table1.md``, ``table1.csv``,
    ``fig3_confusion.png``, ``reproduce.md`` and ``reproduce.html`` atomically.
    """
    out_dir = Path(out_dir)
    write_table1(rows, out_dir)
    blocks: list[Block] = [Bullets(tuple(f"{k}: {v}" for k, v in context.items()))]
    blocks += [Heading("Table 1: measurement errors"), table1_table(rows)]
    blocks.append(Paragraph(counts_line(rows)))
    blocks.append(Heading("Fig. 3: view classification"))
    panels = fig3_panels(confusion)
    if panels:
        caption = (
            "Confusion matrices against reader A with overall accuracy (rows: reference view, "
            "columns: predicted; colour = share of the row, numbers = images)."
        )
        blocks.append(Image("fig3_confusion.png", plots.confusion_png(panels), caption))
    else:
        blocks.append(Paragraph("No view classifiers were evaluated."))
    if sizes:
        blocks += _size_blocks(sizes)
    return write_document(blocks, out_dir, "reproduce", "abdus reproduction of Xu et al. 2018")
