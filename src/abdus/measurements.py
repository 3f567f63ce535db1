"""Caliper measurements in mm from landmarks in source pixels.

A measurement is the Euclidean distance between its two landmarks (taxonomy.MEASUREMENTS), with
the pixel spacing applied per axis so anisotropic pixels are measured correctly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from abdus.taxonomy import LANDMARK_INDEX, MEASUREMENT_BY_CODE, MEASUREMENTS, Measurement


def distance_mm(a_xy: np.ndarray, b_xy: np.ndarray, spacing_mm: tuple[float, float]) -> np.ndarray:
    """Distance in mm between points ``a`` and ``b`` (..., 2) given in source px ``(x, y)``.

    ``spacing_mm`` is ``(row_mm, col_mm)``: mm per pixel along y and along x.
    """
    row_mm, col_mm = spacing_mm
    delta = np.asarray(a_xy, dtype=np.float64) - np.asarray(b_xy, dtype=np.float64)
    return np.hypot(delta[..., 0] * col_mm, delta[..., 1] * row_mm)


def measurements_from_array(
    points_xy: np.ndarray,
    spacing_mm: tuple[float, float] | None,
    codes: Sequence[str] | None = None,
) -> dict[str, float | None]:
    """Measurements (mm) from a (14, 2) landmark array in source px (NaN rows = absent).

    A measurement whose landmarks are absent, or any measurement when ``spacing_mm`` is None,
    is None: abdus never reports a guessed mm value.
    """
    points = np.asarray(points_xy, dtype=np.float64)
    chosen: Sequence[Measurement] = (
        MEASUREMENTS if codes is None else [MEASUREMENT_BY_CODE[c] for c in codes]
    )
    out: dict[str, float | None] = {}
    for m in chosen:
        a, b = (points[LANDMARK_INDEX[name]] for name in m.landmarks)
        if spacing_mm is None or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            out[m.code] = None
        else:
            out[m.code] = float(distance_mm(a, b, spacing_mm))
    return out


def measurements_from_landmarks(
    landmarks: Mapping[str, tuple[float, float]],
    spacing_mm: tuple[float, float] | None,
) -> dict[str, float]:
    """Measurements (mm) whose two landmarks are both in ``landmarks`` (name -> (x, y) px).

    Returns only the measurements that can be computed; none when spacing is unknown.
    """
    if spacing_mm is None:
        return {}
    out: dict[str, float] = {}
    for m in MEASUREMENTS:
        if all(name in landmarks for name in m.landmarks):
            a, b = (np.asarray(landmarks[name], dtype=np.float64) for name in m.landmarks)
            out[m.code] = float(distance_mm(a, b, spacing_mm))
    return out
