"""The model's outputs over a split, with every reader's read, on the model canvas."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from abdus.io.manifest import ImageRecord


@dataclass
class SplitPredictions:
    """Model outputs for every image of a split, on the model canvas.

    ``points`` (N, 14, 2) model px; ``views`` (N,) predicted class (-1 when the model has no
    classifier); ``spacing`` (N,) mm per model px (NaN = unknown); ``reads``: per reader name
    ("reference", "second_read", "truth") the (N, 14, 2) model-px landmarks (NaN = absent)
    and (N,) view indices (-100 = no read).
    """

    records: list[ImageRecord]
    points: np.ndarray
    views: np.ndarray
    spacing: np.ndarray
    reads: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
