"""Building one view's scene: the probe's sector, the body wall, organs fitted into the
sector, the task's landmarks and the beams that shadows must leave clear (plane mm, see
:mod:`abdus.phantom.scan`).

:class:`SceneBuilder` holds that state while a view is laid out; the layouts of the views
themselves are :mod:`abdus.phantom.views` (and the modules it names). Every draw comes from the
builder's ``rng``, in a fixed order, so the same generator state gives the same scene.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from abdus.phantom.anatomy import PatientAnatomy
from abdus.phantom.layouts import BowelLoops, Placement, Span
from abdus.phantom.organs import Organ, Pose, liver_vessels
from abdus.phantom.physics import Layer, Tissue
from abdus.phantom.scan import Band, HalfPlane, Intersect, Star, wobble
from abdus.phantom.surroundings import body_wall, bowel_loop
from abdus.phantom.tissues import tissue_table

MARGIN_MM = 7.0  # landmarks stay this far inside the sector edges
MAX_DEPTH_MM = 240.0  # the deepest imaging depth the simulated scanners offer


@dataclass
class Scene:
    """Everything to paint for one view: layers in paint order on a ``base`` tissue, the
    task's landmarks (plane mm) and the imaging depth they need (mm below the skin)."""

    name: str
    layers: list[Layer]
    base: Tissue
    landmarks: dict[str, tuple[float, float]]
    min_depth_mm: float
    tilt_deg: float
    rotation_deg: float
    target: Any = None  # outline of the measured organ (landmarks lie on it), or None


OrganBuilder = Callable[[Pose, np.random.Generator], Organ]
PoseSampler = Callable[[float], Pose]  # 0: the sampled pose .. 1: the view's fallback pose


def trial_rng() -> np.random.Generator:
    """A fixed generator for trial placements (outlines do not depend on it)."""
    return np.random.default_rng(0)


def _outline_points(outline: Any) -> list[tuple[float, float]]:
    if isinstance(outline, Band):
        return [outline.point(s, e) for s in np.linspace(-1, 1, 11) for e in (-1, 1)]
    return [outline.point(t) for t in np.linspace(0.0, 2 * math.pi, 20, endpoint=False)]


