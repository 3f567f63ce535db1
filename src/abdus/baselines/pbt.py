"""Probabilistic boosting tree (PBT) landmark detector: the classical row of Table 1.

The paper compares its networks with "PBT [12]", the traditional machine-learning approach of
Tu, "Probabilistic Boosting-Tree: Learning Discriminative Models for Classification, Recognition,
and Clustering" (ICCV 2005), which scanner vendors used for calipers before CNNs. The paper gives
no details of its PBT, so this is the textbook one: per landmark, a binary tree whose nodes are
boosted decision-stump classifiers over Haar-like features (``abdus.baselines.haar``) of the
*preprocessed* image (model pixels, ``abdus.data.preprocess``), a coarse-to-fine scan and a
shape prior (``abdus.baselines.pbt_detect``). The view is not classified: the detector runs the
task of the record's reference view (or a view the caller gives).

The tree itself (Tu 2005, Fig. 2: node learners, the soft split and the posterior recursion) is
``abdus.baselines.pbt_tree``; this module holds the detector's config, training and model file.

The model file ``model.pbt`` is a joblib pickle (the trees hold scikit-learn estimators): load
only files you trust, as with any pickle. It records its format, version, the preprocessing,
the taxonomy, the feature bank, the trees, the shape priors and training statistics.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from abdus.baselines.haar import (
    CandidateFeatures,
    HaarFeatureBank,
    build_feature_bank,
    gain_normalised,
    quantile_edges,
)
from abdus.baselines.pbt_config import PBTConfig, pbt_preset
from abdus.baselines.pbt_detect import (
    PBTModel,
    TaskPrior,
    fit_task_prior,
    preprocess_for_detection,
    task_points_mm,
    training_positions,
)
from abdus.baselines.pbt_file import MODEL_FILE, load_pbt, save_pbt
from abdus.baselines.pbt_tree import (  # noqa: F401  (re-exported: tests import them here)
    PBTNode,
    ProbabilisticBoostingTree,
    TreeConfig,
    learner_threads,
    make_node_learner,
)
from abdus.data.dataset import read_record_image
from abdus.data.splits import split_by_patient
from abdus.errors import AbdusInputError
from abdus.io.atomic import atomic_write_json
from abdus.io.manifest import (
    MANIFEST_NAME,
    ImageRecord,
    Manifest,
    landmark_array,
    load_manifest,
)
from abdus.progress import progress
from abdus.taxonomy import (
    LANDMARK_INDEX,
    LANDMARKS,
    TASKS,
    LandmarkTask,
    task_of_view,
)

MIN_POSITIVES = 10  # fewer positive (or negative) samples than this: no tree for the landmark
MAX_EDGE_ROWS = 50_000  # samples used to find the shared feature quantisation


# --------------------------------------------------------------------------- configuration


# --------------------------------------------------------------------------- training


def _record_task(record: ImageRecord) -> LandmarkTask | None:
    """The reference view's task when the reference read has at least one of its landmarks."""
    task = task_of_view(record.view)
    if task is None or not any(lm in record.reference.landmarks for lm in task.landmarks):
        return None
    return task


@dataclass
class TrainingSamples:
    """Samples of every landmark, the features stored once (an image's sampled positions serve
    all landmarks of its task).

    ``features``: (M, F) float32. ``rows`` / ``labels``: landmark -> (n,) indices into
    ``features`` and (n,) bool (True = within the positive radius). ``points``: landmark ->
    (m, 2) model px of its reference points, one per image.
    """

    features: np.ndarray
    rows: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    points: dict[str, np.ndarray]

    def of(self, landmark: str) -> tuple[np.ndarray, np.ndarray]:
        """(X (n, F), y (n,)) of one landmark."""
        return self.features[self.rows[landmark]], self.labels[landmark]


