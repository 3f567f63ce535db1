"""The probabilistic boosting tree itself (Tu 2005): its config, node learners and recursion.

A node trains a boosted classifier q(y | x) on its weighted samples; samples with q(+1 | x) >
1/2 + epsilon go to the right child, those with q(-1 | x) > 1/2 + epsilon to the left, the
uncertain ones to both (weighted by q(+1 | x) and q(-1 | x)); weights are renormalised per
child. A node becomes a leaf at ``max_depth``, when nearly pure, or with too few samples; a leaf
holds its empirical (weighted) class distribution. The posterior is the recursion
p(y | x) = q(+1 | x) p_right(y | x) + q(-1 | x) p_left(y | x), not an average.

The landmark detector built on these trees (features, training, the model file) is
``abdus.baselines.pbt``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from abdus.baselines.haar import quantile_edges, quantise

NODE_LEARNERS = ("hist_gb", "adaboost")


@dataclass(frozen=True)
class TreeConfig:
    """One probabilistic boosting tree (Tu 2005).

    ``max_depth``: levels of boosted classifiers (1 = a single node learner above two leaves).
    ``epsilon``: soft margin; samples with |q(+1|x) - 1/2| <= epsilon train both children.
    ``min_samples`` / ``min_class``: fewer samples (or fewer of either class) make a leaf.
    ``purity``: a node whose weighted positive share is within ``purity`` of 0 or 1 is a leaf.
    ``learner``: the node's boosted stumps, ``"hist_gb"`` (scikit-learn's
    HistGradientBoostingClassifier with 2-leaf trees: fast on binned features) or
    ``"adaboost"`` (AdaBoostClassifier with depth-1 trees, Tu's choice; slower).
    ``estimators``: boosting rounds per node. ``learning_rate``: shrinkage per round.
    ``bins``: features are quantised to this many levels (quantiles of the training samples,
    one quantisation shared by all trees of a model), so stumps choose among ``bins - 1``
    thresholds per feature (Viola & Jones also search a finite set); it also keeps
    scikit-learn's weighted binning (slow: a weighted percentile per threshold) out of the way.
    ``threads``: OpenMP threads of the node learners. The per-node problems are small, so
    thread start-up dominates: on a busy 2-core machine one thread fitted a depth-2 tree on
    3000 x 230 samples in 0.5 s, two threads in 22 s (measured).
    """

    max_depth: int = 3
    epsilon: float = 0.1
    min_samples: int = 40
    min_class: int = 5
    purity: float = 0.01
    learner: str = "hist_gb"
    estimators: int = 40
    learning_rate: float = 0.3
    bins: int = 64
    threads: int = 1

    def __post_init__(self) -> None:
        if self.learner not in NODE_LEARNERS:
            raise ValueError(f"unknown node learner {self.learner!r}; valid: {NODE_LEARNERS}")
        if self.max_depth < 1 or self.estimators < 1 or not 0.0 <= self.epsilon < 0.5:
            raise ValueError("need max_depth >= 1, estimators >= 1 and 0 <= epsilon < 0.5")
        if not 2 <= self.bins <= 255:
            raise ValueError(f"bins must be in 2..255, got {self.bins}")


# --------------------------------------------------------------------------- the tree


class AdaBoostStumps:
    """AdaBoost (SAMME) over decision stumps with Tu's node posterior.

    Tu 2005 (after Friedman, Hastie & Tibshirani 2000) takes q(+1 | x) = exp(2F) / (1 + exp(2F))
    for the additive model F = sum_t alpha_t h_t(x), alpha_t = 1/2 log((1 - err) / err). SAMME's
    weights are twice those, so q = sigmoid(H) with H = sum_t alpha_samme_t h_t. scikit-learn's
    own ``predict_proba`` divides H by the sum of the weights, squashing q into [0.27, 0.73], which
    would send most samples to both children.
    """

    def __init__(self, estimators: int, learning_rate: float, seed: int) -> None:
        from sklearn.ensemble import AdaBoostClassifier
        from sklearn.tree import DecisionTreeClassifier

        self.model = AdaBoostClassifier(
            DecisionTreeClassifier(max_depth=1),
            n_estimators=estimators,
            learning_rate=learning_rate,
            random_state=seed,
        )

    def fit(
        self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> AdaBoostStumps:
        """Fit on X (N, F), binary y (N,)."""
        self.model.fit(X, y, sample_weight=sample_weight)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, 2): q(-1 | x), q(+1 | x)."""
        H = self.model.decision_function(X) * self.model.estimator_weights_.sum()
        q = 1.0 / (1.0 + np.exp(-np.clip(H, -50.0, 50.0)))
        return np.stack([1.0 - q, q], axis=1)


def make_node_learner(config: TreeConfig, seed: int) -> Any:
    """A fresh boosted decision-stump classifier for one tree node (scikit-learn)."""
    if config.learner == "adaboost":
        return AdaBoostStumps(config.estimators, config.learning_rate, seed)
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=config.estimators,
        learning_rate=config.learning_rate,
        max_leaf_nodes=2,  # stumps: each round splits one feature once, as in Tu's AdaBoost
        early_stopping=False,
        random_state=seed,
    )


