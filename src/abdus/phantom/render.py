"""Public API of the synthetic scanner: one virtual patient scanned in one standard view.

``scan_view(anatomy, view, rng)`` returns a :class:`Scan`: the whole scanner screen (RGB),
the isotropic pixel spacing inside the imaging region, the exact truth landmarks and
measurements, and the boxes of every burned-in overlay. All randomness comes from ``rng``
(same generator state -> same screen bytes). Where the organs lie in each view (the scene
layouts, ``build_scene``) is :mod:`abdus.phantom.views`.

Truth convention: a standard view's plane contains the organ's true axes, so the in-plane
section shows the organ's sampled sizes (``PatientAnatomy``); probe tilt and rotation change
the look (in-plane angle, sinus eccentricity, which pyramids and vessels are cut, neighbours),
never the measured truth. Landmarks are the outline points at the ends of the long axis
(``*_la_1`` screen-left end, ``*_la_2`` screen-right end) and, on transverse kidney/spleen
views, of the short axis (``*_sa_1`` the shallower end, ``*_sa_2`` the deeper end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from abdus.phantom.anatomy import OrganSize, PatientAnatomy, sample_patient
from abdus.phantom.overlays import draw_overlays
from abdus.phantom.physics import (
    PointSpread,
    bmode_lines,
    paint_layers,
    sample_settings,
    speckle_envelope,
    uniform,
)
from abdus.phantom.scan import ProbeGeometry, layout_screen, scan_convert
from abdus.phantom.views import Scene, build_scene
from abdus.taxonomy import measurements_of_view, view_by_name

__all__ = [
    "OrganSize",
    "PatientAnatomy",
    "Scan",
    "homogeneous_envelope",
    "sample_patient",
    "scan_view",
]

# Common scanner screen sizes (W, H) px; spacing follows from the depth and the screen.
SCREEN_SIZES = (
    (600, 450),
    (640, 480),
    (720, 540),
    (768, 576),
    (800, 600),
    (880, 660),
    (960, 720),
    (1024, 768),
    (1000, 750),
    (640, 512),
)


@dataclass
class Scan:
    """One rendered scanner screen and its truth.

    Coordinates are *screen pixels* ``(x, y)`` = (column, row), pixel centres at integers.

    ``screen``: (H, W, 3) uint8 RGB, the whole scanner screen.
    ``spacing_mm``: isotropic mm per screen px inside the imaging region.
    ``region_box``: ``(x0, y0, x1, y1)`` screen px, exclusive max: the 2-D tissue region (the
    bounding box of the sector).
    ``truth_landmarks``: exact ``(x, y)`` screen px of the view task's landmarks (taxonomy
    names); ``{}`` for views without a task.
    ``truth_measurements_mm``: exact distances in mm (taxonomy measurement codes), equal to
    the landmark distance in px times ``spacing_mm``.
    ``overlay_boxes``: every burned-in text / icon / ruler / colour-bar box ``(x0, y0, x1, y1)``
    screen px, exclusive max.
    ``view``: the true view name. ``displayed_label``: the view text burned into the screen
    (a taxonomy ``View.label``; may be wrong) or None when absent.
    ``acquisition``: JSON-serialisable scanner settings (frequency_mhz, depth_mm, gain_db,
    dynamic_range_db, probe_radius_mm, sector_deg, psf, tgc_db, jpeg_quality, ...).
    ``depth_origin``: screen px of the virtual apex of the convex probe (the region's reference
    pixel: physical (0, 0) of the region's mm coordinates).
    """

    screen: np.ndarray
    spacing_mm: float
    region_box: tuple[int, int, int, int]
    truth_landmarks: dict[str, tuple[float, float]]
    truth_measurements_mm: dict[str, float]
    overlay_boxes: list[tuple[int, int, int, int]]
    view: str
    displayed_label: str | None
    acquisition: dict[str, Any] = field(default_factory=dict)
    depth_origin: tuple[float, float] = (0.0, 0.0)


# Imaging depth (mm) a sonographer typically sets per view; it grows when the organ needs it.
VIEW_DEPTH_MM: dict[str, tuple[float, float]] = {
    "others": (100.0, 200.0),
    "liver_right_long": (150.0, 220.0),
    "liver_right_trans": (150.0, 220.0),
    "liver_left_long": (110.0, 180.0),
    "liver_left_trans": (110.0, 180.0),
    "kidney_right_long": (120.0, 180.0),
    "kidney_right_trans": (110.0, 170.0),
    "kidney_left_long": (120.0, 180.0),
    "kidney_left_trans": (110.0, 170.0),
    "spleen_long": (110.0, 170.0),
    "spleen_trans": (100.0, 160.0),
}


def _screen_area(width: int, height: int) -> tuple[int, int, int, int]:
    """Screen box left for the sector: panels for text, ruler and colour bar around it."""
    return (
        int(0.15 * width),
        int(0.085 * height),
        width - int(0.1 * width),
        height - int(0.05 * height),
    )


def _measure(view: str, landmarks_px: dict, spacing: float) -> dict[str, float]:
    out = {}
    for m in measurements_of_view(view):
        (x1, y1), (x2, y2) = landmarks_px[m.landmarks[0]], landmarks_px[m.landmarks[1]]
        out[m.code] = math.hypot(x2 - x1, y2 - y1) * spacing
    return out


def _record(
    probe: ProbeGeometry, scene: Scene, screen: tuple[int, int], rng: np.random.Generator
) -> dict[str, Any]:
    """Probe, geometry and export settings of one scan (JSON-serialisable)."""
    return {
        "depth_mm": probe.depth_mm,
        "probe_radius_mm": probe.radius_mm,
        "sector_deg": probe.sector_deg,
        "focus_mm": round(float(rng.uniform(0.4, 0.7)) * probe.depth_mm, 1),
        "jpeg_quality": int(rng.integers(70, 96)),  # PIL: quality above 95 adds nothing
        "screen": list(screen),
        "tilt_deg": scene.tilt_deg,
        "rotation_deg": scene.rotation_deg,
        "scene": scene.name,
    }


def scan_view(anatomy: PatientAnatomy, view: str, rng: np.random.Generator) -> Scan:
    """Scan ``anatomy`` in the standard ``view`` (a taxonomy view name) and return the screen.

    Raises ValueError naming the valid views for an unknown ``view``.
    """
    view_by_name(view)
    radius = uniform(rng, 40.0, 60.0, 1)
    sector = uniform(rng, 60.0, 75.0, 1)
    lo, hi = VIEW_DEPTH_MM.get(view, (120.0, 200.0))
    wanted_depth = float(rng.uniform(lo, hi))
    scene = build_scene(anatomy, view, radius, sector, rng)
    depth = min(240.0, math.ceil(max(wanted_depth, scene.min_depth_mm) / 10.0) * 10.0)
    probe = ProbeGeometry(radius, sector, depth)
    settings, grid, acq = sample_settings(rng, probe)
    width, height = SCREEN_SIZES[int(rng.integers(len(SCREEN_SIZES)))]
    layout = layout_screen(probe, width, height, _screen_area(width, height))
    maps = paint_layers(scene.layers, grid, scene.base)
    lines = bmode_lines(maps, grid, settings, rng)
    gray = scan_convert(lines, grid, layout)
    screen = np.repeat((gray * 255.0 + 0.5).astype(np.uint8)[:, :, None], 3, axis=2)
    acq |= _record(probe, scene, (width, height), rng)
    boxes, label = draw_overlays(screen, layout, view, acq, rng)
    landmarks = {
        name: tuple(float(v) for v in layout.to_px(*xz)) for name, xz in scene.landmarks.items()
    }
    return Scan(
        screen=screen,
        spacing_mm=layout.spacing_mm,
        region_box=layout.region_box,
        truth_landmarks=landmarks,
        truth_measurements_mm=_measure(view, landmarks, layout.spacing_mm),
        overlay_boxes=boxes,
        view=view,
        displayed_label=label,
        acquisition=acq,
        depth_origin=(float(layout.apex_px[0]), float(layout.apex_px[1])),
    )


def homogeneous_envelope(
    rng: np.random.Generator, shape: tuple[int, int] = (256, 256), **psf: float
) -> np.ndarray:
    """Envelope (before log compression) of a homogeneous medium on the polar grid.

    ``shape`` = (n_depth, n_lines) samples. ``psf``: ``axial_samples`` / ``lateral_samples``
    (Gaussian sigmas in grid samples, :class:`abdus.phantom.physics.PointSpread`). Returns
    (n_depth, n_lines) float32; fully developed speckle gives mean/std = 1.913 (Rayleigh).
    """
    return speckle_envelope(np.ones(shape, dtype=np.float32), PointSpread(**psf), rng)
