"""The clinical task: 11 views, 5 landmark tasks, 14 landmarks, 7 measurements.

This module is the single source of truth (paper, section 2.1 and Fig. 1). The order of
``VIEWS`` is the class index order of every model and file abdus writes; the order of
``LANDMARKS`` is the heat-map channel order. Never reorder either.

LA = long axis, SA = short axis. A measurement is the Euclidean distance in mm between its
two landmarks. Left and right kidney views share the kidney tasks, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class View:
    """A standard abdominal view. ``task`` is the landmark task measured on it, or None."""

    index: int
    name: str
    task: str | None
    label: str  # the text a sonographer would annotate on screen


@dataclass(frozen=True)
class Measurement:
    """A caliper measurement: the distance in mm between two landmarks of one task."""

    code: str
    task: str
    landmarks: tuple[str, str]
    description: str


@dataclass(frozen=True)
class LandmarkTask:
    """A landmark detection task: the landmarks placed on the views that carry it."""

    name: str
    code: str
    landmarks: tuple[str, ...]
    measurements: tuple[str, ...]


VIEWS: Final[tuple[View, ...]] = (
    View(0, "others", None, "OTHER"),
    View(1, "liver_right_long", "liver_long", "RT LIVER LONG"),
    View(2, "liver_right_trans", None, "RT LIVER TRANS"),
    View(3, "liver_left_long", None, "LT LIVER LONG"),
    View(4, "liver_left_trans", None, "LT LIVER TRANS"),
    View(5, "kidney_right_long", "kidney_long", "RT KIDNEY LONG"),
    View(6, "kidney_right_trans", "kidney_trans", "RT KIDNEY TRANS"),
    View(7, "kidney_left_long", "kidney_long", "LT KIDNEY LONG"),
    View(8, "kidney_left_trans", "kidney_trans", "LT KIDNEY TRANS"),
    View(9, "spleen_long", "spleen_long", "SPLEEN LONG"),
    View(10, "spleen_trans", "spleen_trans", "SPLEEN TRANS"),
)

TASKS: Final[tuple[LandmarkTask, ...]] = (
    LandmarkTask("kidney_long", "KL", ("kl_la_1", "kl_la_2"), ("KL_LA",)),
    LandmarkTask(
        "kidney_trans", "KT", ("kt_la_1", "kt_la_2", "kt_sa_1", "kt_sa_2"), ("KT_LA", "KT_SA")
    ),
    LandmarkTask("liver_long", "LL", ("ll_la_1", "ll_la_2"), ("LL_LA",)),
    LandmarkTask("spleen_long", "SL", ("sl_la_1", "sl_la_2"), ("SL_LA",)),
    LandmarkTask(
        "spleen_trans", "ST", ("st_la_1", "st_la_2", "st_sa_1", "st_sa_2"), ("ST_LA", "ST_SA")
    ),
)

MEASUREMENTS: Final[tuple[Measurement, ...]] = (
    Measurement("KL_LA", "kidney_long", ("kl_la_1", "kl_la_2"), "kidney length (long view)"),
    Measurement("KT_LA", "kidney_trans", ("kt_la_1", "kt_la_2"), "kidney transverse long axis"),
    Measurement("KT_SA", "kidney_trans", ("kt_sa_1", "kt_sa_2"), "kidney transverse short axis"),
    Measurement("LL_LA", "liver_long", ("ll_la_1", "ll_la_2"), "liver right lobe length"),
    Measurement("SL_LA", "spleen_long", ("sl_la_1", "sl_la_2"), "spleen length (long view)"),
    Measurement("ST_LA", "spleen_trans", ("st_la_1", "st_la_2"), "spleen transverse long axis"),
    Measurement("ST_SA", "spleen_trans", ("st_sa_1", "st_sa_2"), "spleen transverse short axis"),
)

LANDMARKS: Final[tuple[str, ...]] = tuple(lm for task in TASKS for lm in task.landmarks)

NUM_VIEWS: Final[int] = len(VIEWS)
NUM_LANDMARKS: Final[int] = len(LANDMARKS)

VIEW_NAMES: Final[tuple[str, ...]] = tuple(v.name for v in VIEWS)
VIEW_INDEX: Final[dict[str, int]] = {v.name: v.index for v in VIEWS}
TASK_BY_NAME: Final[dict[str, LandmarkTask]] = {t.name: t for t in TASKS}
LANDMARK_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(LANDMARKS)}
LANDMARK_TASK: Final[dict[str, str]] = {lm: t.name for t in TASKS for lm in t.landmarks}
MEASUREMENT_BY_CODE: Final[dict[str, Measurement]] = {m.code: m for m in MEASUREMENTS}
MEASUREMENT_CODES: Final[tuple[str, ...]] = tuple(m.code for m in MEASUREMENTS)

# The paper's inter-observer row of Table 1 (mean absolute A-B difference, mm).
PAPER_HUMAN_MAE_MM: Final[dict[str, float]] = {
    "KL_LA": 4.500, "KT_LA": 5.431, "KT_SA": 4.283, "LL_LA": 5.687,
    "SL_LA": 6.104, "ST_LA": 4.578, "ST_SA": 4.543,
}  # fmt: skip


def _row(*values: float) -> dict[str, float]:
    return dict(zip(MEASUREMENT_CODES, values, strict=True))


# Table 1 of the paper, all rows (mm), for reports that print the paper beside our numbers.
PAPER_TABLE1_MM: Final[dict[str, dict[str, float]]] = {
    "Human": PAPER_HUMAN_MAE_MM,
    "PBT": _row(11.036, 9.147, 8.393, 11.083, 7.289, 9.359, 12.308),
    "SFCN": _row(7.044, 7.332, 5.189, 10.731, 8.693, 91.309, 43.773),
    "MFCN": _row(10.582, 16.508, 15.942, 17.561, 8.856, 49.887, 29.167),
    "MGCN": _row(10.628, 5.535, 5.348, 9.46, 7.718, 12.284, 19.79),
    "MGCN_R": _row(4.278, 4.426, 3.437, 6.989, 3.610, 7.923, 7.224),
}


def view_by_name(name: str) -> View:
    """Return the view called ``name``; raise ValueError naming the valid views otherwise."""
    try:
        return VIEWS[VIEW_INDEX[name]]
    except KeyError:
        raise ValueError(f"unknown view {name!r}; valid views: {', '.join(VIEW_NAMES)}") from None


def task_of_view(view: str | int) -> LandmarkTask | None:
    """The landmark task measured on a view (by name or index), or None."""
    v = VIEWS[view] if isinstance(view, int) else view_by_name(view)
    return TASK_BY_NAME[v.task] if v.task is not None else None


def landmarks_of_view(view: str | int) -> tuple[str, ...]:
    """Landmark names belonging to the view's task (empty for views without a task)."""
    task = task_of_view(view)
    return task.landmarks if task is not None else ()


def landmark_channels_of_view(view: str | int) -> tuple[int, ...]:
    """Heat-map channel indices of the view's task."""
    return tuple(LANDMARK_INDEX[lm] for lm in landmarks_of_view(view))


def measurements_of_view(view: str | int) -> tuple[Measurement, ...]:
    """Measurements defined on the view's task."""
    task = task_of_view(view)
    return tuple(MEASUREMENT_BY_CODE[c] for c in task.measurements) if task else ()
