"""Deep midline anatomy behind the left liver lobe and in the epigastric 'others' planes:
aorta with its anterior branches, IVC, pancreas with the splenic vein, spine (plane mm)."""

from __future__ import annotations

import math
from dataclasses import replace

from abdus.phantom.physics import Layer
from abdus.phantom.scan import Band, Star, band_from, circle
from abdus.phantom.scene import SceneBuilder


def _aorta_long(builder: SceneBuilder, z: float, angle_rad: float) -> Band:
    """Sagittal aorta at plane depth ``z`` with the coeliac trunk / SMA leaving anteriorly."""
    blood = builder.tissues["blood"]
    radius_mm = 0.5 * builder.anatomy.aorta_mm
    aorta = Band(builder.uniform(-20, 20), z, angle_rad, 170.0, radius_mm, power=8.0)
    builder.layers.append(Layer(aorta, blood, 9.0, 0.9))
    for _ in range(int(builder.rng.integers(1, 3))):
        origin = aorta.point(builder.uniform(-0.25, 0.25), -1)
        branch_rad = angle_rad - math.radians(builder.uniform(40, 80))
        half_length_mm = builder.uniform(10.0, 20.0)
        radius_mm = builder.uniform(2.5, 3.5)
        branch = band_from(origin, branch_rad, half_length_mm, radius_mm, power=6.0)
        builder.layers.append(Layer(branch, blood, 6.0, 0.7))
    return aorta


def _vertebrae(builder: SceneBuilder, along: Band, offset_mm: float) -> None:
    """Sagittal spine ``offset_mm`` deep to a vessel: anterior surfaces of vertebral bodies
    (bright, with shadows) separated by discs that let sound through."""
    c, s = math.cos(along.angle), math.sin(along.angle)
    x0, z0 = along.cx - offset_mm * s, along.cz + offset_mm * c
    pitch_mm, start_mm = builder.uniform(30.0, 36.0), builder.uniform(0.0, 36.0)
    for k in range(-6, 7):
        u = start_mm + k * pitch_mm
        body = Band(x0 + u * c, z0 + u * s, along.angle, 0.5 * pitch_mm - 4.0, 2.0, 1.5, power=6.0)
        builder.layers.append(Layer(body, builder.tissues["bone"], 9.0, 0.8))
    # Discs pass some sound, but the canal and posterior elements behind them stop it.
    canal = Band(x0 - 20.0 * s, z0 + 20.0 * c, along.angle, 240.0, 8.0, power=8.0)
    builder.layers.append(Layer(canal, builder.tissues["spinal_canal"]))


def midline_long(builder: SceneBuilder, aorta_z: float) -> float:
    """Sagittal midline deep anatomy: aorta with its anterior branches, pancreas, spine.

    Returns the plane z (mm) the view must show."""
    aorta = _aorta_long(builder, aorta_z, math.radians(builder.uniform(-10, 6)))
    _vertebrae(builder, aorta, aorta.half_thickness + builder.uniform(8, 14))
    head_x, head_z = aorta.point(builder.uniform(0.1, 0.4), -1)
    pancreas = Star(head_x, head_z - 12, 0.0, builder.uniform(15, 25), builder.uniform(6, 10))
    builder.layers.append(Layer(pancreas, builder.tissues["pancreas"]))
    return aorta_z + aorta.half_thickness + 35.0


def midline_trans(builder: SceneBuilder, x: float, aorta_z: float) -> float:
    """Transverse epigastric deep anatomy: aorta, IVC, SMA, pancreas with the splenic vein
    along its back, vertebral body. Returns the plane z (mm) the view must show."""
    anatomy, tissues = builder.anatomy, builder.tissues
    aorta_radius_mm = 0.5 * anatomy.aorta_mm
    ivc_x = x - builder.uniform(25, 35)
    ivc = Star(ivc_x, aorta_z, 0.0, 0.75 * anatomy.ivc_mm, 0.5 * anatomy.ivc_mm)
    spine_z = aorta_z + aorta_radius_mm + builder.uniform(8, 14)
    spine = Band(x, spine_z, 0.0, builder.uniform(18, 25), 3.0, -6.0)
    angle_rad = math.radians(builder.uniform(-15, 5))
    pancreas = Band(
        x + 10,
        aorta_z - aorta_radius_mm - 14,
        angle_rad,
        builder.uniform(40, 60),
        builder.uniform(7, 11),
        -5.0,
        power=3.0,
    )
    back_z = pancreas.cz + pancreas.half_thickness
    vein = Band(pancreas.cx, back_z, angle_rad, 0.8 * pancreas.half_length, 3.5, -5.0)
    sma = circle(x, aorta_z - aorta_radius_mm - 5.0, 3.0)
    builder.layers += [
        Layer(spine, tissues["bone"], 10.0, 0.8),
        Layer(pancreas, tissues["pancreas"]),
        Layer(replace(vein, power=6.0), tissues["blood"], 5.0, 0.6),
        Layer(ivc, tissues["blood"], 4.0, 0.6),
        Layer(circle(x, aorta_z, aorta_radius_mm), tissues["blood"], 9.0, 0.9),
        Layer(sma, tissues["blood"], 8.0, 1.2),  # the SMA in its fat collar
    ]
    return spine.cz + 25.0
