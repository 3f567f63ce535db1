"""What lies around the measured organs: body wall, bowel loops, gallbladder.

Builders return layers to paint, in plane mm (see :mod:`abdus.phantom.scan`); none of them
carries landmarks. Echogenicities are the patient's tissue classes
(:func:`abdus.phantom.tissues.tissue_table`).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from abdus.phantom.anatomy import PatientAnatomy
from abdus.phantom.organs import Pose
from abdus.phantom.physics import Layer, Tissue
from abdus.phantom.scan import HalfPlane, Intersect, Shell, Star, circle, wobble


def body_wall(
    anatomy: PatientAnatomy,
    probe_radius_mm: float,
    rng: np.random.Generator,
    tissues: dict[str, Tissue],
    fat_scale: float = 1.0,
) -> tuple[list[Layer], float]:
    """Skin, subcutaneous fat, fascia, muscle and peritoneum under the probe face.

    ``fat_scale`` < 1: the probe pressed harder (fat compresses). Returns the layers and the
    wall thickness in mm (depth below the skin where the organs may begin).
    """
    fat_mm = anatomy.fat_mm * fat_scale
    muscle_mm = anatomy.muscle_mm * float(rng.uniform(0.8, 1.2))
    undulation = tuple(  # (amplitude mm, cycles per radian, phase) of each deep boundary
        (float(rng.uniform(0.5, 2.0)), float(rng.uniform(2, 6)), float(rng.uniform(0, 6.3)))
        for _ in range(2)
    )
    depths_mm = [
        0.0,
        1.2,
        1.2 + fat_mm,
        2.4 + fat_mm,
        2.4 + fat_mm + muscle_mm,
        3.6 + fat_mm + muscle_mm,
    ]
    kinds = ["skin", "fat", "fascia", "muscle", "fascia"]
    layers = [
        Layer(Shell(probe_radius_mm, top, bottom, undulation if top > 0 else ()), tissues[kind])
        for top, bottom, kind in zip(depths_mm[:-1], depths_mm[1:], kinds, strict=True)
    ]
    return layers, depths_mm[-1]


def bowel_loop(
    centre: tuple[float, float],
    radius_mm: float,
    gas: bool,
    rng: np.random.Generator,
    tissues: dict[str, Tissue],
) -> list[Layer]:
    """A bowel loop at ``centre`` (plane mm): hypoechoic wall, echogenic content and, if
    ``gas``, a gas cap on the probe side that casts a dirty shadow."""
    outer = Star(
        *centre,
        float(rng.uniform(0, math.pi)),
        radius_mm,
        radius_mm * float(rng.uniform(0.6, 1)),
        wobble(rng, 2, 0.08, 2.0),
    )
    inner = replace(outer, semi_u=outer.semi_u - 2.5, semi_v=max(outer.semi_v - 2.5, 1.5))
    layers = [Layer(outer, tissues["bowel_wall"]), Layer(inner, tissues["bowel_content"], 4.0)]
    if gas:
        cap = Intersect(inner, (HalfPlane(0.0, 1.0, centre[1] - 0.2 * inner.semi_v),))
        layers.append(Layer(cap, tissues["gas"], 10.0, 0.8))
    return layers


def gallbladder(
    anatomy: PatientAnatomy, pose: Pose, rng: np.random.Generator, tissues: dict[str, Tissue]
) -> list[Layer]:
    """Pear-shaped anechoic gallbladder at ``pose`` with an echogenic wall, sometimes with a
    shadowing stone in its dependent part (empty list after cholecystectomy)."""
    size = anatomy.gallbladder
    if size is None:
        return []
    outline = pose.band(
        0.5 * size.length_mm,
        0.5 * size.width_mm,
        float(rng.uniform(-4, 4)),
        taper=0.45,
        power=2.2,
        wobble=wobble(rng, 2, 0.05),
    )
    layers = [Layer(outline, tissues["fluid"], 7.0, 0.8)]
    if rng.random() < 0.2:
        stone_x, stone_z = outline.point(float(rng.uniform(-0.6, 0.2)), 1)
        stone = circle(stone_x, stone_z - 4.0, float(rng.uniform(3.0, 6.0)))
        layers.append(Layer(stone, tissues["stone"], 10.0, 0.6))
    return layers
