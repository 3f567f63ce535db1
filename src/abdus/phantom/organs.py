"""The measured organs: kidney, spleen and right liver lobe sections with their axis ends,
and the vessels inside the liver.

Each builder returns an :class:`Organ`: the layers to paint and the outline points at the ends
of the organ's axes, in plane mm (see :mod:`abdus.phantom.scan`), exactly the patient's sampled
sizes apart. Outlines are deformed by :func:`abdus.phantom.anatomy.shape_rng`, so an organ has
the same shape in every view; ``rng`` draws what changes from view to view (the cut through
the sinus, which pyramids and vessels lie in the plane).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from abdus.phantom.anatomy import PatientAnatomy, shape_rng
from abdus.phantom.physics import Layer, Tissue
from abdus.phantom.scan import Band, Intersect, Star, segment, wobble


@dataclass(frozen=True)
class Pose:
    """Where an organ section lies in the image plane: centre (plane mm), in-plane rotation of
    its long axis (radians from screen +x towards +z), ``flip`` (mirror across the long axis,
    e.g. which side the hilum faces) and the out-of-plane probe tilt, which changes the look
    of the section (not its measured axes)."""

    x_mm: float
    z_mm: float
    angle_rad: float
    flip: bool = False
    tilt_deg: float = 0.0

    @property
    def sign(self) -> int:
        """-1 when flipped, else +1."""
        return -1 if self.flip else 1

    def band(
        self, half_length_mm: float, half_thickness_mm: float, bend_mm: float, **shape: Any
    ) -> Band:
        """A :class:`Band` centred here along the long axis; ``shape``: its other fields."""
        return Band(
            self.x_mm,
            self.z_mm,
            self.angle_rad,
            half_length_mm,
            half_thickness_mm,
            bend_mm,
            **shape,
        )


@dataclass
class Organ:
    """Layers of one organ section, its outline and named outline points (plane mm).

    ``points``: ``la_1``/``la_2`` (long-axis ends) and for transverse sections ``sa_1``/
    ``sa_2`` (short-axis ends), exactly the sampled sizes apart.
    """

    layers: list[Layer]
    outline: Any
    points: dict[str, tuple[float, float]]


def _long_axis_ends(band: Band) -> dict[str, tuple[float, float]]:
    return {"la_1": band.point(-1.0), "la_2": band.point(1.0)}


def _tilt_fraction(pose: Pose) -> float:
    """The probe tilt as a fraction of the largest one a standard view allows (12 degrees)."""
    return float(np.clip(pose.tilt_deg / 12.0, -1.0, 1.0))


def kidney_long(
    anatomy: PatientAnatomy,
    side: str,
    pose: Pose,
    rng: np.random.Generator,
    tissues: dict[str, Tissue],
    length_scale: float = 1.0,
) -> Organ:
    """Kidney long section: bean outline, hypoechoic cortex, dark pyramids, bright sinus.

    The in-plane length is the true length (times ``length_scale`` < 1 for off-axis cuts).
    The probe tilt (``pose.tilt_deg``) moves the sinus off centre, thins it and hides pyramids.
    """
    size, shape = anatomy.kidney(side), shape_rng(anatomy, f"kidney_{side}")
    thickness_mm = 0.5 * (size.width_mm + size.depth_mm) * float(shape.uniform(0.86, 0.98))
    bend_mm = pose.sign * float(shape.uniform(1.5, 5.0))
    half_length_mm = 0.5 * size.length_mm * length_scale
    half_thickness_mm = 0.5 * thickness_mm * length_scale**0.5
    outline = pose.band(
        half_length_mm, half_thickness_mm, bend_mm, power=2.3, wobble=wobble(shape, 3, 0.045)
    )
    tilt = _tilt_fraction(pose)
    sinus_offset_mm = bend_mm + pose.sign * thickness_mm * (0.06 + 0.05 * tilt)
    sinus = Band(
        *outline.to_plane(0.0, sinus_offset_mm),
        pose.angle_rad,
        half_length_mm * float(rng.uniform(0.58, 0.72)),
        half_thickness_mm * float(rng.uniform(0.3, 0.42)) * (1 - 0.2 * abs(tilt)),
        0.7 * bend_mm,
        wobble=wobble(rng, 3, 0.14, 1.5),
    )
    perirenal = outline.grown(float(shape.uniform(3.0, 7.0)))
    pyramids_per_side, p_missing = int(shape.integers(3, 5)), 0.25 + 0.2 * abs(tilt)
    layers = [
        Layer(perirenal, tissues["perirenal"]),
        Layer(outline, tissues["cortex"], rim_db=8.0, rim_mm=0.6),
        *_pyramids_long(outline, pyramids_per_side, p_missing, rng, tissues["pyramid"]),
        Layer(sinus, tissues["sinus"]),
    ]
    if rng.random() < 0.35:  # renal vein / pelvis leaving through the hilum
        inner = outline.to_plane(0.0, bend_mm)
        hilum = outline.to_plane(0.0, bend_mm + pose.sign * 0.75 * thickness_mm)
        radius_mm = float(rng.uniform(2.0, 3.5))
        layers.append(Layer(segment(inner, hilum, radius_mm), tissues["blood"]))
    return Organ(layers, outline, _long_axis_ends(outline))


def _pyramids_long(
    outline: Band, per_side: int, p_missing: float, rng: np.random.Generator, pyramid: Tissue
) -> list[Layer]:
    """Medullary pyramids in a row on both sides of the sinus; some are not in the plane."""
    layers = []
    for s in np.linspace(-0.72, 0.72, per_side):
        for edge in (-1, 1):
            if rng.random() < p_missing:
                continue
            s_jittered = float(s + rng.uniform(-0.06, 0.06))
            thickness_mm = float(outline.thickness(s_jittered))
            centre = outline.to_plane(
                s_jittered * outline.half_length,
                outline.centre_line(s_jittered) + edge * 0.58 * thickness_mm,
            )
            shape = Star(
                *centre,
                outline.angle,
                0.07 * outline.half_length + 1.5,
                0.2 * thickness_mm + 1.0,
                wobble(rng, 1, 0.1, 3.0),
            )
            layers.append(Layer(shape, pyramid))
    return layers


def kidney_trans(
    anatomy: PatientAnatomy,
    side: str,
    pose: Pose,
    rng: np.random.Generator,
    tissues: dict[str, Tissue],
) -> Organ:
    """Kidney transverse section: rounder outline with the hilum notch, sinus and vessels.

    Long axis (LA) = true width, short axis (SA) = true AP depth, both through the centre.
    """
    size, shape = anatomy.kidney(side), shape_rng(anatomy, f"kidney_{side}_trans")
    notch_rad = math.pi + pose.sign * float(shape.uniform(0.5, 0.85))
    notch = (float(shape.uniform(0.2, 0.3)), notch_rad, float(shape.uniform(0.22, 0.3)))
    unit = Star(0.0, 0.0, 0.0, 1.0, 1.0, wobble(shape, 2, 0.04, 2.0), notch)
    semi_u_mm = float(size.width_mm / (unit.rho(0.0) + unit.rho(math.pi)))
    semi_v_mm = float(size.depth_mm / (unit.rho(0.5 * math.pi) + unit.rho(-0.5 * math.pi)))
    outline = replace(
        unit,
        cx=pose.x_mm,
        cz=pose.z_mm,
        angle=pose.angle_rad,
        semi_u=semi_u_mm,
        semi_v=semi_v_mm,
    )
    fat_mm = float(shape.uniform(3.0, 7.0))
    hilum = outline.point(notch_rad)
    # Probe tilt moves the cut through the hilum: the sinus shifts towards the notch.
    towards_hilum = 0.3 + 0.08 * _tilt_fraction(pose) + float(rng.uniform(-0.05, 0.05))
    sinus_at = (
        pose.x_mm + towards_hilum * (hilum[0] - pose.x_mm),
        pose.z_mm + towards_hilum * (hilum[1] - pose.z_mm),
    )
    sinus = Star(
        *sinus_at,
        pose.angle_rad + notch_rad,
        0.38 * semi_u_mm,
        float(rng.uniform(0.28, 0.4)) * semi_v_mm,
        wobble(rng, 3, 0.12, 2.0),
    )
    perirenal = replace(outline, semi_u=semi_u_mm + fat_mm, semi_v=semi_v_mm + fat_mm)
    layers = [
        Layer(perirenal, tissues["perirenal"]),
        Layer(outline, tissues["cortex"], rim_db=8.0, rim_mm=0.6),
    ]
    for k in range(int(rng.integers(2, 5))):  # pyramids around the sinus, away from the hilum
        theta = notch_rad + math.pi + (k - 1.5) * 0.9 + float(rng.uniform(-0.2, 0.2))
        edge = outline.point(theta)
        centre = (0.45 * pose.x_mm + 0.55 * edge[0], 0.45 * pose.z_mm + 0.55 * edge[1])
        pyramid = Star(*centre, pose.angle_rad + theta, 0.16 * semi_u_mm, 0.1 * semi_u_mm + 1.0)
        layers.append(Layer(pyramid, tissues["pyramid"]))
    layers.append(Layer(sinus, tissues["sinus"]))
    if rng.random() < 0.6:  # renal vein in the hilum
        vein = segment(sinus_at, hilum, float(rng.uniform(2.0, 4.0)), 4.0, 4.0)
        layers.append(Layer(vein, tissues["blood"]))
    points = {
        "la_1": outline.point(math.pi),
        "la_2": outline.point(0.0),
        "sa_1": outline.point(-0.5 * math.pi),
        "sa_2": outline.point(0.5 * math.pi),
    }
    return Organ(layers, outline, points)


def spleen_section(
    anatomy: PatientAnatomy,
    plane: str,
    pose: Pose,
    rng: np.random.Generator,
    tissues: dict[str, Tissue],
) -> Organ:
    """Spleen crescent: long section (tips = true length) or smaller transverse section
    (tips = true width, thickness at the middle = true depth)."""
    size = anatomy.spleen
    shape = shape_rng(anatomy, f"spleen_{plane}")
    if plane == "long":
        half_length_mm = 0.5 * size.length_mm
        half_thickness_mm = 0.5 * size.depth_mm * shape.uniform(0.9, 1.1)
        bend_mm = -pose.sign * half_length_mm * float(shape.uniform(0.2, 0.32))
    else:
        half_length_mm, half_thickness_mm = 0.5 * size.width_mm, 0.5 * size.depth_mm
        bend_mm = -pose.sign * half_length_mm * float(shape.uniform(0.12, 0.25))
    unit = pose.band(  # unit half thickness, scaled below to the sampled depth
        half_length_mm,
        1.0,
        bend_mm,
        taper=float(shape.uniform(0, 0.4)),
        power=1.8,
        wobble=wobble(shape, 3, 0.05),
    )
    outline = replace(unit, half_thickness=float(half_thickness_mm / unit.thickness(0.0)))
    layers = [Layer(outline, tissues["spleen"], rim_db=8.0, rim_mm=0.6)]
    for _ in range(int(rng.integers(1, 4))):  # hilar vessels on the concave side
        centre = outline.point(float(rng.uniform(-0.3, 0.3)), edge=pose.sign)
        semi_u_mm, semi_v_mm = float(rng.uniform(2.5, 5.0)), float(rng.uniform(2.0, 3.5))
        vessel = Star(*centre, pose.angle_rad, semi_u_mm, semi_v_mm)
        layers.append(Layer(vessel, tissues["blood"]))
    points = _long_axis_ends(outline)
    if plane == "trans":
        points |= {"sa_1": outline.point(0.0, -1), "sa_2": outline.point(0.0, 1)}
    return Organ(layers, outline, points)


def liver_right_long(
    anatomy: PatientAnatomy, pose: Pose, rng: np.random.Generator, tissues: dict[str, Tissue]
) -> Organ:
    """Right lobe sagittal section: a wedge from the diaphragm dome (``la_1`` end, blunt) to
    the inferior tip (``la_2`` end, sharp), exactly the craniocaudal length apart."""
    shape = shape_rng(anatomy, "liver_long")
    half_length_mm = 0.5 * anatomy.liver.length_mm
    unit = pose.band(  # unit half thickness, scaled below to the sampled depth
        half_length_mm,
        1.0,
        -float(shape.uniform(0.04, 0.1)) * half_length_mm,
        taper=float(shape.uniform(0.6, 0.9)),
        wobble=wobble(shape, 3, 0.04),
    )
    widest = float(np.max(unit.thickness(np.linspace(-1.0, 1.0, 41))))
    half_thickness_mm = 0.5 * anatomy.liver.depth_mm * float(shape.uniform(0.8, 0.95)) / widest
    outline = replace(unit, half_thickness=half_thickness_mm)
    layers = [Layer(outline, tissues["liver"], 4.0, 0.6)]
    layers += liver_vessels(
        outline,
        outline.point(-0.2),
        0.45 * outline.half_thickness,
        rng,
        tissues,
        int(rng.integers(3, 8)),
    )
    return Organ(layers, outline, _long_axis_ends(outline))


def liver_vessels(
    liver: Any,
    centre: tuple[float, float],
    extent_mm: float,
    rng: np.random.Generator,
    tissues: dict[str, Tissue],
    count: int,
) -> list[Layer]:
    """Portal branches (bright walls) and hepatic veins (no wall) inside the ``liver`` outline,
    within ``extent_mm`` of ``centre`` (plane mm)."""
    layers = []
    for _ in range(count):
        at = (
            centre[0] + float(rng.uniform(-extent_mm, extent_mm)),
            centre[1] + float(rng.uniform(-0.7, 0.7)) * extent_mm,
        )
        angle_rad = float(rng.uniform(0, math.pi))
        if rng.random() < 0.5:  # portal triad: echogenic fibro-fatty wall
            semi_u_mm, semi_v_mm = float(rng.uniform(2.5, 6.0)), float(rng.uniform(2.0, 4.0))
            shape = Star(*at, angle_rad, semi_u_mm, semi_v_mm)
            layers.append(Layer(Intersect(shape, (liver,)), tissues["blood"], 9.0, 0.8))
        else:  # hepatic vein, cut along its length
            shape = Band(
                *at,
                angle_rad,
                float(rng.uniform(10.0, 30.0)),
                float(rng.uniform(2.0, 4.5)),
                float(rng.uniform(-3, 3)),
                taper=0.4,
                power=4.0,
            )
            layers.append(Layer(Intersect(shape, (liver,)), tissues["blood"]))
    return layers
