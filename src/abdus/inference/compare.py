"""How far a fast backend's outputs move from the fp32 reference, on a dataset split.

``compare_predictors`` runs two predictors on the same preprocessed images of a split and
reports the view accuracy of each against reader A, their agreement, and the change of every
caliper of the reader-A view's task (paper Table 1 protocol) in mm and in model px.
``int8_cost`` applies it to a run and its INT8 ``.onnx``; ``abdus benchmark`` to every fast
backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from abdus.data.dataset import IGNORE_VIEW, UltrasoundDataset
from abdus.data.splits import split_records
from abdus.errors import AbdusInputError
from abdus.inference.predictor import LOW_LANDMARK_CONFIDENCE, Predictor
from abdus.io.manifest import load_manifest
from abdus.modelfile import open_network
from abdus.taxonomy import LANDMARK_INDEX, MEASUREMENTS, TASK_BY_NAME, VIEW_NAMES, VIEWS


@dataclass
class SplitOutputs:
    """One predictor's outputs on a split: ``views`` (N,) predicted class, ``points``
    (N, 14, 2) model px (NaN where not decoded), plus the shared reference labels
    ``ref_views`` (N,) (-100 none) and ``spacing`` (N,) mm per model px (NaN unknown);
    ``confidence`` (N, 14) each landmark's peak / amplitude, as ``predict`` reports it (None:
    not collected)."""

    views: np.ndarray
    points: np.ndarray
    ref_views: np.ndarray
    spacing: np.ndarray
    confidence: np.ndarray | None = None


def collect_outputs(
    predictors: Sequence[Predictor],
    data: str | Path,
    *,
    split: str = "test",
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
    limit: int | None = None,
    batch_size: int = 8,
) -> list[SplitOutputs]:
    """Run every predictor on the same preprocessed images of ``split`` (the run's patient
    split: ``test_fraction``, ``val_fraction``, ``seed``); decode each image's reader-A view
    task (the predicted view's where it has none)."""
    manifest = load_manifest(data)
    records = split_records(
        manifest, split, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed
    )
    records = records[:limit] if limit else records
    if not records:
        raise AbdusInputError(f"the {split} split has no images", data)
    first = predictors[0]
    dataset = UltrasoundDataset(manifest, records, config=first.preprocess, codec=first.codec)
    ref_views = np.asarray(dataset.views)
    spacing = np.array(
        [dataset.transform(i).model_spacing_mm or np.nan for i in range(len(records))]
    )
    views_of = [VIEW_NAMES[v] if v != IGNORE_VIEW else None for v in ref_views]
    found: list[tuple[list, list, list]] = [([], [], []) for _ in predictors]
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        index = batch["index"].tolist()
        for predictor, (views, points, confidence) in zip(predictors, found, strict=True):
            outs = predictor.run_network(
                batch["image"], batch["class_image"], batch["region"],
                views=[views_of[i] for i in index], task_only=True,
            )  # fmt: skip
            views += [
                -1 if o.probabilities is None else int(o.probabilities.argmax()) for o in outs
            ]
            points += [o.points_model for o in outs]
            confidence += [o.confidence for o in outs]
    return [
        SplitOutputs(np.asarray(v), np.stack(p).astype(np.float64), ref_views, spacing, np.stack(c))
        for v, p, c in found
    ]


def summarise_change(reference: SplitOutputs, candidate: SplitOutputs) -> dict[str, Any]:
    """Accuracy and caliper change of ``candidate`` against ``reference`` (see
    ``export.compare_predictors`` for the fields)."""
    labelled = reference.ref_views >= 0
    out: dict[str, Any] = {"n_images": len(reference.views)}
    if labelled.any() and (reference.views >= 0).any():
        acc_ref = float((reference.views[labelled] == reference.ref_views[labelled]).mean())
        acc_cand = float((candidate.views[labelled] == reference.ref_views[labelled]).mean())
        out.update(
            view_accuracy_reference=acc_ref,
            view_accuracy_candidate=acc_cand,
            accuracy_change_points=100.0 * (acc_cand - acc_ref),
            view_agreement=float((reference.views == candidate.views).mean()),
        )
    changes, shifts, confident = _caliper_changes(reference, candidate, labelled)
    every = [v for values in changes.values() for v in values]  # (mm, px) pairs
    mm_changes = [mm for mm, _ in every]
    out.update(
        n_measurements=len(every),
        mean_measurement_change_mm=float(np.mean(mm_changes)) if every else None,
        max_measurement_change_mm=float(np.max(mm_changes)) if every else None,
        # The mean is dominated by the few calipers whose peak jumps to another maximum of an
        # ambiguous heat map; the median and the share above 2 mm tell the two apart.
        median_measurement_change_mm=float(np.median(mm_changes)) if every else None,
        p90_measurement_change_mm=float(np.percentile(mm_changes, 90)) if every else None,
        share_over_2mm=float(np.mean(np.asarray(mm_changes) > 2.0)) if every else None,
        mean_measurement_change_px=float(np.mean([px for _, px in every])) if every else None,
        measurement_change_mm={
            k: float(np.mean([mm for mm, _ in v])) for k, v in changes.items() if v
        },
        mean_landmark_shift_mm=float(np.mean([mm for mm, _ in shifts])) if shifts else None,
        mean_landmark_shift_px=float(np.mean([px for _, px in shifts])) if shifts else None,
    )
    if reference.confidence is not None:
        # The calipers whose two landmarks the reference does not flag as low confidence
        # (``predict``'s warning): on a trained model the jumps between competing maxima sit
        # mostly on flagged landmarks, i.e. where fp32's answer is ambiguous already.
        kept = [mm for mm, ok in zip(mm_changes, confident, strict=True) if ok]
        out.update(
            n_confident_measurements=len(kept),
            confident_mean_measurement_change_mm=float(np.mean(kept)) if kept else None,
            confident_share_over_2mm=float(np.mean(np.asarray(kept) > 2.0)) if kept else None,
        )
    return out


def _caliper_changes(
    reference: SplitOutputs, candidate: SplitOutputs, labelled: np.ndarray
) -> tuple[dict[str, list[tuple[float, float]]], list[tuple[float, float]], list[bool]]:
    """Per measurement code, |candidate - reference| caliper length, and per landmark the
    shift, each as (mm, model px), on the reader-A view's task of each measurable image; and,
    per caliper in the order of the codes' lists, whether the reference's two landmarks are at
    or above ``LOW_LANDMARK_CONFIDENCE`` (True when no confidence was collected)."""
    changes: dict[str, list[tuple[float, float]]] = {m.code: [] for m in MEASUREMENTS}
    shifts: list[tuple[float, float]] = []
    confident: dict[str, list[bool]] = {m.code: [] for m in MEASUREMENTS}
    conf = reference.confidence
    for i in np.flatnonzero(labelled & np.isfinite(reference.spacing)):
        task = VIEWS[reference.ref_views[i]].task
        if task is None:
            continue
        mm = reference.spacing[i]  # mm per model px
        for name in TASK_BY_NAME[task].landmarks:
            c = LANDMARK_INDEX[name]
            px = float(np.hypot(*(candidate.points[i, c] - reference.points[i, c])))
            shifts.append((px * mm, px))
        for m in (m for m in MEASUREMENTS if m.task == task):
            a, b = (LANDMARK_INDEX[n] for n in m.landmarks)
            ref = np.hypot(*(reference.points[i, a] - reference.points[i, b]))
            cand = np.hypot(*(candidate.points[i, a] - candidate.points[i, b]))
            px = float(abs(cand - ref))
            changes[m.code].append((px * mm, px))
            sure = conf is None or min(conf[i, a], conf[i, b]) >= LOW_LANDMARK_CONFIDENCE
            confident[m.code].append(bool(sure))
    return changes, shifts, [ok for values in confident.values() for ok in values]


def int8_cost(
    model: str | Path,
    int8_model: str | Path,
    data: str | Path,
    *,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """View accuracy and measurement change (mm) of an INT8 ``.onnx`` against fp32 PyTorch.

    ``model``: the run folder / ``.pt`` (fp32 reference); ``int8_model``: its INT8 ``.onnx``;
    ``data``: a dataset folder; ``split``: the run's patient-level split to use (its seed,
    test and validation fractions). See ``compare_predictors`` for the fields.
    """
    reference = Predictor.from_run(model, backend="torch")
    candidate = Predictor.from_run(int8_model, backend="onnx")
    config = open_network(model).config
    report = compare_predictors(
        reference,
        candidate,
        data,
        split=split,
        test_fraction=config.test_fraction,
        val_fraction=config.val_fraction,
        seed=config.seed,
        limit=limit,
        batch_size=batch_size,
    )
    return {"reference": "torch-fp32", "candidate": candidate.backend.name, **report}


def compare_predictors(
    reference: Predictor, candidate: Predictor, data: str | Path, **images: Any
) -> dict[str, Any]:
    """How far ``candidate``'s outputs are from ``reference``'s on a dataset split.

    Both predictors see the same preprocessed images, chosen by ``images`` (``split``,
    ``test_fraction``, ``seed``, ``limit``, ``batch_size``: see ``collect_outputs``).

    Returns ``n_images``; view accuracy of each against reader A (``view_accuracy_reference``
    / ``_candidate``, fraction) and ``accuracy_change_points`` (candidate - reference,
    percentage points); ``view_agreement`` (fraction of images with the same predicted view);
    on images whose reader-A view has a landmark task and whose spacing is known, the calipers
    of that task (paper Table 1 protocol) from both: ``n_measurements``,
    ``mean_measurement_change_mm`` / ``max_measurement_change_mm`` / ``median_`` / ``p90_``
    (|candidate - reference| in mm), ``share_over_2mm`` (fraction of calipers that moved more
    than 2 mm), per code, and ``mean_landmark_shift_mm``; ``*_px`` the same in model pixels
    (comparable across presets: at the paper's 0.5 mm per px, 0.4 px is 0.2 mm); and the same
    mean and share over the calipers whose two reference landmarks ``predict`` does not flag as
    low confidence (``n_confident_measurements``, ``confident_mean_measurement_change_mm``,
    ``confident_share_over_2mm``).
    """
    if reference.preprocess != candidate.preprocess:
        raise ValueError("the two predictors preprocess differently; they cannot be compared")
    outputs = collect_outputs([reference, candidate], data, **images)
    return {"split": images.get("split", "test"), **summarise_change(*outputs)}


def format_cost(cost: dict[str, Any]) -> str:
    """One line for a ``compare_predictors`` / ``int8_cost`` report (or why it was skipped)."""
    if "skipped" in cost:
        return f"not measured ({cost['skipped']})"
    parts = [f"{cost.get('n_images', 0)} {cost.get('split', 'test')}-split images"]
    if cost.get("accuracy_change_points") is not None:
        parts.append(f"view accuracy {cost['accuracy_change_points']:+.2f} points")
    if cost.get("mean_measurement_change_mm") is not None:
        parts.append(
            f"caliper change mean {cost['mean_measurement_change_mm']:.3f} mm "
            f"({cost['mean_measurement_change_px']:.3f} model px), median "
            f"{cost['median_measurement_change_mm']:.3f} mm, "
            f"{100 * cost['share_over_2mm']:.1f}% over 2 mm (n={cost['n_measurements']})"
        )
    if cost.get("confident_mean_measurement_change_mm") is not None:
        parts.append(
            "calipers without a low-confidence landmark: mean "
            f"{cost['confident_mean_measurement_change_mm']:.3f} mm, "
            f"{100 * cost['confident_share_over_2mm']:.1f}% over 2 mm "
            f"(n={cost['n_confident_measurements']})"
        )
    return "; ".join(parts)
