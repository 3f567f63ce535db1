"""Learning curves of a run: the validation metric of every epoch, per training stage.

Input: the epoch records of ``metrics.jsonl`` (``abdus.training.runlog``): ``stage``, ``epoch``,
``train`` (loss parts), ``val`` (``landmark_error_mm`` in the landmark stage, ``view_accuracy``
in the view stage) and ``best`` (the epoch the stage ended on). Runs of abdus 0.1 scored the
test patients after every epoch, under ``test``; their curves are drawn and labelled so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from abdus.evaluation.plots import PRED_COLOUR, REF_COLOUR, figure_png

# Stage -> (validation metric, axis label, scale of the plotted value).
STAGE_METRICS = {
    "landmarks": ("landmark_error_mm", "mean landmark error (mm)", 1.0),
    "views": ("view_accuracy", "view accuracy (%)", 100.0),
    "refit": ("landmark_error_mm", "mean landmark error (mm)", 1.0),
}


def _held_out(record: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """("validation" | "test", metrics) of an epoch record."""
    if record.get("val") is not None or "test" not in record:
        return "validation", record.get("val") or {}
    return "test", record.get("test") or {}


def stage_curves(history: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list]]:
    """Per stage: epochs, held-out values, train losses, the best epoch and the split's name."""
    curves: dict[str, dict[str, list]] = {}
    for record in history:
        stage = record.get("stage")
        if stage not in STAGE_METRICS:
            continue
        name, _, scale = STAGE_METRICS[stage]
        split, held_out = _held_out(record)
        curve = curves.setdefault(stage, {"epoch": [], "value": [], "loss": [], "best": [],
                                          "split": [split]})  # fmt: skip
        value = held_out.get(name)
        curve["epoch"].append(record["epoch"])
        curve["value"].append(None if value is None else value * scale)
        curve["loss"].append((record.get("train") or {}).get("loss"))
        if record.get("best"):
            curve["best"] = [record["epoch"]]
    return curves


def learning_curves_png(history: Sequence[Mapping[str, Any]]) -> bytes | None:
    """One panel per trained stage: the held-out metric per epoch (the epoch the stage kept is
    starred) with the training loss on a second axis. None when there is nothing to draw."""
    curves = stage_curves(history)
    if not curves:
        return None
    fig = Figure(figsize=(5.2 * len(curves), 3.6), layout="constrained")
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (stage, curve) in zip(axes, curves.items(), strict=True):
        _, label, _ = STAGE_METRICS[stage]
        values = zip(curve["epoch"], curve["value"], strict=True)
        points = [(e, v) for e, v in values if v is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", ms=3, color=PRED_COLOUR,
                    label=f"{curve['split'][0]} {label}")  # fmt: skip
        for epoch in curve["best"]:
            value = dict(points).get(epoch)
            if value is not None:
                ax.plot([epoch], [value], marker="*", ms=14, color="black", ls="none",
                        label=f"kept: epoch {epoch}")  # fmt: skip
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{stage} stage", fontsize=10)
        train = zip(curve["epoch"], curve["loss"], strict=True)
        losses = [(e, v) for e, v in train if v is not None]
        if losses:
            twin = ax.twinx()
            twin.plot(*zip(*losses, strict=True), color=REF_COLOUR, ls="--", lw=1.2,
                      label="training loss")  # fmt: skip
            twin.set_ylabel("training loss", color=REF_COLOUR)
            twin.set_yscale("log")
            handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
            ax.legend(handles=handles, fontsize=8, loc="upper right")
    return figure_png(fig)


__all__ = ["learning_curves_png", "stage_curves"]
