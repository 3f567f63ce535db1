"""Evaluate a model on a dataset split against reader A (and reader B, and the truth).

Protocols (paper section 2.3 and the project's evaluation issue):
- *reference view*: a measurement is scored on the images whose reference (reader A) view has
  its task, from the model's heat maps of that task, whatever view the model predicts — the
  paper's Table 1 protocol.
- *end to end*: landmarks are kept only for the *predicted* view's task, as a user meets them;
  a wrong view costs its measurements (``coverage`` < 1) — MAE over the ones still produced.
Distances are measured on the model canvas (isotropic ``model_spacing_mm``), which equals the
source-pixel distance with the source spacing, since resampling scales each axis by its spacing.
Images without pixel spacing enter the view metrics only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from abdus.data.dataset import IGNORE_VIEW, UltrasoundDataset
from abdus.data.heatmaps import HeatmapCodec
from abdus.data.splits import split_records
from abdus.errors import AbdusInputError
from abdus.evaluation.cases import find_outliers, gallery_cases, outlier_cases
from abdus.evaluation.metrics import (
    far_off_share,
    measurement_summary,
    radial_summary,
    view_metrics,
)
from abdus.evaluation.predictions import SplitPredictions
from abdus.evaluation.report import MAX_OUTLIER_THUMBNAILS, OUTLIER_MM, write_report
from abdus.inference.loading import open_predictor
from abdus.inference.predictor import BasePredictor, Predictor
from abdus.io.atomic import atomic_write_json
from abdus.io.manifest import ImageRecord, Manifest, landmark_array, load_manifest
from abdus.modelfile import ModelKind, find_model, open_network
from abdus.models import build_model_from_descriptor, model_descriptor
from abdus.progress import progress
from abdus.taxonomy import LANDMARK_INDEX, LANDMARKS, MEASUREMENTS, TASK_BY_NAME, VIEW_INDEX, VIEWS
from abdus.training.datasets import cache_dir_of
from abdus.training.runlog import read_metrics


def split_dataset(
    predictor: BasePredictor,
    manifest: Manifest,
    records: Sequence[ImageRecord],
    cache_dir: Path | None = None,
) -> UltrasoundDataset:
    """The preprocessed samples of ``records`` as ``predictor`` sees them (no heat-map targets:
    evaluation decodes, it does not train)."""
    codec = getattr(predictor, "codec", None)
    codec = codec or HeatmapCodec(size=tuple(predictor.preprocess.size), sigma_px=2.0)
    dataset = UltrasoundDataset(
        manifest, records, config=predictor.preprocess, codec=codec, cache_dir=cache_dir
    )
    dataset.with_heatmaps = False
    return dataset


def predict_split(
    predictor: BasePredictor,
    manifest: Manifest,
    records: Sequence[ImageRecord],
    *,
    cache_dir: Path | None = None,
    batch_size: int = 8,
) -> SplitPredictions:
    """Run the predictor over cached preprocessed samples of ``records``. A model that does not
    classify views (PBT) is given each image's reference view (reference-view protocol)."""
    dataset = split_dataset(predictor, manifest, records, cache_dir)
    points, views = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in progress(loader, "evaluate", total=len(loader), unit="batch"):
        given = None
        if not predictor.classifies:  # no reference view: a view without a task
            given = [VIEWS[max(int(v), 0)].name for v in batch["view"]]
        outputs = predictor.run_network(
            batch["image"], batch["class_image"], batch["region"], views=given
        )
        points += [o.points_model for o in outputs]
        views += [-1 if o.probabilities is None else int(o.probabilities.argmax()) for o in outputs]
    transforms = [dataset.transform(i) for i in range(len(dataset))]
    spacing = np.array(
        [np.nan if t.model_spacing_mm is None else t.model_spacing_mm for t in transforms]
    )
    reads = _reads(dataset)
    return SplitPredictions(
        records=list(dataset.records),
        points=np.stack(points) if points else np.zeros((0, len(LANDMARKS), 2)),
        views=np.asarray(views, dtype=np.int64),
        spacing=spacing,
        reads=reads,
    )


