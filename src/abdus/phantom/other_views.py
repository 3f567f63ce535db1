"""'others' planes of other anatomy: gallbladder, bladder, aorta, pancreas, bowel (plane mm,
see :mod:`abdus.phantom.scan`). They carry no landmarks; ``top`` is the plane z (mm) of the
body wall's inner surface."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from abdus.phantom.layouts import (
    AORTA_PLANE,
    BLADDER_PLANE,
    BOWEL_PLANE,
    GALLBLADDER_PLANE,
    OTHERS_RIBS,
    PANCREAS_PLANE,
    BladderPlane,
    BowelPlane,
    GallbladderPlane,
    MidlinePlane,
    Span,
)
from abdus.phantom.liver_views import liver_transverse_section
from abdus.phantom.midline import midline_long, midline_trans
from abdus.phantom.organs import Pose, liver_vessels
from abdus.phantom.physics import Layer
from abdus.phantom.scan import Star, wobble
from abdus.phantom.scene import Scene, SceneBuilder
from abdus.phantom.surroundings import gallbladder


def _gallbladder_plane(builder: SceneBuilder, top: float, layout: GallbladderPlane) -> None:
    liver = liver_transverse_section(
        builder,
        builder.draw(layout.liver_semi_width_mm),
        builder.draw(layout.liver_semi_depth_mm),
        builder.draw(layout.liver_lateral_mm),
    )
    tissues = builder.tissues
    builder.layers.append(Layer(liver, tissues["liver"], 4.0, 0.6))
    builder.layers += liver_vessels(
        liver,
        (liver.cx, liver.cz),
        layout.portal_extent_mm,
        builder.rng,
        tissues,
        layout.portal_branches,
    )
    x = builder.draw(layout.gallbladder_lateral_mm)
    z = top + builder.draw(layout.gallbladder_below_wall_mm)
    angle_rad = math.radians(builder.draw(layout.gallbladder_angle_deg))
    builder.layers += gallbladder(builder.anatomy, Pose(x, z, angle_rad), builder.rng, tissues)


def _bladder_plane(builder: SceneBuilder, top: float, layout: BladderPlane) -> None:
    squarish = (
        (builder.draw(layout.squareness), 4.0, 0.0),
        *wobble(builder.rng, 2, 0.04, 2.0),
    )
    z = top + builder.draw(layout.below_wall_mm)
    bladder = Star(
        builder.draw(layout.lateral_mm),
        z,
        math.radians(builder.draw(layout.angle_deg)),
        builder.draw(layout.semi_width_mm),
        builder.draw(layout.semi_depth_mm),
        squarish,
    )
    builder.layers.append(Layer(bladder, builder.tissues["fluid"], 7.0, 0.8))
    builder.bowel(
        layout.bowel_lateral_mm,
        Span(z + bladder.semi_v + layout.bowel_gap_mm, z + layout.bowel_deepest_mm),
        layout.bowel_loops,
        layout.bowel_gas.probability(builder.anatomy),
    )


def _midline_plane(builder: SceneBuilder, top: float, layout: MidlinePlane) -> None:
    builder.bowel_near(0.0, top, layout.bowel)
    if layout.plane == "long":
        shown_z = midline_long(builder, top + builder.draw(layout.aorta_below_wall_mm))
    else:
        aorta_x = builder.draw(layout.aorta_lateral_mm)
        shown_z = midline_trans(builder, aorta_x, top + builder.draw(layout.aorta_below_wall_mm))
    builder.show_depth(shown_z)


def _bowel_plane(builder: SceneBuilder, top: float, layout: BowelPlane) -> None:
    builder.bowel_near(0.0, top, layout.bowel)


# Drawn by index: the order is part of what a seed generates.
OTHER_ANATOMY: dict[str, Callable[[SceneBuilder, float], None]] = {
    "gallbladder": partial(_gallbladder_plane, layout=GALLBLADDER_PLANE),
    "bladder": partial(_bladder_plane, layout=BLADDER_PLANE),
    "aorta": partial(_midline_plane, layout=AORTA_PLANE),
    "pancreas": partial(_midline_plane, layout=PANCREAS_PLANE),
    "bowel": partial(_bowel_plane, layout=BOWEL_PLANE),
}


def other_anatomy_view(builder: SceneBuilder) -> Scene:
    """A non-standard plane: gallbladder, bladder, aorta, pancreas or bowel."""
    kinds = list(OTHER_ANATOMY)
    kind = kinds[int(builder.rng.integers(len(kinds)))]
    if kind == "gallbladder" and builder.anatomy.gallbladder is None:
        kind = "bowel"  # after cholecystectomy there is no gallbladder to show
    OTHER_ANATOMY[kind](builder, builder.wall_inner_z)
    builder.ribs(builder.draw_count(OTHERS_RIBS))
    return builder.scene(f"others_{kind}")
