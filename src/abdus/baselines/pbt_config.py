"""The PBT baseline's configuration and presets (``tiny``, ``demo``, ``paper``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from abdus.baselines.pbt_tree import TreeConfig
from abdus.choices import PRESETS
from abdus.data.preprocess import PreprocessConfig

PBT_PRESETS = PRESETS


@dataclass(frozen=True)
class PBTConfig:
    """The whole baseline; lengths in mm (converted with ``preprocess.spacing_mm``).

    Features: Haar-like kinds centred on the candidate at ``haar_units_mm`` plus
    ``random_features`` more at offsets within ``feature_window_mm``; with ``use_position`` the
    candidate's normalised canvas position (x / (W - 1), y / (H - 1)) is two more features, since
    an organ's ends sit in typical places of a standard view (a spatial prior the tree can use).
    Samples: positives within ``positive_radius_mm`` of the landmark, negatives beyond
    ``negative_radius_mm`` (the margin between is left out), ``hard_negatives`` per landmark and
    image in the ring out to ``hard_radius_mm``, ``random_negatives`` per image anywhere.
    Search: coarse grid every ``coarse_stride_mm``, ``top_k`` candidates per landmark, shape
    prior weight ``shape_weight``. Split: ``split_by_patient(test_fraction, split_seed)``.
    """

    preprocess: PreprocessConfig = field(default_factory=lambda: PreprocessConfig(2.0, (128, 128)))
    haar_units_mm: tuple[float, ...] = (4.0, 8.0, 16.0, 32.0)
    random_features: int = 150
    feature_window_mm: float = 40.0
    use_position: bool = True
    positive_radius_mm: float = 3.0
    negative_radius_mm: float = 6.0
    hard_radius_mm: float = 30.0
    hard_negatives: int = 20
    random_negatives: int = 60
    tree: TreeConfig = field(default_factory=TreeConfig)
    coarse_stride_mm: float = 8.0
    top_k: int = 8
    shape_weight: float = 1.0
    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.positive_radius_mm < self.negative_radius_mm < self.hard_radius_mm:
            raise ValueError("need 0 < positive_radius_mm < negative_radius_mm < hard_radius_mm")
        if self.top_k < 1 or self.random_features < 0 or not self.coarse_stride_mm > 0:
            raise ValueError("need top_k >= 1, random_features >= 0, coarse_stride_mm > 0")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")

    def px(self, mm: float) -> float:
        """A length in mm as model px."""
        return mm / self.preprocess.spacing_mm

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), as saved beside the model."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PBTConfig:
        """Inverse of ``to_dict``."""
        values = dict(data)
        pre = values.pop("preprocess")
        values["preprocess"] = PreprocessConfig(pre["spacing_mm"], tuple(pre["size"]))
        values["tree"] = TreeConfig(**values.pop("tree"))
        values["haar_units_mm"] = tuple(values["haar_units_mm"])
        return cls(**values)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def pbt_preset(preset: str) -> PBTConfig:
    """``tiny`` (tests: seconds), ``demo`` (the demo cohort on 2 cores), ``paper`` (the paper's
    0.5 mm / 512 x 512 canvas, more features and depth). ValueError for another name."""
    if preset == "tiny":
        return PBTConfig(
            preprocess=PreprocessConfig(4.0, (64, 64)),
            haar_units_mm=(4.0, 8.0, 16.0),
            random_features=60,
            feature_window_mm=32.0,
            positive_radius_mm=4.0,
            negative_radius_mm=8.0,
            hard_radius_mm=40.0,
            hard_negatives=12,
            random_negatives=40,
            tree=TreeConfig(max_depth=2, estimators=20, min_samples=30),
            top_k=6,
        )
    if preset == "demo":
        return PBTConfig()
    if preset == "paper":
        return PBTConfig(
            preprocess=PreprocessConfig(0.5, (512, 512)),
            haar_units_mm=(2.0, 4.0, 8.0, 16.0, 32.0),
            random_features=400,
            feature_window_mm=50.0,
            hard_negatives=40,
            random_negatives=150,
            tree=TreeConfig(max_depth=4, estimators=80),
            coarse_stride_mm=4.0,
            top_k=12,
        )
    raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PBT_PRESETS)}")
