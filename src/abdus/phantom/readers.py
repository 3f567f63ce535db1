"""Simulated human readers: view labels and caliper landmarks with realistic disagreement.

Two readers annotate a synthetic cohort, as in the paper (section 2.1): reader **A** is the
reference standard ("one expert with more ultrasound experience", section 2.3) and reader **B**
is the second, less experienced expert whose duplicate reads give the inter-observer row of
Table 1 and the human confusion matrix of Fig. 3.

The model is a pure function of the noise-free truth (true view, true landmarks in screen px,
pixel spacing in mm, the image bounds) and a ``numpy.random.Generator``; it never looks at pixels,
so it can be calibrated on thousands of reads in milliseconds.

View labels
    A reader keeps the true view with probability ``1 - view_error_rate``; otherwise it picks a
    neighbouring view: ``others`` (weight 0.40), the other orientation of the same organ, long vs
    trans (0.35), or the other side (0.25: left vs right liver lobe; 0.10 for the kidneys, whose
    side is told by context only). A true ``others`` image is mislabelled as any standard view.
    With the default rates (A 9 %, B 12 %) the A-B view agreement is about 0.80.

Landmark rule (keeps every read consistent with manifest validation)
    A reader annotates the landmarks of the task of the view *they labelled*. They are placed
    from the true anatomy when that task equals the true view's task (e.g. a right kidney long
    view labelled ``kidney_left_long`` still gets ``kl_la_1/2``), and no landmarks are placed
    otherwise (a kidney long view labelled ``kidney_right_trans`` or ``others`` gets none).

Landmark error, in mm, converted to px through the spacing
    Each caliper belongs to one measurement (a pair of landmarks). Its error is drawn in the
    frame of that measurement's axis: along the axis (where the end of the organ boundary is
    ambiguous) with standard deviation ``sigma``, across it with ``across_ratio * sigma``. Each
    reader adds a constant outward shift ``caliper_bias_mm`` (negative: the reader measures
    shorter) and, with probability ``slip_probability``, an isotropic slip of standard deviation
    ``slip_scale * sigma``. ``sigma`` per measurement is solved (``calibrated_sigma_mm``) so
    that the expected mean absolute A-B difference of the measurement equals the paper's human
    row (``PAPER_HUMAN_MAE_MM``), exactly in the first-order model where a length changes by the
    sum of the along-axis errors of its two calipers. Calipers are clipped to the image region
    and stored to 0.01 px.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import product
from typing import Protocol

import numpy as np
from scipy.optimize import brentq

from abdus.io.manifest import Read
from abdus.taxonomy import (
    MEASUREMENT_BY_CODE,
    MEASUREMENTS,
    PAPER_HUMAN_MAE_MM,
    VIEW_NAMES,
    task_of_view,
)

Point = tuple[float, float]  # (x, y) screen px


class TruthLike(Protocol):
    """What a reader needs from a rendered scan (``abdus.phantom.render.Scan`` fits)."""

    view: str
    truth_landmarks: Mapping[str, Point]
    spacing_mm: float
    region_box: tuple[int, int, int, int]


@dataclass(frozen=True)
class ReaderProfile:
    """One simulated reader.

    ``view_error_rate``: probability of labelling a view other than the true one.
    ``precision_scale``: multiplies the calibrated caliper sigmas (< 1: steadier hand).
    ``caliper_bias_mm``: outward shift of every caliper along its measurement axis (mm);
    a measurement changes by twice this value.
    """

    name: str
    view_error_rate: float
    precision_scale: float
    caliper_bias_mm: float


@dataclass(frozen=True)
class CaliperNoise:
    """Shape of the caliper error shared by all readers (the scale is calibrated per code)."""

    across_ratio: float = 0.4  # across-axis sigma / along-axis sigma
    slip_probability: float = 0.05  # chance that a caliper slips
    slip_scale: float = 3.0  # slip sigma / along-axis sigma (isotropic)


READERS: dict[str, ReaderProfile] = {
    "A": ReaderProfile("A", view_error_rate=0.09, precision_scale=0.9, caliper_bias_mm=0.15),
    "B": ReaderProfile("B", view_error_rate=0.12, precision_scale=1.1, caliper_bias_mm=-0.35),
}
CALIPER_NOISE = CaliperNoise()

# Confusion weights among neighbouring views (module docstring).
_OTHERS_WEIGHT = 0.40
_ORIENTATION_TWIN_WEIGHT = 0.35
_SIDE_TWIN_WEIGHT = {"liver": 0.25, "kidney": 0.10}


def reader_profile(reader: str) -> ReaderProfile:
    """The profile of reader ``"A"`` or ``"B"``; ValueError naming the valid readers otherwise."""
    try:
        return READERS[reader]
    except KeyError:
        valid = ", ".join(sorted(READERS))
        raise ValueError(f"unknown reader {reader!r}; valid readers: {valid}") from None


# --------------------------------------------------------------------------- view labels


@functools.cache
def confusion_weights(true_view: str) -> dict[str, float]:
    """Relative weights of the wrong labels a reader may give ``true_view`` (sum to 1)."""
    if true_view not in VIEW_NAMES:
        raise ValueError(f"unknown view {true_view!r}; valid views: {', '.join(VIEW_NAMES)}")
    if true_view == "others":
        standard = [v for v in VIEW_NAMES if v != "others"]
        return {v: 1.0 / len(standard) for v in standard}
    parts = true_view.split("_")
    organ = parts[0]
    weights = {"others": _OTHERS_WEIGHT}
    twin = "_".join([*parts[:-1], "trans" if parts[-1] == "long" else "long"])
    if twin in VIEW_NAMES:
        weights[twin] = _ORIENTATION_TWIN_WEIGHT
    if "right" in parts or "left" in parts:
        side = ["left" if p == "right" else "right" if p == "left" else p for p in parts]
        if "_".join(side) in VIEW_NAMES:
            weights["_".join(side)] = _SIDE_TWIN_WEIGHT[organ]
    total = sum(weights.values())
    return {view: w / total for view, w in weights.items()}


def label_view(true_view: str, profile: ReaderProfile, rng: np.random.Generator) -> str:
    """The view name a reader gives an image whose true view is ``true_view``."""
    weights = confusion_weights(true_view)
    if rng.random() >= profile.view_error_rate:
        return true_view
    names = list(weights)
    return names[int(rng.choice(len(names), p=np.fromiter(weights.values(), float)))]


# --------------------------------------------------------------------------- calibration


def _mean_abs_normal(mean: float, std: float) -> float:
    """E|X| for X ~ N(mean, std^2)."""
    if std <= 0.0:
        return abs(mean)
    z = mean / std
    phi = 0.5 * (1.0 + math.erf(-z / math.sqrt(2.0)))
    return std * math.sqrt(2.0 / math.pi) * math.exp(-0.5 * z * z) + mean * (1.0 - 2.0 * phi)


def expected_ab_mae_mm(
    sigma_mm: float,
    reader_a: ReaderProfile | None = None,
    reader_b: ReaderProfile | None = None,
    noise: CaliperNoise = CALIPER_NOISE,
) -> float:
    """Expected mean |length_A - length_B| (mm) for an along-axis caliper sigma (first order).

    The A-B difference is the sum of the four calipers' along-axis errors (two per reader)
    plus twice the bias difference; each caliper slips independently, so the difference is a
    mixture of 16 normals whose mean absolute values are summed exactly.
    """
    a, b = reader_a or READERS["A"], reader_b or READERS["B"]
    mean = 2.0 * (a.caliper_bias_mm - b.caliper_bias_mm)
    scales = (a.precision_scale, a.precision_scale, b.precision_scale, b.precision_scale)
    p, total = noise.slip_probability, 0.0
    for slips in product((False, True), repeat=4):
        prob = math.prod(p if s else 1.0 - p for s in slips)
        var = sum(
            (k * sigma_mm) ** 2 * (1.0 + (noise.slip_scale**2 if s else 0.0))
            for k, s in zip(scales, slips, strict=True)
        )
        total += prob * _mean_abs_normal(mean, math.sqrt(var))
    return total


@functools.cache
def calibrated_sigma_mm(code: str) -> float:
    """Along-axis caliper sigma (mm) whose expected A-B MAE equals the paper's for ``code``."""
    if code not in PAPER_HUMAN_MAE_MM:
        raise ValueError(f"unknown measurement {code!r}; valid: {', '.join(PAPER_HUMAN_MAE_MM)}")
    target = PAPER_HUMAN_MAE_MM[code]
    return float(brentq(lambda s: expected_ab_mae_mm(s) - target, 1e-6, 10.0 * target))