def _reads(dataset: UltrasoundDataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per reader present in the records: (N, 14, 2) model-px landmarks and (N,) views."""
    transforms = [dataset.transform(i) for i in range(len(dataset))]
    reads = {}
    for reader in ("reference", "second_read", "truth"):
        chosen = [getattr(r, reader) for r in dataset.records]
        if all(c is None for c in chosen):
            continue
        pts = np.stack(
            [t.to_model(landmark_array(c)) for t, c in zip(transforms, chosen, strict=True)]
        )
        vws = np.array([IGNORE_VIEW if c is None else VIEW_INDEX[c.view] for c in chosen])
        reads[reader] = (pts, vws)
    return reads


def _distance_mm(a: np.ndarray, b: np.ndarray, spacing: float) -> float:
    return float(np.hypot(*(a - b)) * spacing)


def compare(
    pred_points: np.ndarray,
    pred_views: np.ndarray,
    ref_points: np.ndarray,
    ref_views: np.ndarray,
    spacing: np.ndarray,
    *,
    classifies: bool = True,
) -> dict[str, Any]:
    """All metrics of one rater (model or reader B) against a reference rater.

    Points (N, 14, 2) model px (NaN = absent), views (N,) (-100 = no label), spacing (N,) mm/px.
    """
    has_ref = ref_views != IGNORE_VIEW
    labelled = has_ref & (pred_views >= 0)
    out: dict[str, Any] = {"n_images": int(has_ref.sum())}
    if classifies and labelled.any():
        out.update(view_metrics(ref_views[labelled], pred_views[labelled]))
        out["n_images"] = int(has_ref.sum())
    reference_pairs: dict[str, list] = defaultdict(list)
    e2e_pairs: dict[str, list] = defaultdict(list)
    e2e_total: dict[str, int] = defaultdict(int)
    radial: dict[str, list] = defaultdict(list)
    for i in np.flatnonzero(has_ref & np.isfinite(spacing)):
        ref_task = VIEWS[ref_views[i]].task
        if ref_task is None:
            continue
        for m in MEASUREMENTS:
            if m.task != ref_task:
                continue
            a, b = (LANDMARK_INDEX[n] for n in m.landmarks)
            if not np.isfinite(ref_points[i, [a, b]]).all():
                continue
            ref_mm = _distance_mm(ref_points[i, a], ref_points[i, b], spacing[i])
            if np.isfinite(pred_points[i, [a, b]]).all():
                pred_mm = _distance_mm(pred_points[i, a], pred_points[i, b], spacing[i])
                reference_pairs[m.code].append((pred_mm, ref_mm))
                e2e_total[m.code] += 1
                same_task = (not classifies) or (
                    pred_views[i] >= 0 and VIEWS[pred_views[i]].task == ref_task
                )
                if same_task:
                    e2e_pairs[m.code].append((pred_mm, ref_mm))
        for name in TASK_BY_NAME[ref_task].landmarks:
            c = LANDMARK_INDEX[name]
            if np.isfinite(ref_points[i, c]).all() and np.isfinite(pred_points[i, c]).all():
                radial[name].append(_distance_mm(pred_points[i, c], ref_points[i, c], spacing[i]))
    summary = measurement_summary(reference_pairs)
    out["measurements"] = summary
    out["measurement_mae_mm"] = {k: v["mae_mm"] for k, v in summary.items()}
    out["measurement_median_mm"] = {k: v["median_mm"] for k, v in summary.items()}
    out["measurement_pairs_mm"] = {k: [list(p) for p in v] for k, v in reference_pairs.items()}
    landmarks = radial_summary(radial)
    out["landmarks"] = landmarks
    out["landmarks_far_off"] = far_off_share(radial)
    out["landmark_radial_error_mm"] = {k: v["mean_mm"] for k, v in landmarks.items()}
    out["landmark_errors_mm"] = {k: list(map(float, v)) for k, v in radial.items()}
    e2e = measurement_summary(e2e_pairs)
    out["end_to_end"] = {
        code: {"coverage": len(e2e_pairs[code]) / e2e_total[code], **e2e.get(code, {})}
        for code in e2e_total
    }
    return out


def evaluate_predictions(preds: SplitPredictions, *, classifies: bool) -> dict[str, Any]:
    """Model vs reader A; reader B vs reader A ("human"); model vs truth (synthetic data)."""
    ref_points, ref_views = preds.reads["reference"]
    metrics = compare(
        preds.points, preds.views, ref_points, ref_views, preds.spacing, classifies=classifies
    )
    if "second_read" in preds.reads:
        b_points, b_views = preds.reads["second_read"]
        both = b_views != IGNORE_VIEW
        b_views_masked = np.where(both, b_views, -1)
        human = compare(
            b_points,
            b_views_masked,
            ref_points,
            np.where(both, ref_views, IGNORE_VIEW),
            preds.spacing,
        )
        metrics["human"] = human
    if "truth" in preds.reads:
        t_points, t_views = preds.reads["truth"]
        metrics["truth"] = compare(
            preds.points, preds.views, t_points, t_views, preds.spacing, classifies=classifies
        )
        metrics["reader_a_vs_truth"] = compare(
            ref_points, ref_views, t_points, t_views, preds.spacing
        )
    return metrics


def pick_device() -> str:
    """The CUDA device when there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def evaluate_run(
    run: str | Path,
    data: str | Path,
    *,
    split: str = "test",
    out: str | Path | None = None,
    device: str | None = None,
    batch_size: int = 8,
    write_report: bool = True,
) -> dict[str, Any]:
    """Evaluate a trained run on ``split`` ("test", "val", "train" or "all") of ``data``.

    The split is the run's own patient-level split (its seed, test and validation fractions),
    so "test" holds only patients the model never saw, not even for model selection. Writes
    ``metrics.json`` (and the report) into ``out`` (default ``<run>/evaluation``) and returns
    the metrics.
    """
    run_dir = Path(run)
    predictor, split_of, meta = open_run(run_dir, device)
    manifest, records = _split(data, split, **split_of)
    cache = cache_dir_of(meta["config"], run_dir) if meta["config"] is not None else None
    preds = predict_split(predictor, manifest, records, cache_dir=cache, batch_size=batch_size)
    metrics = evaluate_predictions(preds, classifies=predictor.classifies)
    metrics.update(
        model=meta["model"],
        preset=meta["preset"],
        run=str(run_dir),
        data=str(data),
        split=split,
        n_patients=len({r.patient_id for r in records}),
    )
    out_dir = Path(out) if out is not None else run_dir / "evaluation"
    atomic_write_json(out_dir / "metrics.json", metrics)
    if write_report:
        _write_report(metrics, out_dir, preds, manifest, predictor, cache)
    return metrics


def open_run(run_dir: Path, device: str | None = None) -> tuple[BasePredictor, dict, dict]:
    """(predictor, its patient split (``test_fraction``, ``val_fraction``, ``seed``), what it
    is: ``model``, ``preset``, ``config`` (the ``TrainConfig`` of a network, else None)) of a
    run folder or model file."""
    ref = find_model(run_dir)
    if ref.kind is ModelKind.PBT:
        predictor = open_predictor(ref.path)
        cfg = predictor.pbt.config
        split_of = {"test_fraction": cfg.test_fraction, "val_fraction": 0.0,
                    "seed": cfg.split_seed}  # fmt: skip
        return predictor, split_of, {"model": "pbt", "preset": "custom", "config": None}
    loaded = open_network(ref.path)
    config = loaded.config
    predictor = Predictor(
        loaded.model, config.preprocess, loaded.codec, device=device or pick_device(),
        model_id=run_dir.name,
    )  # fmt: skip
    split_of = {"test_fraction": config.test_fraction, "val_fraction": config.val_fraction,
                "seed": config.seed}  # fmt: skip
    return predictor, split_of, {"model": config.model, "preset": config.preset, "config": config}


def _split(data: str | Path, split: str, **split_of: Any) -> tuple[Manifest, list[ImageRecord]]:
    """(manifest, the records of a run's own ``split``); AbdusInputError when it is empty."""
    manifest = load_manifest(data)
    records = split_records(manifest, split, **split_of)
    if not records:
        raise AbdusInputError(f"the {split} split has no images", data)
    return manifest, records


class _DatasetImages(Sequence):
    """The model-canvas images of a dataset, loaded only when indexed (for the gallery)."""

    def __init__(self, dataset: UltrasoundDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.dataset[i]["image"][0].numpy()


def _write_report(
    metrics: dict, out_dir: Path, preds: SplitPredictions, manifest: Manifest, predictor, cache
) -> None:
    """report.md / report.html: learning curves, the images with a landmark off by more than
    20 mm, the best, median and worst cases as a gallery."""
    images = _DatasetImages(split_dataset(predictor, manifest, preds.records, cache))
    gallery = gallery_cases(preds, images, k=3)
    outliers = find_outliers(preds, OUTLIER_MM)
    thumbnails = outlier_cases(preds, images, outliers[:MAX_OUTLIER_THUMBNAILS])
    title = f"abdus evaluation: {metrics['model']} on {metrics['split']} split"
    write_report(
        metrics,
        out_dir,
        gallery=gallery,
        title=title,
        history=read_metrics(metrics["run"]),
        outliers=outliers,
        outlier_cases=thumbnails,
    )


def evaluate_untrained(run: str | Path, data: str | Path, *, device: str | None = None) -> dict:
    """The same architecture with freshly initialised weights on the run's test split: the
    floor a trained model must clear (what "learned" means in the demo summary)."""
    run_dir = Path(run)
    trained, split_of, meta = open_run(run_dir, device)
    config = meta["config"]
    torch.manual_seed(config.seed)
    fresh = build_model_from_descriptor(model_descriptor(trained.model)).eval()
    predictor = Predictor(fresh, config.preprocess, trained.codec, device=trained.device)
    manifest, records = _split(data, "test", **split_of)
    preds = predict_split(predictor, manifest, records, cache_dir=cache_dir_of(config, run_dir))
    return evaluate_predictions(preds, classifies=predictor.classifies)