def collect_samples(
    manifest: Manifest,
    records: Sequence[ImageRecord],
    bank: HaarFeatureBank,
    config: PBTConfig,
    *,
    seed: int = 0,
) -> TrainingSamples:
    """Training samples of every landmark from the records' reference reads.

    Each image is read and preprocessed once; positions and distances come from
    ``training_positions``. Labels: positive within ``positive_radius_mm``, negative beyond
    ``negative_radius_mm``; positions in the margin between are left out for that landmark.
    """
    r_pos, r_neg = config.px(config.positive_radius_mm), config.px(config.negative_radius_mm)
    features: list[np.ndarray] = []
    rows: dict[str, list[np.ndarray]] = {}
    labels: dict[str, list[np.ndarray]] = {}
    points_px: dict[str, list[np.ndarray]] = {}
    offset = 0
    images = progress(records, "PBT features", total=len(records), unit="image")
    for index, record in enumerate(images):
        task = _record_task(record)
        if task is None:
            continue
        pre = preprocess_for_detection(read_record_image(manifest, record), config.preprocess)
        channels = [LANDMARK_INDEX[lm] for lm in task.landmarks]
        points = pre.transform.to_model(landmark_array(record.reference)[channels])  # (L, 2)
        positions, distances = training_positions(
            points,
            pre.pixels.shape,
            positive_radius_px=r_pos,
            negative_radius_px=r_neg,
            hard_radius_px=config.px(config.hard_radius_mm),
            hard_per_landmark=config.hard_negatives,
            random_count=config.random_negatives,
            rng=np.random.default_rng([seed, index]),
        )
        pixels = gain_normalised(pre.pixels, pre.mask)
        features.append(
            CandidateFeatures(pixels, bank, use_position=config.use_position)(positions)
        )
        for i, lm in enumerate(task.landmarks):
            if not np.isfinite(points[i]).all():
                continue
            positive = distances[:, i] <= r_pos
            keep = np.flatnonzero(positive | (distances[:, i] > r_neg))
            rows.setdefault(lm, []).append(offset + keep)
            labels.setdefault(lm, []).append(positive[keep])
            points_px.setdefault(lm, []).append(points[i])
        offset += len(positions)
    return TrainingSamples(
        features=np.concatenate(features),
        rows={lm: np.concatenate(r) for lm, r in rows.items()},
        labels={lm: np.concatenate(y) for lm, y in labels.items()},
        points={lm: np.stack(p) for lm, p in points_px.items()},
    )


def fit_priors(records: Sequence[ImageRecord]) -> dict[str, TaskPrior]:
    """Shape priors of every task from the records' reference reads (mm; records without a
    spacing give no distances)."""
    priors: dict[str, TaskPrior] = {}
    for task in TASKS:
        channels = [LANDMARK_INDEX[lm] for lm in task.landmarks]
        reads = [r for r in records if task_of_view(r.view) is task]
        if not reads:
            continue
        points = np.stack(
            [task_points_mm(landmark_array(r.reference)[channels], r.spacing_mm) for r in reads]
        )  # (n, L, 2) mm
        prior = fit_task_prior(task, points)
        if prior is not None:
            priors[task.name] = prior
    return priors


def fit_trees(
    samples: TrainingSamples, edges: np.ndarray, config: PBTConfig, *, seed: int = 0
) -> tuple[dict[str, ProbabilisticBoostingTree], dict[str, dict[str, Any]]]:
    """One tree per landmark with at least ``MIN_POSITIVES`` positive and negative samples,
    all on the feature quantisation ``edges``.

    Returns the trees and per-landmark statistics (samples, positives, depth, classifiers,
    seconds, or why it was skipped).
    """
    trees: dict[str, ProbabilisticBoostingTree] = {}
    stats: dict[str, dict[str, Any]] = {}
    trees_to_fit = progress(LANDMARKS, "PBT trees", total=len(LANDMARKS), unit="landmark")
    for channel, lm in enumerate(trees_to_fit):
        if lm not in samples.rows:
            continue
        X, y = samples.of(lm)
        stats[lm] = {"samples": len(y), "positives": int(y.sum())}
        if y.sum() < MIN_POSITIVES or (~y).sum() < MIN_POSITIVES:
            stats[lm]["skipped"] = f"fewer than {MIN_POSITIVES} positive or negative samples"
            continue
        start = time.perf_counter()
        tree = ProbabilisticBoostingTree.fit(
            X, y, config.tree, seed=seed * 1000 + channel, edges=edges
        )
        trees[lm] = tree
        stats[lm].update(
            depth=tree.depth,
            classifiers=tree.num_classifiers,
            fit_seconds=round(time.perf_counter() - start, 3),
        )
    return trees, stats