@dataclass
class PBTNode:
    """One tree node. ``positive``: weighted share of positives of its training samples (the
    leaf's empirical p(+1)); ``count``: how many samples reached it. Internal nodes hold a
    ``classifier`` with ``predict_proba`` (column 1 = q(+1 | x)), ``right`` (the q(+1) side)
    and ``left``."""

    positive: float
    count: int
    classifier: Any = None
    left: PBTNode | None = None
    right: PBTNode | None = None


@functools.cache
def _thread_controller() -> Any:
    import sklearn.ensemble  # noqa: F401  (loads scikit-learn's OpenMP runtime first)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def learner_threads(threads: int) -> Any:
    """Context limiting OpenMP (the node learners') to ``threads`` threads; cheap to enter."""
    return _thread_controller().limit(limits=threads, user_api="openmp")


class ProbabilisticBoostingTree:
    """A trained PBT over feature vectors: ``posterior(X)`` is p(+1 | x) by Tu's recursion.

    ``edges`` (F, bins - 1): the feature quantisation the node learners were trained on, or None
    when they see the raw features.
    """

    def __init__(self, root: PBTNode, edges: np.ndarray | None = None, threads: int = 1) -> None:
        self.root = root
        self.edges = edges
        self.threads = threads

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        y: np.ndarray,
        config: TreeConfig = TreeConfig(),
        *,
        sample_weight: np.ndarray | None = None,
        seed: int = 0,
        edges: np.ndarray | None = None,
    ) -> ProbabilisticBoostingTree:
        """Train on X (N, F) and binary labels y (N,) (True / 1 = landmark).

        Without ``sample_weight`` the two classes start with equal total weight (so the
        posterior is that of a balanced problem: positions are ranked, not calibrated).
        ``edges`` (F, bins - 1): a quantisation shared with other trees (default: the quantiles
        of X), so one ``quantise`` of a feature matrix serves every tree (``posterior_codes``).
        """
        y = np.asarray(y).astype(bool)
        if sample_weight is None:
            n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
            sample_weight = np.where(y, 0.5 / n_pos, 0.5 / n_neg)
        seeds = iter(np.random.SeedSequence(seed).generate_state(2**config.max_depth))
        edges = quantile_edges(X, config.bins) if edges is None else edges
        with learner_threads(config.threads):
            root = _grow(quantise(X, edges), y, np.asarray(sample_weight, float), 0, config, seeds)
        return cls(root, edges, config.threads)

    def posterior(self, X: np.ndarray) -> np.ndarray:
        """p(+1 | x) for X (N, F): (N,) float64 in [0, 1]."""
        X = np.asarray(X)
        return self.posterior_codes(X if self.edges is None else quantise(X, self.edges))

    def posterior_codes(self, codes: np.ndarray) -> np.ndarray:
        """p(+1 | x) from already quantised features ``quantise(X, self.edges)``: (N,)."""
        with learner_threads(self.threads):
            return _posterior(self.root, codes)

    @property
    def depth(self) -> int:
        """Levels of classifiers actually grown."""
        return _depth(self.root)

    @property
    def num_classifiers(self) -> int:
        """Internal nodes (boosted classifiers) in the tree."""
        return _count(self.root)


def _grow(
    X: np.ndarray, y: np.ndarray, w: np.ndarray, depth: int, config: TreeConfig, seeds: Any
) -> PBTNode:
    w = w / w.sum()
    node = PBTNode(positive=float(w[y].sum()), count=len(y))
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if (
        depth >= config.max_depth
        or len(y) < config.min_samples
        or min(n_pos, n_neg) < config.min_class
        or not config.purity < node.positive < 1.0 - config.purity
    ):
        return node  # leaf: its empirical distribution
    node.classifier = make_node_learner(config, int(next(seeds)))
    node.classifier.fit(X, y, sample_weight=w * len(w))  # mean weight 1 for the learner
    q = node.classifier.predict_proba(X)[:, 1]
    right, left = q >= 0.5 - config.epsilon, q <= 0.5 + config.epsilon
    both = right & left  # uncertain: trains both children, weighted by q(+1) and q(-1)
    w_right, w_left = np.where(both, w * q, w), np.where(both, w * (1.0 - q), w)
    node.right = _child(X, y, w_right, right, node, depth, config, seeds)
    node.left = _child(X, y, w_left, left, node, depth, config, seeds)
    return node


def _child(
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    keep: np.ndarray,
    parent: PBTNode,
    depth: int,
    config: TreeConfig,
    seeds: Any,
) -> PBTNode:
    """The child grown on the ``keep`` samples (weights ``w``), or a leaf with the parent's
    distribution when no sample reaches it."""
    if not keep.any() or w[keep].sum() <= 0:
        return PBTNode(positive=parent.positive, count=0)  # nothing reached it: parent's p
    return _grow(X[keep], y[keep], w[keep], depth + 1, config, seeds)


def _posterior(node: PBTNode, X: np.ndarray) -> np.ndarray:
    if node.classifier is None:
        return np.full(len(X), node.positive)
    q = node.classifier.predict_proba(X)[:, 1]
    return q * _posterior(node.right, X) + (1.0 - q) * _posterior(node.left, X)


def _depth(node: PBTNode | None) -> int:
    if node is None or node.classifier is None:
        return 0
    return 1 + max(_depth(node.left), _depth(node.right))


def _count(node: PBTNode | None) -> int:
    if node is None or node.classifier is None:
        return 0
    return 1 + _count(node.left) + _count(node.right)