class SceneBuilder:
    """Shared state while one view's scene is built: probe, patient, tissues, body wall,
    layers, the task's landmarks and the beam angles that shadows must leave clear."""

    def __init__(
        self,
        anatomy: PatientAnatomy,
        probe_radius_mm: float,
        sector_deg: float,
        rng: np.random.Generator,
    ) -> None:
        self.anatomy, self.rng, self.probe_radius_mm = anatomy, rng, probe_radius_mm
        self.half_sector_rad = math.radians(sector_deg) / 2.0
        self.tissues = tissue_table(anatomy)
        self.wall_layers, self.wall_mm = body_wall(anatomy, probe_radius_mm, rng, self.tissues)
        self.layers: list[Layer] = []
        self.landmarks: dict[str, tuple[float, float]] = {}
        self.shadow_free_rad: list[tuple[float, float]] = []  # beam-angle spans kept clear
        self.keep_organ_unshadowed = bool(rng.random() < 0.8)  # most standard views do
        self.min_depth_mm = 0.0
        self.tilt_deg = round(float(rng.uniform(-12.0, 12.0)), 2)
        self.target: Any = None
        self.off_axis = False  # 'others': push the organ across the sector edge (partial view)

    @property
    def wall_inner_z(self) -> float:
        """Plane z (mm) of the body wall's inner surface on the central beam."""
        return self.probe_radius_mm + self.wall_mm

    def uniform(self, low: float, high: float) -> float:
        """Uniform draw between ``low`` and ``high`` (either order)."""
        return low + (high - low) * float(self.rng.random())

    def draw(self, span: Span) -> float:
        """Uniform draw from ``span``."""
        return self.uniform(span.low, span.high)

    def draw_count(self, span: Span) -> int:
        """A whole number from ``span``, both ends included."""
        return int(self.rng.integers(int(span.low), int(span.high) + 1))

    def beam_point(self, depth_mm: float, beam_deg: float) -> tuple[float, float]:
        """Plane point ``depth_mm`` below the skin on the beam at ``beam_deg``."""
        r, phi = self.probe_radius_mm + depth_mm, math.radians(beam_deg)
        return r * math.sin(phi), r * math.cos(phi)

    def pose_sampler(self, placement: Placement) -> PoseSampler:
        """Draw a placement now; the sampler blends it towards the fallback pose (centred,
        long axis level) and reads the wall depth when called (the wall may be compressed)."""
        flip = bool(self.rng.random() < placement.flip_probability)
        angle_rad = math.radians(self.draw(placement.angle_deg))
        lateral_mm = self.draw(placement.lateral_mm)
        gap_mm = self.draw(placement.gap_below_wall_mm)

        def pose(towards_fallback: float) -> Pose:
            keep = 1 - towards_fallback
            z_mm = self.wall_inner_z + gap_mm + placement.centre_below_gap_mm
            return Pose(lateral_mm * keep, z_mm, angle_rad * keep, flip, self.tilt_deg)

        return pose

    def place(self, build: OrganBuilder, sample_pose: PoseSampler) -> tuple[Pose, Organ]:
        """Fit the organ into the sector (:meth:`fit`), then build it with the scene's rng."""
        pose = self.fit(build, sample_pose)
        return pose, build(pose, self.rng)

    def fit(self, build: OrganBuilder, sample_pose: PoseSampler) -> Pose:
        """Shift a sampled pose down until the organ's landmarks sit inside the sector and
        its outline below the body wall; resample (towards the view's fallback pose) when the
        depth would exceed 240 mm, and as a last resort press the probe harder (fat
        compresses) for very large patients."""
        for fat_scale in (1.0, 0.6, 0.3):
            if fat_scale < 1.0:
                self.wall_layers, self.wall_mm = body_wall(
                    self.anatomy, self.probe_radius_mm, self.rng, self.tissues, fat_scale
                )
            for attempt in range(12):
                pose = sample_pose(min(attempt / 8.0, 1.0))
                shifted = self._fit_once(build(pose, trial_rng()), pose)
                if shifted is not None:
                    return self._off_axis(shifted)
        raise RuntimeError("no placement of the organ fits a 240 mm sector")

    def _fit_once(self, organ: Organ, pose: Pose) -> Pose | None:
        """The pose shifted down just enough, or None when the landmarks would lie deeper
        than the scanner can show."""
        half_sector = self.half_sector_rad
        landmarks = list(organ.points.values())
        below_wall_sq = (self.wall_inner_z + 4.0) ** 2
        shifts_mm = [
            (abs(x) + MARGIN_MM / math.cos(half_sector)) / math.tan(half_sector) - z
            for x, z in landmarks
        ]
        shifts_mm += [
            math.sqrt(max(below_wall_sq - x * x, 0.0)) - z
            for x, z in _outline_points(organ.outline)
        ]
        shift_mm = max(0.0, *shifts_mm)
        deepest = max(math.hypot(x, z + shift_mm) for x, z in landmarks)
        depth_mm = deepest - self.probe_radius_mm + 12.0
        if depth_mm > MAX_DEPTH_MM:
            return None
        self.min_depth_mm = max(self.min_depth_mm, depth_mm)
        return replace(pose, z_mm=pose.z_mm + shift_mm)

    def _off_axis(self, pose: Pose) -> Pose:
        """Unchanged for standard views; for 'others' the organ is moved across an edge."""
        if not self.off_axis:
            return pose
        edge_mm = pose.z_mm * math.tan(self.half_sector_rad) * self.uniform(0.6, 1.0)
        return replace(pose, x_mm=edge_mm if self.rng.random() < 0.5 else -edge_mm)

    def record_task(self, code: str, organ: Organ) -> None:
        """Record the organ's axis ends as the task's landmarks (``la_1`` left, ``sa_1`` up)."""
        points = organ.points
        long_axis = sorted((points["la_1"], points["la_2"]))
        named = {f"{code}_la_1": long_axis[0], f"{code}_la_2": long_axis[1]}
        if "sa_1" in points:
            short_axis = sorted((points["sa_1"], points["sa_2"]), key=lambda p: p[1])
            named |= {f"{code}_sa_1": short_axis[0], f"{code}_sa_2": short_axis[1]}
        self.landmarks |= named
        self.target = organ.outline
        self.shadow_free_rad += [(math.atan2(x, z),) * 2 for x, z in named.values()]
        if self.keep_organ_unshadowed and not self.off_axis:
            beams = [math.atan2(x, z) for x, z in _outline_points(organ.outline)]
            self.shadow_free_rad.append((min(beams), max(beams)))

    def clear_of_landmarks(self, x: float, z: float, radius_mm: float) -> bool:
        """True when the shadow of a reflector at plane (x, z) of ``radius_mm`` misses the
        landmarks (and, for most standard views, the whole measured organ)."""
        beam = math.atan2(x, z)
        half_width = math.asin(min(1.0, radius_mm / math.hypot(x, z))) + 0.03
        return all(
            beam + half_width < low or beam - half_width > high
            for low, high in self.shadow_free_rad
        )

    def ribs(self, count: int) -> None:
        """Rib cross-sections in the wall muscle: bright arcs with a clean acoustic shadow."""
        for _ in range(count):
            depth_mm = self.wall_mm - self.uniform(4.0, 8.0)
            beam_deg = self.uniform(-0.85, 0.85) * math.degrees(self.half_sector_rad)
            x, z = self.beam_point(depth_mm, beam_deg)
            semi_across_beam_mm = self.uniform(4.0, 6.5)
            if self.clear_of_landmarks(x, z, semi_across_beam_mm):
                rib = Star(x, z, -math.atan2(x, z), semi_across_beam_mm, self.uniform(3.5, 5.0))
                self.wall_layers.append(Layer(rib, self.tissues["bone"], 10.0, 0.8))

    def bowel(self, x_mm: Span, z_mm: Span, count: int, gas_probability: float) -> None:
        """``count`` bowel loops centred in a plane box, below the wall; each has gas with
        ``gas_probability`` unless its shadow would cover the landmarks."""
        for _ in range(count):
            radius_mm = self.uniform(7.0, 14.0)
            x, z = self.draw(x_mm), max(self.draw(z_mm), self.wall_inner_z + radius_mm)
            with_gas = self.rng.random() < gas_probability and self.clear_of_landmarks(
                x, z, radius_mm
            )
            self.layers += bowel_loop((x, z), radius_mm, with_gas, self.rng, self.tissues)

    def bowel_near(self, x: float, z: float, loops: BowelLoops) -> None:
        """Bowel loops in the box ``loops`` describes around plane point (x, z)."""
        count = self.draw_count(loops.count)
        x_mm, z_mm = loops.lateral_mm.offset(x), loops.below_mm.offset(z)
        self.bowel(x_mm, z_mm, count, loops.gas.probability(self.anatomy))

    def diaphragm(self, outline: Band, side: int, up_to: float) -> None:
        """Bright diaphragm hugging one ``side`` of a band outline up to ``s = up_to`` along
        it, with the mirror image of the liver / lung beyond it."""
        c, s = math.cos(outline.angle), math.sin(outline.angle)
        limit = HalfPlane(c, s, up_to * outline.half_length + outline.cx * c + outline.cz * s)
        mirror = Intersect(outline.grown(70.0, side=side), (limit,))
        shell = Intersect(outline.grown(self.uniform(2.5, 4.0), side=side), (limit,))
        self.layers += [
            Layer(mirror, self.tissues["mirror"]),
            Layer(shell, self.tissues["diaphragm"], 8.0, 0.8),
        ]

    def liver_over(self, outline: Any, gap_mm: float, extend_mm: float = 0.0) -> Band:
        """A liver lobe lying over (shallower than) ``outline``, ``gap_mm`` above it, tip
        towards screen right: the acoustic window of a right kidney view."""
        points = _outline_points(outline)
        organ_x = float(np.mean([p[0] for p in points]))
        edge_z = min(p[1] for p in points) - gap_mm
        angle_rad = math.radians(self.uniform(-25.0, 8.0))
        half_length_mm = self.uniform(80.0, 105.0) + extend_mm
        centre_x = organ_x - self.uniform(10.0, 45.0)
        s_over = (organ_x - centre_x) * math.cos(angle_rad) / half_length_mm  # s above organ
        unit = Band(
            centre_x,
            0.0,
            angle_rad,
            half_length_mm,
            1.0,
            -self.uniform(3.0, 10.0),
            taper=0.7,
            wobble=wobble(self.rng, 2, 0.04),
        )
        wanted_mm = (edge_z - self.wall_inner_z + 15.0) / 2.0
        liver = replace(unit, half_thickness=wanted_mm / max(float(unit.thickness(s_over)), 0.3))
        for _ in range(2):  # put the lobe's deep edge just above the organ
            deep_z = liver.point(s_over, 1)[1]
            liver = replace(liver, cz=liver.cz + edge_z - deep_z)
        self.layers.append(Layer(liver, self.tissues["liver"], 4.0, 0.6))
        self.layers += liver_vessels(
            liver,
            liver.point(-0.2),
            0.5 * liver.half_thickness,
            self.rng,
            self.tissues,
            int(self.rng.integers(2, 6)),
        )
        return liver

    def deep_muscle(self, below: Any, gap_mm: float) -> None:
        """Psoas / quadratus lumborum band ``gap_mm`` deep to an organ outline."""
        points = _outline_points(below)
        x = float(np.mean([p[0] for p in points]))
        z = max(p[1] for p in points) + gap_mm
        x += self.uniform(-20, 20)
        angle_rad = math.radians(self.uniform(-15, 15))
        band = Band(x, z, angle_rad, 130.0, self.uniform(14.0, 22.0), power=4.0)
        self.layers.append(Layer(band, self.tissues["psoas"], 4.0, 0.8))

    def show_depth(self, z: float) -> None:
        """Make the imaging depth reach plane ``z`` (mm), as far as the scanner allows."""
        self.min_depth_mm = max(self.min_depth_mm, min(z - self.probe_radius_mm, MAX_DEPTH_MM))

    def scene(self, name: str, rotation_rad: float = 0.0) -> Scene:
        """The finished scene: organ layers under the body wall (painted last)."""
        return Scene(
            name,
            self.layers + self.wall_layers,
            self.tissues["background"],
            self.landmarks,
            self.min_depth_mm,
            self.tilt_deg,
            round(math.degrees(rotation_rad), 2),
            self.target,
        )
