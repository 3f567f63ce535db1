"""The PBT baseline: the tree (Tu 2005), the search and shape priors, and a tiny end-to-end run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from abdus.baselines.haar import quantile_edges, quantise
from abdus.baselines.pbt import (
    PBTConfig,
    PBTNode,
    ProbabilisticBoostingTree,
    TreeConfig,
    learner_threads,
    load_pbt,
    make_node_learner,
    pbt_preset,
    train_pbt,
)
from abdus.baselines.pbt_detect import (
    CrossPrior,
    PairPrior,
    TaskPrior,
    fit_task_prior,
    preprocess_for_detection,
    refine_in_windows,
    search_candidates,
    select_landmarks,
    top_separated,
    training_positions,
    window_positions,
)
from abdus.data.dataset import read_record_image
from abdus.data.splits import split_by_patient
from abdus.errors import AbdusInputError
from abdus.io.manifest import Manifest, Read, save_manifest
from abdus.taxonomy import TASK_BY_NAME, landmarks_of_view

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pbt_cohort import SHAPE, write_cohort

# --------------------------------------------------------------------------- the tree


class FixedClassifier:
    """q(+1 | x) = a column of x (or a constant): node probabilities known by construction."""

    def __init__(self, column: int | None = None, constant: float = 0.5) -> None:
        self.column, self.constant = column, constant

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        q = X[:, self.column] if self.column is not None else np.full(len(X), self.constant)
        return np.stack([1 - q, q], axis=1)


def test_posterior_is_tu_recursion_on_a_fixed_tree() -> None:
    # root q = x0; right child q = x1 with leaves 0.9 (right) / 0.2 (left); left: leaf 0.1.
    right = PBTNode(0.0, 0, FixedClassifier(1), left=PBTNode(0.2, 0), right=PBTNode(0.9, 0))
    root = PBTNode(0.5, 0, FixedClassifier(0), left=PBTNode(0.1, 0), right=right)
    X = np.array([[0.8, 0.3], [0.1, 0.9], [0.5, 0.5], [1.0, 1.0], [0.0, 0.0]])
    # By hand, for x = (0.8, 0.3): 0.8 * (0.3 * 0.9 + 0.7 * 0.2) + 0.2 * 0.1 = 0.348.
    expected = X[:, 0] * (X[:, 1] * 0.9 + (1 - X[:, 1]) * 0.2) + (1 - X[:, 0]) * 0.1
    got = ProbabilisticBoostingTree(root).posterior(X)
    np.testing.assert_allclose(got, expected)
    assert got[0] == pytest.approx(0.348)
    assert ProbabilisticBoostingTree(root).depth == 2
    assert ProbabilisticBoostingTree(root).num_classifiers == 2


def _two_blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """XOR-like: positives in quadrant I and in the far corner of quadrant III. No additive
    model f(x0) + g(x1) (what boosted stumps are) separates them; a tree of them can."""
    X = np.random.default_rng(seed).uniform(-1, 1, (n, 2))
    y = ((X[:, 0] > 0) & (X[:, 1] > 0)) | ((X[:, 0] < -0.3) & (X[:, 1] < -0.3))
    return X, y


@pytest.mark.parametrize("learner", ["hist_gb", "adaboost"])
def test_a_depth_two_tree_separates_what_one_boosted_classifier_cannot(learner: str) -> None:
    X, y = _two_blobs(3000, 0)
    X_test, y_test = _two_blobs(3000, 1)
    config = TreeConfig(max_depth=2, estimators=30, learner=learner)
    balanced = np.where(y, 0.5 / y.sum(), 0.5 / (~y).sum()) * len(y)
    edges = quantile_edges(X, config.bins)  # the same inputs the tree's nodes see
    with learner_threads(1):
        single = make_node_learner(config, 0).fit(quantise(X, edges), y, sample_weight=balanced)
        q = single.predict_proba(quantise(X_test, edges))[:, 1]
    tree = ProbabilisticBoostingTree.fit(X, y, config, seed=0)
    p = tree.posterior(X_test)
    assert balanced_accuracy_score(y_test, q > 0.5) < 0.8
    assert roc_auc_score(y_test, q) < 0.9
    assert balanced_accuracy_score(y_test, p > 0.5) > 0.95
    assert roc_auc_score(y_test, p) > 0.98
    assert ((p >= 0) & (p <= 1)).all()


def _leaves(node: PBTNode) -> list[PBTNode]:
    if node.classifier is None:
        return [node]
    return _leaves(node.left) + _leaves(node.right)


def test_soft_margin_sends_uncertain_samples_to_both_children() -> None:
    X, y = _two_blobs(2000, 2)
    hard = ProbabilisticBoostingTree.fit(X, y, TreeConfig(max_depth=1, epsilon=0.0)).root
    soft = ProbabilisticBoostingTree.fit(X, y, TreeConfig(max_depth=1, epsilon=0.3)).root
    assert hard.left.count + hard.right.count == 2000  # epsilon 0: a partition
    assert soft.left.count + soft.right.count > 2000  # uncertain samples counted twice


def test_leaf_value_is_the_weighted_share_of_positives_it_received() -> None:
    X, y = _two_blobs(1500, 3)
    config = TreeConfig(max_depth=1, epsilon=0.2)
    tree = ProbabilisticBoostingTree.fit(X, y, config)
    with learner_threads(1):
        q = tree.root.classifier.predict_proba(quantise(X, tree.edges))[:, 1]
    w = np.where(y, 0.5 / y.sum(), 0.5 / (~y).sum())
    right = q >= 0.5 - 0.2
    w_right = np.where(right & (q <= 0.7), w * q, w)[right]
    assert tree.root.right.positive == pytest.approx(w_right[y[right]].sum() / w_right.sum())
    assert tree.root.positive == pytest.approx(0.5)  # balanced start


def test_pure_or_tiny_nodes_are_leaves() -> None:
    X = np.random.default_rng(0).normal(size=(200, 3))
    all_positive = ProbabilisticBoostingTree.fit(X, np.ones(200, bool), TreeConfig())
    assert all_positive.num_classifiers == 0
    np.testing.assert_allclose(all_positive.posterior(X[:5]), 1.0)
    few = ProbabilisticBoostingTree.fit(X[:20], np.arange(20) % 2 == 0, TreeConfig(min_samples=40))
    assert few.num_classifiers == 0
    np.testing.assert_allclose(few.posterior(X[:5]), 0.5)


def test_configs_refuse_unknown_choices() -> None:
    with pytest.raises(ValueError, match="valid"):
        TreeConfig(learner="random_forest")
    with pytest.raises(ValueError, match="valid presets"):
        pbt_preset("huge")
    with pytest.raises(ValueError, match="radius"):
        PBTConfig(positive_radius_mm=8.0, negative_radius_mm=4.0)
    for preset in ("tiny", "demo", "paper"):
        config = pbt_preset(preset)
        assert PBTConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# --------------------------------------------------------------------------- search and priors


def test_training_positions_cover_the_landmark_and_stay_on_the_canvas() -> None:
    landmarks = np.array([[10.3, 20.6], [np.nan, np.nan], [62.8, 1.2]])
    positions, distances = training_positions(
        landmarks, (48, 64), positive_radius_px=1.5, negative_radius_px=3.0,
        hard_radius_px=10.0, hard_per_landmark=30, random_count=40,
        rng=np.random.default_rng(0),
    )  # fmt: skip
    assert ((positions >= 0) & (positions < [64, 48])).all()
    assert np.isnan(distances[:, 1]).all()
    want = np.linalg.norm(positions - landmarks[0], axis=1)
    np.testing.assert_allclose(distances[:, 0], want)
    # Every integer position within the positive radius of the first landmark is sampled.
    near = {
        (x, y) for x in range(8, 14) for y in range(18, 24) if np.hypot(x - 10.3, y - 20.6) <= 1.5
    }
    assert near <= {tuple(p) for p in positions}
    hard = (distances[:, 0] > 3.0) & (distances[:, 0] <= 10.6)  # ring, rounded to pixels
    assert hard.sum() >= 30


def test_top_separated_keeps_maxima_apart() -> None:
    positions = np.array([[0, 0], [1, 0], [10, 0], [11, 0], [20, 0]])
    scores = np.array([5.0, 4.9, 3.0, 2.9, 1.0])
    np.testing.assert_array_equal(top_separated(positions, scores, 3, 2.0), [0, 2, 4])
    np.testing.assert_array_equal(top_separated(positions, scores, 9, 30.0), [0])


def test_refine_in_windows_gives_the_weighted_centre() -> None:
    probs = np.zeros((1, 5, 5))
    probs[0, 2, 3] = 1.0  # best at (x, y) = (+1, 0) from the centre
    probs[0, 2, 4] = 1.0 / 3  # pulls x towards +1.25
    offsets, best = refine_in_windows(probs.reshape(1, -1), 2)
    np.testing.assert_allclose(offsets[0], [1.25, 0.0], atol=1e-9)
    assert best[0] == 1.0
    assert window_positions(np.array([[5, 7]]), 1).shape == (1, 9, 2)


def test_search_finds_subpixel_peaks_of_each_landmark() -> None:
    targets = np.array([[13.4, 30.2], [50.7, 8.6], [0.6, 38.5]])  # the last by a corner

    def features(positions: np.ndarray) -> np.ndarray:
        return positions.astype(np.float64)

    def peak(target: np.ndarray):
        return lambda X: np.exp(-0.5 * np.sum((X - target) ** 2, axis=1) / 1.5**2)

    candidates, log_post = search_candidates(
        features, [peak(t) for t in targets], (40, 64), stride_px=4, top_k=3
    )
    assert candidates.shape == (3, 3, 2) and log_post.shape == (3, 3)
    np.testing.assert_allclose(candidates[:, 0], targets, atol=0.5)  # within half a pixel
    assert (log_post[:, 0] >= log_post[:, 1:].max(axis=1)).all()


def test_pair_prior_prefers_the_plausible_length() -> None:
    task = TASK_BY_NAME["kidney_long"]
    # Landmark 1 has two candidates; the better-scored one is 10 mm from landmark 2's only
    # candidate, the other 100 mm: the learned length (100 +- 5 mm) must win.
    candidates = np.array([[[0.0, 0.0], [90.0, 0.0]], [[100.0, 0.0], [100.0, 0.0]]])
    log_post = np.log([[0.6, 0.9], [0.9, 0.9]])
    prior = TaskPrior({"KL_LA": PairPrior(100.0, 5.0, 10)}, None)
    chosen = select_landmarks(task, candidates, log_post, prior, spacing_mm=1.0)
    np.testing.assert_array_equal(chosen, [[0.0, 0.0], [100.0, 0.0]])
    no_mm = select_landmarks(task, candidates, log_post, prior, spacing_mm=None)
    np.testing.assert_array_equal(no_mm, [[90.0, 0.0], [100.0, 0.0]])  # posterior alone


def test_cross_prior_picks_a_centred_perpendicular_short_axis() -> None:
    task = TASK_BY_NAME["kidney_trans"]  # kt_la_1, kt_la_2, kt_sa_1, kt_sa_2
    la = [[[0.0, 0.0]] * 2, [[60.0, 0.0]] * 2]
    sa_1 = [[30.0, -15.0], [5.0, -15.0]]  # centred vs near one end, first scores lower
    sa_2 = [[30.0, 15.0], [5.0, 15.0]]
    candidates = np.array([*la, sa_1, sa_2])
    log_post = np.log([[0.9, 0.9], [0.9, 0.9], [0.5, 0.9], [0.5, 0.9]])
    pairs = {"KT_LA": PairPrior(60.0, 5.0, 9), "KT_SA": PairPrior(30.0, 5.0, 9)}
    prior = TaskPrior(pairs, CrossPrior(cos_sd=0.1, offset_sd=0.1, count=9))
    chosen = select_landmarks(task, candidates, log_post, prior, spacing_mm=1.0)
    np.testing.assert_array_equal(chosen[2:], [[30.0, -15.0], [30.0, 15.0]])
    without = select_landmarks(task, candidates, log_post, TaskPrior(pairs, None), spacing_mm=1.0)
    np.testing.assert_array_equal(without[2:], [[5.0, -15.0], [5.0, 15.0]])


def test_fit_task_prior_learns_lengths_and_cross_geometry() -> None:
    task = TASK_BY_NAME["kidney_trans"]
    rng = np.random.default_rng(0)
    la_len, sa_len = rng.normal(60, 10, 50), np.full(50, 30.0)
    points = np.zeros((50, 4, 2))
    points[:, 1, 0] = la_len
    points[:, 2] = np.stack([la_len / 2, -sa_len / 2], 1)
    points[:, 3] = np.stack([la_len / 2, sa_len / 2], 1)
    points[0] = np.nan  # an image without these landmarks is ignored
    prior = fit_task_prior(task, points)
    assert prior.pairs["KT_LA"].mean_mm == pytest.approx(la_len[1:].mean())
    assert prior.pairs["KT_LA"].sd_mm == pytest.approx(la_len[1:].std())
    assert prior.pairs["KT_SA"].mean_mm == pytest.approx(30.0)
    assert prior.pairs["KT_SA"].sd_mm == pytest.approx(3.0)  # floored at 10 % of the mean
    assert prior.pairs["KT_SA"].count == 49
    assert prior.cross.cos_sd == pytest.approx(0.05) and prior.cross.offset_sd == pytest.approx(
        0.05
    )
    assert fit_task_prior(task, np.full((3, 4, 2), np.nan)) is None


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def trained(organ_cohort: Manifest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_pbt(organ_cohort.root, tmp_path_factory.mktemp("pbt_run"), preset="tiny")


def test_run_folder_describes_itself(trained: Path) -> None:
    assert {p.name for p in trained.iterdir()} >= {"model.pbt", "config.json", "train_summary.json"}
    summary = json.loads((trained / "train_summary.json").read_text())
    assert summary["untrained_tasks"] == ["liver_long", "spleen_long", "spleen_trans"]
    assert summary["train_patients"] == 24  # 30 patients, 20 % held out
    model = load_pbt(trained / "model.pbt")
    assert model.trained_tasks == ("kidney_long", "kidney_trans")
    assert model.config == pbt_preset("tiny")
    assert model.priors["kidney_long"].pairs["KL_LA"].mean_mm == pytest.approx(82, abs=8)


def test_detection_beats_random_and_mean_position(trained: Path, organ_cohort: Manifest) -> None:
    """Mean radial error (mm) on held-out patients. Measured: PBT ~4.5 mm, mean position
    ~17 mm, uniform random ~65 mm."""
    model = load_pbt(trained)
    test = split_by_patient(organ_cohort.records, test_fraction=0.2, seed=0)["test"]
    rng = np.random.default_rng(0)
    errors: dict[str, list[float]] = {"pbt": [], "random": [], "mean": []}
    for record in test:
        image = read_record_image(organ_cohort, record)
        predicted = model.detect(image, record.view)
        assert set(predicted) == set(landmarks_of_view(record.view))
        pre = preprocess_for_detection(image, model.config.preprocess)
        for name, truth in record.reference.landmarks.items():
            mean_px = np.asarray(model.training["mean_position_px"][name])
            guesses = {
                "pbt": predicted[name],
                "random": rng.uniform([0, 0], [SHAPE[1] - 1, SHAPE[0] - 1]),
                "mean": pre.transform.to_source(mean_px),
            }
            for key, guess in guesses.items():  # spacing is 1 mm: px = mm
                errors[key].append(float(np.linalg.norm(np.asarray(guess) - truth)))
    mean = {key: np.mean(v) for key, v in errors.items()}
    assert mean["pbt"] < 8.0
    assert mean["pbt"] < 0.6 * mean["mean"] < 0.6 * mean["random"]


def test_saved_model_detects_the_same_after_loading(trained: Path, organ_cohort: Manifest) -> None:
    model = load_pbt(trained)
    record = organ_cohort.records[0]
    first = model.predict_record(organ_cohort, record)
    again = load_pbt(trained).predict_record(organ_cohort, record)
    assert first == again
    assert model.predict_record(organ_cohort, record, view="others") == {}
    with pytest.raises(ValueError, match="valid views"):
        model.predict_record(organ_cohort, record, view="heart")


def test_a_task_without_training_landmarks_is_refused_by_name(tmp_path: Path) -> None:
    cohort = write_cohort(tmp_path / "data", 6, seed=3, transverse=False)
    run = train_pbt(cohort.root, tmp_path / "run", preset="tiny")
    model = load_pbt(run)
    image = read_record_image(cohort, cohort.records[0])
    assert set(model.detect(image, "kidney_left_long")) == {"kl_la_1", "kl_la_2"}
    with pytest.raises(AbdusInputError, match=r"'kidney_trans'.*kt_la_1") as info:
        model.detect(image, "kidney_right_trans")
    assert str(run / "model.pbt") in str(info.value)


def test_no_training_landmarks_at_all_is_a_clean_error(tmp_path: Path) -> None:
    cohort = write_cohort(tmp_path, 4, seed=5, transverse=False)
    unlabelled = [
        type(r)(id=r.id, file=r.file, patient_id=r.patient_id, reference=Read("others"))
        for r in cohort.records
    ]
    save_manifest(Manifest(tmp_path, unlabelled), tmp_path)
    with pytest.raises(AbdusInputError, match="no training image") as info:
        train_pbt(tmp_path, tmp_path / "run", preset="tiny")
    assert "manifest.json" in str(info.value)


def test_bad_model_files_are_clean_errors(tmp_path: Path) -> None:
    with pytest.raises(AbdusInputError, match="not found"):
        load_pbt(tmp_path)
    (tmp_path / "model.pbt").write_bytes(b"not a pickle at all")
    with pytest.raises(AbdusInputError, match="not a readable abdus PBT model"):
        load_pbt(tmp_path)
    import joblib

    joblib.dump({"format": "something-else"}, tmp_path / "model.pbt")
    with pytest.raises(AbdusInputError, match="not an abdus PBT model"):
        load_pbt(tmp_path / "model.pbt")