def train_pbt(
    data: str | Path,
    out: str | Path,
    *,
    preset: str = "demo",
    seed: int = 0,
    config: PBTConfig | None = None,
) -> Path:
    """Train the PBT baseline on a dataset's training split; return the run folder ``out``.

    ``data``: a dataset folder or its manifest. ``config`` replaces ``preset`` when given.
    Writes ``out/model.pbt`` (``save_pbt``), ``out/config.json`` (the resolved config) and
    ``out/train_summary.json``. The split is ``split_by_patient(test_fraction, split_seed)``,
    the same rule as the networks'. AbdusInputError when no training image has landmarks.
    """
    config = config if config is not None else pbt_preset(preset)
    manifest = load_manifest(data)
    source = manifest.root / MANIFEST_NAME
    train = split_by_patient(
        manifest.records, test_fraction=config.test_fraction, seed=config.split_seed
    )["train"]
    usable = [r for r in train if _record_task(r) is not None]
    if not usable:
        raise AbdusInputError(
            f"no training image ({len(train)} after the patient split) has landmarks of a view "
            "with a landmark task; the PBT baseline learns only from landmarks",
            source,
        )
    start = time.perf_counter()
    bank = build_feature_bank(
        sorted({max(1, round(config.px(u))) for u in config.haar_units_mm}),
        random_features=config.random_features,
        window_px=round(config.px(config.feature_window_mm)),
        seed=seed,
    )
    samples = collect_samples(manifest, usable, bank, config, seed=seed)
    feature_seconds = time.perf_counter() - start
    # One quantisation for all trees (so detection quantises each feature matrix once), from
    # at most MAX_EDGE_ROWS evenly spaced samples.
    step = max(1, len(samples.features) // MAX_EDGE_ROWS)
    edges = quantile_edges(samples.features[::step], config.tree.bins)
    trees, stats = fit_trees(samples, edges, config, seed=seed)
    if not trees:
        raise AbdusInputError("no landmark had enough training samples for a tree", source)
    missing = [t.name for t in TASKS if not all(lm in trees for lm in t.landmarks)]
    training = {
        "dataset": str(source),
        "train_images": len(usable),
        "train_patients": len({r.patient_id for r in usable}),
        "features": bank.num_features + (2 if config.use_position else 0),
        "feature_seconds": round(feature_seconds, 3),
        "fit_seconds": round(time.perf_counter() - start - feature_seconds, 3),
        "landmarks": stats,
        "untrained_tasks": missing,
        "mean_position_px": {lm: p.mean(axis=0).tolist() for lm, p in samples.points.items()},
        "seed": seed,
    }
    model = PBTModel(config, bank, trees, fit_priors(usable), edges, training)
    out = Path(out)
    save_pbt(model, out / MODEL_FILE)
    atomic_write_json(out / "config.json", config.to_dict())
    atomic_write_json(out / "train_summary.json", training)
    return out


__all__: Sequence[str] = (
    "PBTConfig",
    "PBTModel",
    "ProbabilisticBoostingTree",
    "TreeConfig",
    "load_pbt",
    "pbt_preset",
    "save_pbt",
    "train_pbt",
)
