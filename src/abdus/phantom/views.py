"""Per-view scene layouts: where the organs lie in each standard plane (plane mm, see
:mod:`abdus.phantom.scan`).

``build_scene(anatomy, view, probe_radius_mm, sector_deg, rng)`` returns the :class:`Scene` of
one view: the tissue layers in paint order, the task's landmarks and the imaging depth they
need. Kidney and spleen views are here, liver views in :mod:`abdus.phantom.liver_views`, the
'others' planes of other anatomy in :mod:`abdus.phantom.other_views`; all of them use the
:class:`~abdus.phantom.scene.SceneBuilder`. The scanner itself (settings, painting, screen,
overlays) is :mod:`abdus.phantom.render`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np

from abdus.phantom.anatomy import PatientAnatomy
from abdus.phantom.layouts import (
    KIDNEY_LONG,
    KIDNEY_TRANS,
    LIVER_LEFT_LONG,
    LIVER_LEFT_TRANS,
    LIVER_RIGHT_LONG,
    LIVER_RIGHT_TRANS,
    SPLEEN_LONG,
    SPLEEN_TRANS,
    KidneyLongLayout,
    KidneyTransLayout,
    Span,
    SpleenLayout,
)
from abdus.phantom.liver_views import (
    liver_left_view,
    liver_right_long_view,
    liver_right_trans_view,
)
from abdus.phantom.organs import Pose, kidney_long, kidney_trans, spleen_section
from abdus.phantom.other_views import other_anatomy_view
from abdus.phantom.physics import Layer
from abdus.phantom.scan import Band
from abdus.phantom.scene import Scene, SceneBuilder, trial_rng

__all__ = ["Scene", "build_scene"]


def kidney_long_view(builder: SceneBuilder, side: str, layout: KidneyLongLayout) -> Scene:
    """Kidney long section (task KL) on ``side`` ('right' or 'left')."""
    anatomy, tissues, rng = builder.anatomy, builder.tissues, builder.rng
    sample_pose = builder.pose_sampler(layout.placement)
    # 'others' sometimes cuts the kidney obliquely: a shorter, off-axis section.
    oblique = builder.off_axis and rng.random() < layout.oblique_probability
    length_fraction = builder.draw(layout.oblique_length_fraction) if oblique else 1.0
    fitted, kidney = builder.place(
        lambda pose, pose_rng: kidney_long(anatomy, side, pose, pose_rng, tissues, length_fraction),
        sample_pose,
    )
    builder.record_task("kl", kidney)
    outline = kidney.outline
    builder.deep_muscle(outline, builder.draw(layout.psoas_gap_mm))
    if side == "right":
        builder.liver_over(outline, builder.draw(layout.liver_gap_mm), layout.liver_extension_mm)
    else:
        angle_rad = fitted.angle_rad + math.radians(builder.draw(layout.spleen_angle_deg))
        trial = spleen_section(anatomy, "long", Pose(0.0, 0.0, angle_rad), trial_rng(), tissues)
        pole_x, pole_z = outline.point(-0.7, -1)
        lift_mm = trial.outline.half_thickness + builder.draw(layout.spleen_gap_mm)
        along_mm = 0.4 * trial.outline.half_length
        spleen_pose = Pose(
            pole_x - along_mm * math.cos(angle_rad) + lift_mm * math.sin(angle_rad),
            pole_z - along_mm * math.sin(angle_rad) - lift_mm * math.cos(angle_rad),
            angle_rad,
        )
        builder.layers += spleen_section(anatomy, "long", spleen_pose, rng, tissues).layers
        builder.bowel(
            Span(fitted.x_mm, outline.point(1.0)[0] + layout.bowel_beyond_kidney_mm),
            Span(builder.wall_inner_z, outline.point(0.5, -1)[1] - layout.bowel_above_kidney_mm),
            layout.bowel_loops,
            layout.bowel_gas.probability(anatomy),
        )
    builder.layers += kidney.layers
    builder.ribs(builder.draw_count(layout.ribs))
    return builder.scene(f"kidney_{side}_long", fitted.angle_rad)


def kidney_trans_view(builder: SceneBuilder, side: str, layout: KidneyTransLayout) -> Scene:
    """Kidney transverse section (task KT) on ``side`` ('right' or 'left')."""
    anatomy, tissues, rng = builder.anatomy, builder.tissues, builder.rng
    fitted, kidney = builder.place(
        lambda pose, pose_rng: kidney_trans(anatomy, side, pose, pose_rng, tissues),
        builder.pose_sampler(layout.placement),
    )
    builder.record_task("kt", kidney)
    outline = kidney.outline
    builder.deep_muscle(outline, builder.draw(layout.psoas_gap_mm))
    medial = 1.0 if side == "right" else -1.0  # patient's right is screen left (transverse)
    spine_depth_mm = (
        outline.cz - builder.probe_radius_mm + builder.draw(layout.spine_below_centre_mm)
    )
    spine_z = builder.beam_point(spine_depth_mm, 0)[1]
    if rng.random() < layout.vertebra_probability:
        vertebra = Band(
            fitted.x_mm + medial * builder.draw(layout.vertebra_medial_mm),
            spine_z,
            0.0,
            builder.draw(layout.vertebra_half_width_mm),
            3.0,
            -6.0,
            power=2.0,
        )
        builder.layers.append(Layer(vertebra, tissues["bone"], 10.0, 0.8))
    if side == "right":
        builder.liver_over(outline, builder.draw(layout.liver_gap_mm))
        builder.bowel(
            layout.right_bowel_lateral_mm.offset(fitted.x_mm),
            Span(builder.wall_inner_z, fitted.z_mm - layout.right_bowel_above_centre_mm),
            1,
            layout.right_bowel_gas.probability(anatomy),
        )
    else:
        top_x, top_z = outline.point(-0.5 * math.pi)
        spleen_pose = Pose(
            top_x + builder.draw(layout.spleen_lateral_mm),
            top_z - builder.draw(layout.spleen_above_mm),
            math.radians(builder.draw(layout.spleen_angle_deg)),
            False,
        )
        builder.layers += spleen_section(anatomy, "trans", spleen_pose, rng, tissues).layers
        builder.bowel(
            layout.left_bowel_lateral_mm.offset(fitted.x_mm),
            Span(builder.wall_inner_z, top_z - layout.left_bowel_above_kidney_mm),
            layout.left_bowel_loops,
            layout.left_bowel_gas.probability(anatomy),
        )
    builder.layers += kidney.layers
    builder.ribs(builder.draw_count(layout.ribs))
    return builder.scene(f"kidney_{side}_trans", fitted.angle_rad)


def spleen_view(builder: SceneBuilder, layout: SpleenLayout) -> Scene:
    """Spleen long (task SL) or transverse (task ST) section, the left kidney beyond it."""
    anatomy, tissues, rng, plane = builder.anatomy, builder.tissues, builder.rng, layout.plane
    fitted, spleen = builder.place(
        lambda pose, pose_rng: spleen_section(anatomy, plane, pose, pose_rng, tissues),
        builder.pose_sampler(layout.placement),
    )
    builder.record_task("sl" if plane == "long" else "st", spleen)
    outline = spleen.outline
    builder.diaphragm(outline, -fitted.sign, builder.draw(layout.diaphragm_up_to))
    hilum_x, hilum_z = outline.point(builder.draw(layout.kidney_at), fitted.sign)
    kidney_pose = Pose(
        hilum_x + builder.draw(layout.kidney_lateral_mm),
        hilum_z + builder.draw(layout.kidney_below_mm) * fitted.sign,
        fitted.angle_rad + math.radians(builder.draw(layout.kidney_angle_deg)),
        bool(rng.random() < 0.5),
    )
    if plane == "long":
        length_fraction = builder.draw(layout.kidney_length_fraction)
        kidney = kidney_long(anatomy, "left", kidney_pose, rng, tissues, length_fraction)
    else:
        kidney = kidney_trans(anatomy, "left", kidney_pose, rng, tissues)
    if rng.random() < layout.kidney_shown_probability:
        builder.layers += kidney.layers
    builder.bowel_near(fitted.x_mm, fitted.z_mm, layout.bowel)
    builder.layers += spleen.layers
    builder.ribs(builder.draw_count(layout.ribs))
    return builder.scene(f"spleen_{plane}", fitted.angle_rad)


# Drawn by index for 'others' partial views: the order is part of what a seed generates.
STANDARD_SCENES: dict[str, Callable[[SceneBuilder], Scene]] = {
    "liver_right_long": partial(liver_right_long_view, layout=LIVER_RIGHT_LONG),
    "liver_right_trans": partial(liver_right_trans_view, layout=LIVER_RIGHT_TRANS),
    "liver_left_long": partial(liver_left_view, layout=LIVER_LEFT_LONG),
    "liver_left_trans": partial(liver_left_view, layout=LIVER_LEFT_TRANS),
    "kidney_right_long": partial(kidney_long_view, side="right", layout=KIDNEY_LONG),
    "kidney_right_trans": partial(kidney_trans_view, side="right", layout=KIDNEY_TRANS),
    "kidney_left_long": partial(kidney_long_view, side="left", layout=KIDNEY_LONG),
    "kidney_left_trans": partial(kidney_trans_view, side="left", layout=KIDNEY_TRANS),
    "spleen_long": partial(spleen_view, layout=SPLEEN_LONG),
    "spleen_trans": partial(spleen_view, layout=SPLEEN_TRANS),
}


def build_scene(
    anatomy: PatientAnatomy,
    view: str,
    probe_radius_mm: float,
    sector_deg: float,
    rng: np.random.Generator,
) -> Scene:
    """The scene of ``view``. ``others`` is either a non-standard plane of other anatomy or an
    off-axis / partial version of a standard scene (organ cut by the sector edge), so that the
    classes overlap as in real exams; its landmarks are dropped.

    Raises ValueError naming the valid views for an unknown ``view``.
    """
    if view != "others" and view not in STANDARD_SCENES:
        valid = ", ".join([*STANDARD_SCENES, "others"])
        raise ValueError(f"unknown view {view!r}; valid views: {valid}")
    builder = SceneBuilder(anatomy, probe_radius_mm, sector_deg, rng)
    if view != "others":
        return STANDARD_SCENES[view](builder)
    if rng.random() < 0.45:
        return other_anatomy_view(builder)
    source = list(STANDARD_SCENES)[int(rng.integers(len(STANDARD_SCENES)))]
    builder.off_axis = True
    scene = STANDARD_SCENES[source](builder)
    scene.landmarks, scene.name, scene.target = {}, f"others_partial_{source}", None
    return scene
