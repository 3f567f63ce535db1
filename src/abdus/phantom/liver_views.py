"""Liver views: right lobe sagittal and transverse, left lobe sagittal and transverse
(plane mm, see :mod:`abdus.phantom.scan`; the builder is :mod:`abdus.phantom.scene`)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from abdus.phantom.anatomy import shape_rng
from abdus.phantom.layouts import LiverLeftLayout, LiverRightLongLayout, LiverRightTransLayout
from abdus.phantom.midline import midline_long, midline_trans
from abdus.phantom.organs import Pose, kidney_long, kidney_trans, liver_right_long, liver_vessels
from abdus.phantom.physics import Layer
from abdus.phantom.scan import Band, HalfPlane, Intersect, Star, band_from, circle, wobble
from abdus.phantom.scene import Scene, SceneBuilder
from abdus.phantom.surroundings import gallbladder


def liver_right_long_view(builder: SceneBuilder, layout: LiverRightLongLayout) -> Scene:
    """Right lobe sagittal section (task LL), the dome under the diaphragm at screen left."""
    anatomy, tissues, rng = builder.anatomy, builder.tissues, builder.rng
    angle_rad = math.radians(builder.draw(layout.angle_deg))
    lateral_mm = builder.draw(layout.lateral_mm)

    def sample_pose(towards_fallback: float) -> Pose:
        return Pose(
            lateral_mm * (1 - towards_fallback),
            builder.wall_inner_z + layout.centre_below_wall_mm,
            angle_rad + towards_fallback * (layout.fallback_angle_rad - angle_rad),
            tilt_deg=builder.tilt_deg,
        )

    fitted, liver = builder.place(
        lambda pose, pose_rng: liver_right_long(anatomy, pose, pose_rng, tissues), sample_pose
    )
    builder.record_task("ll", liver)
    outline = liver.outline
    builder.diaphragm(outline, 1, builder.draw(layout.diaphragm_up_to))
    if rng.random() < layout.kidney_probability:  # behind the inferior part of the lobe
        edge_x, edge_z = outline.point(builder.draw(layout.kidney_at), 1)
        kidney_size = anatomy.kidney_right
        half_thickness_mm = 0.25 * (kidney_size.width_mm + kidney_size.depth_mm)
        depth_mm = half_thickness_mm + builder.draw(layout.kidney_gap_mm)
        kidney_pose = Pose(
            edge_x - depth_mm * math.sin(fitted.angle_rad),
            edge_z + depth_mm * math.cos(fitted.angle_rad),
            fitted.angle_rad + math.radians(builder.draw(layout.kidney_angle_deg)),
            bool(rng.random() < 0.5),
        )
        length_fraction = builder.draw(layout.kidney_length_fraction)
        kidney = kidney_long(anatomy, "right", kidney_pose, rng, tissues, length_fraction)
        builder.layers += kidney.layers
    tip_x, tip_z = outline.point(1.0)
    builder.bowel_near(tip_x, tip_z, layout.bowel)
    builder.layers += liver.layers
    builder.ribs(builder.draw_count(layout.ribs))
    return builder.scene("liver_right_long", fitted.angle_rad)


def liver_transverse_section(
    builder: SceneBuilder, semi_width_mm: float, semi_depth_mm: float, x: float
) -> Star:
    """A transverse liver section centred at plane ``x``, its top just under the wall."""
    z = builder.wall_inner_z - 4.0 + semi_depth_mm
    angle_rad = math.radians(builder.uniform(-10, 10))
    return Star(x, z, angle_rad, semi_width_mm, semi_depth_mm, wobble(builder.rng, 3, 0.04, 2.0))


def _diaphragm_under(builder: SceneBuilder, liver: Star) -> None:
    """Diaphragm along the deep half of a transverse liver section, mirror image beyond."""
    deep = HalfPlane(0.0, -1.0, -(liver.cz + 0.15 * liver.semi_v))
    mirror = replace(liver, semi_u=liver.semi_u + 70.0, semi_v=liver.semi_v + 70.0)
    shell = replace(liver, semi_u=liver.semi_u + 3.5, semi_v=liver.semi_v + 3.5)
    builder.layers += [
        Layer(Intersect(mirror, (deep,)), builder.tissues["mirror"]),
        Layer(Intersect(shell, (deep,)), builder.tissues["diaphragm"], 8.0, 0.8),
    ]


def liver_right_trans_view(builder: SceneBuilder, layout: LiverRightTransLayout) -> Scene:
    """Right lobe transverse section: hepatic veins, IVC, portal branches (no task)."""
    anatomy, tissues, rng = builder.anatomy, builder.tissues, builder.rng
    liver = liver_transverse_section(
        builder,
        0.5 * anatomy.liver.width_mm * builder.draw(layout.semi_width_fraction),
        0.5 * anatomy.liver.depth_mm * builder.draw(layout.semi_depth_fraction),
        builder.draw(layout.lateral_mm),
    )
    _diaphragm_under(builder, liver)
    if rng.random() < layout.kidney_probability:
        kidney_x, kidney_z = liver.point(math.radians(builder.draw(layout.kidney_at_deg)))
        kidney_pose = Pose(kidney_x, kidney_z + 10, 0.3, False)
        builder.layers += kidney_trans(anatomy, "right", kidney_pose, rng, tissues).layers
    builder.layers.append(Layer(liver, tissues["liver"], 4.0, 0.6))
    ivc_x, ivc_z = liver.point(math.radians(builder.draw(layout.ivc_at_deg)))
    inset = layout.ivc_inset_fraction
    ivc_x, ivc_z = ivc_x - inset * (ivc_x - liver.cx), ivc_z - inset * (ivc_z - liver.cz)
    if rng.random() < layout.hepatic_veins_probability:  # three veins converging on the IVC
        directions_deg = [builder.draw(span) for span in layout.hepatic_vein_directions_deg]
        for direction_deg in directions_deg:
            half_length_mm = builder.draw(layout.hepatic_vein_half_length_mm)
            direction_rad = math.radians(direction_deg)
            vein = band_from(
                (ivc_x, ivc_z),
                direction_rad,
                half_length_mm,
                builder.uniform(3.0, 5.0),
                bend=builder.uniform(-4, 4),
                taper=0.6,
                power=3.0,
            )
            builder.layers.append(Layer(Intersect(vein, (liver,)), tissues["blood"]))
    ivc = Star(ivc_x, ivc_z, 0.0, 0.75 * anatomy.ivc_mm, 0.5 * anatomy.ivc_mm)
    builder.layers.append(Layer(ivc, tissues["blood"]))
    builder.layers += liver_vessels(
        liver,
        (liver.cx, liver.cz - 0.2 * liver.semi_v),
        0.5 * liver.semi_v,
        rng,
        tissues,
        builder.draw_count(layout.portal_branches),
    )
    if rng.random() < layout.gallbladder_probability:
        at_x, at_z = liver.point(math.radians(builder.draw(layout.gallbladder_at_deg)))
        angle_rad = math.radians(builder.draw(layout.gallbladder_angle_deg))
        gallbladder_pose = Pose(at_x - 10, at_z - 25, angle_rad)
        builder.layers += gallbladder(anatomy, gallbladder_pose, rng, tissues)
    builder.ribs(builder.draw_count(layout.ribs))
    return builder.scene("liver_right_trans", liver.angle)


def _left_lobe(builder: SceneBuilder, layout: LiverLeftLayout) -> Band:
    """Left lobe section: a wedge at most 40-64 mm thick, its top just under the wall."""
    shape = shape_rng(builder.anatomy, "liver_left")
    half_length_mm = builder.draw(layout.half_length_mm)
    unit = Band(
        builder.draw(layout.lateral_mm),
        0.0,
        math.radians(builder.draw(layout.angle_deg)),
        half_length_mm,
        1.0,
        -builder.draw(layout.sag_mm),
        taper=float(shape.uniform(0.9, 1.4)),
        wobble=wobble(shape, 2, 0.05),
    )
    widest = float(np.max(unit.thickness(np.linspace(-1.0, 1.0, 41))))
    lobe = replace(unit, half_thickness=float(shape.uniform(20.0, 32.0)) / widest)
    top_z = min(lobe.point(s, -1)[1] for s in np.linspace(-0.8, 0.8, 9))
    return replace(lobe, cz=builder.wall_inner_z - 3.0 - top_z)


def liver_left_view(builder: SceneBuilder, layout: LiverLeftLayout) -> Scene:
    """Left lobe section over the aorta and spine, sagittal or transverse (no task)."""
    tissues, rng = builder.tissues, builder.rng
    lobe = _left_lobe(builder, layout)
    bottom_z = max(lobe.point(s, 1)[1] for s in np.linspace(-0.8, 0.8, 9))
    if layout.plane == "long":
        if rng.random() < layout.heart_probability:
            dome_x, dome_z = lobe.point(-1.0)
            heart = Star(
                dome_x - 25, dome_z + 25, 0.4, builder.uniform(35, 45), builder.uniform(28, 35)
            )
            chambers = replace(heart, semi_u=heart.semi_u - 9, semi_v=heart.semi_v - 9)
            builder.layers += [
                Layer(heart, tissues["myocardium"], 5.0, 0.8),
                Layer(chambers, tissues["blood"]),
            ]
        shown_z = midline_long(builder, bottom_z + builder.draw(layout.aorta_below_lobe_mm))
    else:
        aorta_x = builder.draw(layout.aorta_lateral_mm)
        shown_z = midline_trans(
            builder, aorta_x, bottom_z + builder.draw(layout.aorta_below_lobe_mm)
        )
    builder.show_depth(shown_z)  # the sonographer shows the aorta and the spine behind it
    tip_x, tip_z = lobe.point(1.0)
    builder.bowel_near(tip_x, tip_z, layout.bowel)
    builder.layers.append(Layer(lobe, tissues["liver"], 4.0, 0.6))
    centre, extent_mm = lobe.point(-0.3), 0.5 * lobe.half_thickness
    portal_branches = builder.draw_count(layout.portal_branches)
    builder.layers += liver_vessels(lobe, centre, extent_mm, rng, tissues, portal_branches)
    if layout.plane == "trans" and rng.random() < layout.ligamentum_teres_probability:
        at_x, at_z = lobe.point(builder.draw(layout.ligamentum_teres_at))
        ligament = circle(at_x, at_z, builder.uniform(3.0, 5.0))
        builder.layers.append(Layer(ligament, tissues["ligamentum_teres"], 6.0, 0.8))
    return builder.scene(f"liver_left_{layout.plane}", lobe.angle)