# Landmark -> (partner landmark, measurement code): each caliper's axis and noise scale.
_PAIR_OF: dict[str, tuple[str, str]] = {
    lm: (m.landmarks[1 - i], m.code) for m in MEASUREMENTS for i, lm in enumerate(m.landmarks)
}


# --------------------------------------------------------------------------- landmarks


def _as_row_col(spacing_mm: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(spacing_mm, int | float):
        return float(spacing_mm), float(spacing_mm)
    row, col = spacing_mm
    return float(row), float(col)


def place_landmarks(
    truth_landmarks: Mapping[str, Point],
    spacing_mm: float | tuple[float, float],
    bounds: tuple[int, int, int, int],
    profile: ReaderProfile,
    rng: np.random.Generator,
    noise: CaliperNoise = CALIPER_NOISE,
) -> dict[str, Point]:
    """A reader's calipers around the true landmarks.

    ``truth_landmarks``: {name: (x, y)} screen px; ``spacing_mm``: isotropic mm/px or
    (row_mm, col_mm); ``bounds``: (x0, y0, x1, y1) screen px, exclusive max: calipers are clipped
    to it. Returns {name: (x, y)} screen px, in the order of ``truth_landmarks``. The error model
    is in the module docstring; all draws come from ``rng`` (6 normals + 1 uniform per caliper).
    """
    names = list(truth_landmarks)
    if not names:
        return {}
    row_mm, col_mm = _as_row_col(spacing_mm)
    to_mm = np.array([col_mm, row_mm])
    true_mm = np.array([truth_landmarks[n] for n in names], dtype=np.float64) * to_mm  # (N, 2)
    axis = np.zeros_like(true_mm)  # (N, 2) outward unit vectors along each measurement axis
    sigma = np.empty(len(names))
    for i, name in enumerate(names):
        partner, code = _PAIR_OF[name]
        sigma[i] = calibrated_sigma_mm(code) * profile.precision_scale
        if partner in truth_landmarks:
            delta = true_mm[i] - np.asarray(truth_landmarks[partner], dtype=np.float64) * to_mm
            length = float(np.hypot(*delta))
            axis[i] = delta / length if length > 0 else (1.0, 0.0)
        else:  # an unpaired caliper: no axis to be ambiguous along
            axis[i] = (1.0, 0.0)
    normal = np.stack([-axis[:, 1], axis[:, 0]], axis=1)
    draws = rng.standard_normal((len(names), 6))
    slipped = rng.random(len(names)) < noise.slip_probability
    along = profile.caliper_bias_mm + sigma * draws[:, 0]
    across = noise.across_ratio * sigma * draws[:, 1]
    slip = np.where(slipped, noise.slip_scale * sigma, 0.0)[:, None] * draws[:, 2:4]
    placed_mm = true_mm + along[:, None] * axis + across[:, None] * normal + slip
    placed = placed_mm / to_mm
    x0, y0, x1, y1 = bounds
    placed[:, 0] = np.clip(placed[:, 0], x0, x1 - 1)
    placed[:, 1] = np.clip(placed[:, 1], y0, y1 - 1)
    placed = np.round(placed, 2)
    return {name: (float(p[0]), float(p[1])) for name, p in zip(names, placed, strict=True)}


def read_image(truth: TruthLike, reader: str, rng: np.random.Generator) -> Read:
    """One reader's labels of a rendered image: view name and calipers (screen px).

    ``truth`` is a rendered scan (``view``, ``truth_landmarks``, ``spacing_mm``,
    ``region_box``); ``reader`` is ``"A"`` (reference) or ``"B"`` (second reader).
    """
    profile = reader_profile(reader)
    view = label_view(truth.view, profile, rng)
    true_task, read_task = task_of_view(truth.view), task_of_view(view)
    if read_task is None or read_task != true_task:
        return Read(view=view, landmarks={})
    landmarks = place_landmarks(
        truth.truth_landmarks, truth.spacing_mm, truth.region_box, profile, rng
    )
    return Read(view=view, landmarks=landmarks)


def truth_read(truth: TruthLike) -> Read:
    """The noise-free read: the true view and the exact landmarks (screen px)."""
    return Read(
        view=truth.view,
        landmarks={k: (float(x), float(y)) for k, (x, y) in truth.truth_landmarks.items()},
    )


def measure_mm(
    landmarks: Mapping[str, Point], spacing_mm: float | tuple[float, float]
) -> dict[str, float]:
    """Distances (mm) of every measurement whose two landmarks are present."""
    row_mm, col_mm = _as_row_col(spacing_mm)
    out: dict[str, float] = {}
    for code, m in MEASUREMENT_BY_CODE.items():
        if m.landmarks[0] in landmarks and m.landmarks[1] in landmarks:
            (xa, ya), (xb, yb) = landmarks[m.landmarks[0]], landmarks[m.landmarks[1]]
            out[code] = math.hypot((xa - xb) * col_mm, (ya - yb) * row_mm)
    return out
