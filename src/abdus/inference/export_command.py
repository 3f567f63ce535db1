"""What ``abdus export`` runs: ONNX export of a run (fp32, or static INT8 calibrated on a
dataset) and, for INT8, what it costs in accuracy against PyTorch fp32 on the validation
patients (the test split when the run has none), which choose the backend.

The pieces: ``abdus.inference.export`` (tracing, metadata, the files beside a run),
``abdus.inference.quantize`` (INT8) and ``abdus.inference.compare`` (``int8_cost``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from abdus.errors import AbdusInputError
from abdus.inference.backends import read_onnx_info
from abdus.inference.compare import int8_cost
from abdus.inference.export import attach_metadata, export_loaded
from abdus.inference.quantize import CALIBRATION_METHODS, calibration_feeds
from abdus.modelfile import open_network


def export_onnx(
    run_or_model: str | Path,
    out: str | Path,
    *,
    int8: bool = False,
    calibration: str | Path | None = None,
    calibration_images: int = 32,
    calibration_method: str = "percentile",
    check_images: int = 200,
) -> dict[str, Any]:
    """Export a run folder / ``.pt`` to ONNX; with ``int8`` static INT8 calibrated on DATA.

    ``calibration_images``: preprocessed train-split images used for the activation ranges;
    ``calibration_method``: "percentile" (default), "minmax" or "entropy"; ``check_images``:
    with ``int8``, up to this many validation-split images of DATA (test split when the run has
    no validation patients) on which the INT8 file is compared with PyTorch fp32
    (``int8_cost``: view accuracy and caliper change in mm; 0 skips it).

    Returns the report: ``file``, ``precision``, ``size_mb`` (MiB), ``max_abs_diff`` per output
    (|ONNX Runtime - PyTorch fp32| on random inputs; ``max_abs_diff_real`` on preprocessed
    calibration images when given), ``fp32_size_mb``, ``outputs``, ``opset``, ``seconds``, and
    for INT8 ``int8_cost`` (see ``compare_predictors``).
    """
    if int8 and calibration is None:
        raise AbdusInputError(
            "--int8 needs calibration images: give --data DATA (a dataset folder with a manifest)"
        )
    if calibration_method not in CALIBRATION_METHODS:
        valid = ", ".join(CALIBRATION_METHODS)
        raise AbdusInputError(f"unknown calibration method {calibration_method!r}; valid: {valid}")
    if calibration_images < 1:
        raise AbdusInputError(f"--calibration-images must be >= 1, got {calibration_images}")
    loaded = open_network(run_or_model)
    feeds = (
        calibration_feeds(calibration, loaded, calibration_images)
        if calibration is not None
        else []
    )
    report = export_loaded(
        loaded, out, int8=int8, calibration_feeds_=feeds, calibration_method=calibration_method
    )
    if int8 and check_images > 0:
        # The check decides whether `--backend auto` uses this file: a choice, so it is made
        # on the validation patients (the test split when the run has none).
        split = "val" if loaded.config.val_fraction > 0 else "test"
        try:
            cost = int8_cost(run_or_model, out, calibration, split=split, limit=check_images)
        except AbdusInputError as err:  # e.g. a dataset without that split: the file stands
            cost = {"skipped": str(err)}
        report["int8_cost"] = cost
        if "skipped" not in cost:
            record_check(Path(out), cost)
    return report


def record_check(path: Path, cost: dict[str, Any]) -> None:
    """Store the INT8 file's measured cost against fp32 in its own metadata (atomically), where
    ``--backend auto`` reads it (``abdus.inference.auto``)."""
    info = read_onnx_info(path)
    if info is None:
        return
    keys = [
        "split",
        "n_images",
        "n_measurements",
        "accuracy_change_points",
        "view_agreement",
        "mean_measurement_change_mm",
        "median_measurement_change_mm",
        "share_over_2mm",
    ]
    check = {k: cost.get(k) for k in keys}
    quantization = {**info.quantization, "check": check}
    attach_metadata(path, dataclasses.replace(info, quantization=quantization))
