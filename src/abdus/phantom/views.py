"""Per-view scene layouts: where the organs lie in each standard plane (plane mm, see
:mod:`abdus.phantom.scan`).

``build_scene(anatomy, view, radius, sector_deg, rng)`` returns the :class:`Scene` of one view:
the tissue layers in paint order, the task's landmarks and the imaging depth they need. The
scanner itself (settings, painting, screen, overlays) is :mod:`abdus.phantom.render`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from abdus.phantom.anatomy import (
    Organ,
    PatientAnatomy,
    Pose,
    body_wall,
    bowel_loop,
    gallbladder,
    kidney_long,
    kidney_trans,
    liver_right_long,
    liver_vessels,
    shape_rng,
    spleen_section,
    tissue_table,
)
from abdus.phantom.physics import Layer, Tissue
from abdus.phantom.scan import Band, HalfPlane, Intersect, Star, circle, wobble

_MARGIN_MM = 7.0  # landmarks stay this far inside the sector edges
_MAX_DEPTH_MM = 240.0


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


def _outline_points(outline: Any) -> list[tuple[float, float]]:
    if isinstance(outline, Band):
        return [outline.point(s, e) for s in np.linspace(-1, 1, 11) for e in (-1, 1)]
    return [outline.point(t) for t in np.linspace(0.0, 2 * math.pi, 20, endpoint=False)]


class _Builder:
    """Shared state while one view's scene is built (probe, patient, tissues, layers)."""

    def __init__(
        self, anatomy: PatientAnatomy, radius: float, sector_deg: float, rng: np.random.Generator
    ) -> None:
        self.anatomy, self.rng, self.radius = anatomy, rng, radius
        self.half = math.radians(sector_deg) / 2.0
        self.t = tissue_table(anatomy)
        self.wall_layers, self.wall = body_wall(anatomy, radius, rng, self.t)
        self.layers: list[Layer] = []
        self.landmarks: dict[str, tuple[float, float]] = {}
        self.avoid: list[tuple[float, float]] = []  # beam-angle spans shadows must not cover
        self.strict = bool(rng.random() < 0.8)  # most standard views keep the organ unshadowed
        self.min_depth = 0.0
        self.tilt = round(float(rng.uniform(-12.0, 12.0)), 2)
        self.target: Any = None
        self.off_axis = False  # 'others': push the organ across the sector edge (partial view)

    def u(self, lo: float, hi: float) -> float:
        """Uniform draw between ``lo`` and ``hi`` (either order)."""
        return lo + (hi - lo) * float(self.rng.random())

    def at(self, depth: float, phi_deg: float) -> tuple[float, float]:
        """Plane point ``depth`` mm below the skin on the beam at ``phi_deg``."""
        r, phi = self.radius + depth, math.radians(phi_deg)
        return r * math.sin(phi), r * math.cos(phi)

    def fit(self, make: Any, sample_pose: Any) -> Pose:
        """Shift a sampled pose down until the organ's landmarks sit inside the sector and
        its outline below the body wall; resample (towards the view's fallback pose) when the
        depth would exceed 240 mm, and as a last resort press the probe harder (fat
        compresses) for very large patients."""
        for squeeze in (1.0, 0.6, 0.3):
            if squeeze < 1.0:
                self.wall_layers, self.wall = body_wall(
                    self.anatomy, self.radius, self.rng, self.t, fat_scale=squeeze
                )
            for attempt in range(12):
                pose = sample_pose(min(attempt / 8.0, 1.0))
                shifted = self._fit_once(make(pose), pose)
                if shifted is not None:
                    return self._off_axis(shifted)
        raise RuntimeError("no placement of the organ fits a 240 mm sector")

    def _fit_once(self, organ: Organ, pose: Pose) -> Pose | None:
        half, m = self.half, _MARGIN_MM
        marks = list(organ.points.values())
        top = (self.radius + self.wall + 4.0) ** 2
        need = [(abs(x) + m / math.cos(half)) / math.tan(half) - z for x, z in marks]
        need += [math.sqrt(max(top - x * x, 0.0)) - z for x, z in _outline_points(organ.outline)]
        shift = max(0.0, *need)
        deepest = max(math.hypot(x, z + shift) for x, z in marks) - self.radius + 12.0
        if deepest > _MAX_DEPTH_MM:
            return None
        self.min_depth = max(self.min_depth, deepest)
        return replace(pose, z=pose.z + shift)

    def _off_axis(self, pose: Pose) -> Pose:
        """Unchanged for standard views; for 'others' the organ is moved across an edge."""
        if not self.off_axis:
            return pose
        edge = pose.z * math.tan(self.half) * self.u(0.6, 1.0)
        return replace(pose, x=edge if self.rng.random() < 0.5 else -edge)

    def task(self, code: str, organ: Organ) -> None:
        """Record the organ's axis ends as the task's landmarks (``la_1`` left, ``sa_1`` up)."""
        pts = organ.points
        la = sorted((pts["la_1"], pts["la_2"]))
        named = {f"{code}_la_1": la[0], f"{code}_la_2": la[1]}
        if "sa_1" in pts:
            sa = sorted((pts["sa_1"], pts["sa_2"]), key=lambda p: p[1])
            named |= {f"{code}_sa_1": sa[0], f"{code}_sa_2": sa[1]}
        self.landmarks |= named
        self.target = organ.outline
        self.avoid += [(math.atan2(x, z),) * 2 for x, z in named.values()]
        if self.strict and not self.off_axis:
            phis = [math.atan2(x, z) for x, z in _outline_points(organ.outline)]
            self.avoid.append((min(phis), max(phis)))

    def clear_of_landmarks(self, x: float, z: float, radius: float) -> bool:
        """True when the shadow of a reflector at (x, z) of ``radius`` misses the landmarks
        (and, for most standard views, the whole measured organ)."""
        phi, width = math.atan2(x, z), math.asin(min(1.0, radius / math.hypot(x, z))) + 0.03
        return all(phi + width < lo or phi - width > hi for lo, hi in self.avoid)

    def ribs(self, count: int) -> None:
        """Rib cross-sections in the wall muscle: bright arcs with a clean acoustic shadow."""
        for _ in range(count):
            x, z = self.at(
                self.wall - self.u(4.0, 8.0), self.u(-0.85, 0.85) * math.degrees(self.half)
            )
            semi = self.u(4.0, 6.5)
            if self.clear_of_landmarks(x, z, semi):
                angle = math.atan2(x, z)
                rib = Star(x, z, -angle, semi, self.u(3.5, 5.0))
                self.wall_layers.append(Layer(rib, self.t["bone"], 10.0, 0.8))

    def bowel(
        self, x_range: tuple[float, float], z_range: tuple[float, float], count: int, gas: float
    ) -> None:
        """Bowel loops in a plane box; each has gas with probability ``gas``."""
        for _ in range(count):
            radius = self.u(7.0, 14.0)
            x, z = self.u(*x_range), max(self.u(*z_range), self.radius + self.wall + radius)
            with_gas = self.rng.random() < gas and self.clear_of_landmarks(x, z, radius)
            self.layers += bowel_loop(x, z, radius, with_gas, self.rng, self.t)

    def diaphragm(self, outline: Band, side: int, s_max: float) -> None:
        """Bright diaphragm hugging one side of a band outline up to ``s_max``, with the
        mirror image of the liver / lung beyond it."""
        c, s = math.cos(outline.angle), math.sin(outline.angle)
        limit = HalfPlane(c, s, s_max * outline.half_length + outline.cx * c + outline.cz * s)
        far = Intersect(outline.grown(70.0, side=side), (limit,))
        shell = Intersect(outline.grown(self.u(2.5, 4.0), side=side), (limit,))
        self.layers += [Layer(far, self.t["mirror"]), Layer(shell, self.t["diaphragm"], 8.0, 0.8)]

    def liver_over(self, outline: Any, gap: float, extend: float = 0.0) -> Band:
        """A liver lobe lying over (shallower than) ``outline``, tip towards screen right."""
        pts = _outline_points(outline)
        x_k = float(np.mean([p[0] for p in pts]))
        top = min(p[1] for p in pts) - gap
        angle = math.radians(self.u(-25.0, 8.0))
        half_len = self.u(80.0, 105.0) + extend
        cx = x_k - self.u(10.0, 45.0)
        s_k = (x_k - cx) * math.cos(angle) / half_len
        unit = Band(
            cx,
            0.0,
            angle,
            half_len,
            1.0,
            -self.u(3.0, 10.0),
            taper=0.7,
            wobble=wobble(self.rng, 2, 0.04),
        )
        wanted = (top - (self.radius + self.wall) + 15.0) / 2.0
        liver = replace(unit, half_thickness=wanted / max(float(unit.thickness(s_k)), 0.3))
        for _ in range(2):  # put the lobe's deep edge just above the organ
            edge_z = liver.point(s_k, 1)[1]
            liver = replace(liver, cz=liver.cz + top - edge_z)
        self.layers.append(Layer(liver, self.t["liver"], 4.0, 0.6))
        centre = liver.point(-0.2)
        self.layers += liver_vessels(
            liver,
            centre,
            0.5 * liver.half_thickness,
            self.rng,
            self.t,
            int(self.rng.integers(2, 6)),
        )
        return liver

    def deep_muscle(self, below: Any, offset: float) -> None:
        """Psoas / quadratus lumborum band deep to an organ."""
        pts = _outline_points(below)
        x = float(np.mean([p[0] for p in pts]))
        z = max(p[1] for p in pts) + offset
        band = Band(
            x + self.u(-20, 20),
            z,
            math.radians(self.u(-15, 15)),
            130.0,
            self.u(14.0, 22.0),
            power=4.0,
        )
        self.layers.append(Layer(band, self.t["psoas"], 4.0, 0.8))

    def scene(self, name: str, rotation: float = 0.0) -> Scene:
        return Scene(
            name,
            self.layers + self.wall_layers,
            self.t["background"],
            self.landmarks,
            self.min_depth,
            self.tilt,
            round(math.degrees(rotation), 2),
            self.target,
        )


def _fit_rng() -> np.random.Generator:
    """A fixed generator for trial placements (outlines do not depend on it)."""
    return np.random.default_rng(0)


def _kidney_long_view(b: _Builder, side: str) -> Scene:
    a, t = b.anatomy, b.t
    flip = bool(b.rng.random() < 0.5)
    angle0, x0, d0 = math.radians(b.u(-28, 12)), b.u(-15, 15), b.u(15, 45)
    # 'others' sometimes cuts the kidney obliquely: a shorter, off-axis section.
    scale = b.u(0.55, 0.8) if b.off_axis and b.rng.random() < 0.5 else 1.0

    def pose(k: float) -> Pose:
        return Pose(x0 * (1 - k), b.radius + b.wall + d0 + 25.0, angle0 * (1 - k), flip, b.tilt)

    p = b.fit(lambda q: kidney_long(a, side, q, _fit_rng(), t, scale), pose)
    kidney = kidney_long(a, side, p, b.rng, t, scale)
    b.task("kl", kidney)
    b.deep_muscle(kidney.outline, b.u(15, 30))
    if side == "right":  # the liver is the acoustic window
        b.liver_over(kidney.outline, b.u(2.0, 6.0), extend=20.0)
    else:  # the spleen over the upper pole, bowel gas over the rest
        angle = p.angle + math.radians(b.u(-25, 0))
        trial = spleen_section(a, "long", Pose(0.0, 0.0, angle), _fit_rng(), t).outline
        ux, uz = kidney.outline.point(-0.7, -1)
        lift = trial.half_thickness + b.u(2.0, 6.0)
        cx = ux - 0.4 * trial.half_length * math.cos(angle) + lift * math.sin(angle)
        cz = uz - 0.4 * trial.half_length * math.sin(angle) - lift * math.cos(angle)
        b.layers += spleen_section(a, "long", Pose(cx, cz, angle), b.rng, t).layers
        top = b.radius + b.wall
        x_range = (p.x, kidney.outline.point(1.0)[0] + 20)
        z_range = (top, kidney.outline.point(0.5, -1)[1] - 10)
        b.bowel(x_range, z_range, 3, 0.4 + 0.6 * a.bowel_gas)
    b.layers += kidney.layers
    b.ribs(int(b.rng.integers(0, 3)))
    return b.scene(f"kidney_{side}_long", p.angle)


def _kidney_trans_view(b: _Builder, side: str) -> Scene:
    a, t = b.anatomy, b.t
    flip = bool(b.rng.random() < 0.5)
    angle0, x0, d0 = math.radians(b.u(-22, 22)), b.u(-15, 15), b.u(15, 45)

    def pose(k: float) -> Pose:
        return Pose(x0 * (1 - k), b.radius + b.wall + d0 + 20.0, angle0 * (1 - k), flip, b.tilt)

    p = b.fit(lambda q: kidney_trans(a, side, q, _fit_rng(), t), pose)
    kidney = kidney_trans(a, side, p, b.rng, t)
    b.task("kt", kidney)
    b.deep_muscle(kidney.outline, b.u(10, 25))
    medial = 1.0 if side == "right" else -1.0  # patient's right is screen left (transverse)
    spine = b.at(kidney.outline.cz - b.radius + b.u(15, 30), 0)[1]
    if b.rng.random() < 0.5:
        vb = Band(p.x + medial * b.u(55, 80), spine, 0.0, b.u(18, 25), 3.0, -6.0, power=2.0)
        b.layers.append(Layer(vb, t["bone"], 10.0, 0.8))
    if side == "right":
        b.liver_over(kidney.outline, b.u(2.0, 6.0))
        b.bowel((p.x + 20, p.x + 70), (b.radius + b.wall, p.z - 30), 1, 0.5 * a.bowel_gas)
    else:
        top = kidney.outline.point(-0.5 * math.pi)
        spleen = spleen_section(
            a,
            "trans",
            Pose(top[0] + b.u(15, 40), top[1] - b.u(25, 35), math.radians(b.u(-30, 0)), False),
            b.rng,
            t,
        )
        b.layers += spleen.layers
        b.bowel((p.x - 70, p.x + 10), (b.radius + b.wall, top[1] - 10), 3, 0.4 + 0.6 * a.bowel_gas)
    b.layers += kidney.layers
    b.ribs(int(b.rng.integers(0, 2)))
    return b.scene(f"kidney_{side}_trans", p.angle)


def _spleen_view(b: _Builder, plane: str) -> Scene:
    a, t = b.anatomy, b.t
    flip = bool(b.rng.random() < 0.15)
    angle0 = math.radians(b.u(-35, 10) if plane == "long" else b.u(-25, 25))
    x0, d0 = b.u(-15, 15), b.u(8, 30)

    def pose(k: float) -> Pose:
        return Pose(x0 * (1 - k), b.radius + b.wall + d0 + 25.0, angle0 * (1 - k), flip, b.tilt)

    p = b.fit(lambda q: spleen_section(a, plane, q, _fit_rng(), t), pose)
    spleen = spleen_section(a, plane, p, b.rng, t)
    b.task("sl" if plane == "long" else "st", spleen)
    out = spleen.outline
    convex = -p.sign
    b.diaphragm(out, convex, b.u(-0.2, 0.4))
    deep = out.point(b.u(0.1, 0.5), p.sign)
    kidney_pose = Pose(
        deep[0] + b.u(0, 20),
        deep[1] + b.u(25, 40) * (1 if not p.flip else -1),
        p.angle + math.radians(b.u(-25, 25)),
        bool(b.rng.random() < 0.5),
    )
    if plane == "long":
        kidney = kidney_long(a, "left", kidney_pose, b.rng, t, length_scale=b.u(0.75, 1.0))
    else:
        kidney = kidney_trans(a, "left", kidney_pose, b.rng, t)
    if b.rng.random() < 0.8:
        b.layers += kidney.layers
    b.bowel((p.x - 40, p.x + 60), (p.z + 30, p.z + 80), int(b.rng.integers(0, 3)), a.bowel_gas)
    b.layers += spleen.layers
    b.ribs(int(b.rng.integers(1, 3)))
    return b.scene(f"spleen_{plane}", p.angle)


def _liver_right_long_view(b: _Builder) -> Scene:
    a, t = b.anatomy, b.t
    angle0, x0 = math.radians(b.u(-50, -20)), b.u(-45, 5)

    def pose(k: float) -> Pose:  # fallback (k -> 1): axis along the beam, tip up
        return Pose(
            x0 * (1 - k), b.radius + b.wall + 20.0, angle0 + k * (-1.4 - angle0), tilt=b.tilt
        )

    p = b.fit(lambda q: liver_right_long(a, q, _fit_rng(), t), pose)
    liver = liver_right_long(a, p, b.rng, t)
    b.task("ll", liver)
    out = liver.outline
    b.diaphragm(out, 1, b.u(-0.1, 0.3))
    if b.rng.random() < 0.85:  # right kidney behind the inferior part of the lobe
        s_k = b.u(0.15, 0.5)
        ex, ez = out.point(s_k, 1)
        depth = 0.25 * (a.kidney_right.width_mm + a.kidney_right.depth_mm) + b.u(3, 10)
        kx, kz = ex - depth * math.sin(p.angle), ez + depth * math.cos(p.angle)
        kidney = kidney_long(
            a,
            "right",
            Pose(kx, kz, p.angle + math.radians(b.u(0, 30)), bool(b.rng.random() < 0.5)),
            b.rng,
            t,
            length_scale=b.u(0.7, 1.0),
        )
        b.layers += kidney.layers
    tip = out.point(1.0)
    b.bowel((tip[0], tip[0] + 50), (tip[1], tip[1] + 40), int(b.rng.integers(0, 3)), a.bowel_gas)
    b.layers += liver.layers
    b.ribs(int(b.rng.integers(0, 3)))
    return b.scene("liver_right_long", p.angle)


def _liver_trans_star(b: _Builder, semi_u: float, semi_v: float, x: float) -> Star:
    z = b.radius + b.wall - 4.0 + semi_v
    return Star(x, z, math.radians(b.u(-10, 10)), semi_u, semi_v, wobble(b.rng, 3, 0.04, 2.0))


def _star_diaphragm(b: _Builder, liver: Star) -> None:
    """Diaphragm along the deep half of a transverse liver section, mirror image beyond."""
    deep = HalfPlane(0.0, -1.0, -(liver.cz + 0.15 * liver.semi_v))
    far = replace(liver, semi_u=liver.semi_u + 70.0, semi_v=liver.semi_v + 70.0)
    shell = replace(liver, semi_u=liver.semi_u + 3.5, semi_v=liver.semi_v + 3.5)
    b.layers += [
        Layer(Intersect(far, (deep,)), b.t["mirror"]),
        Layer(Intersect(shell, (deep,)), b.t["diaphragm"], 8.0, 0.8),
    ]


def _liver_right_trans_view(b: _Builder) -> Scene:
    a, t = b.anatomy, b.t
    liver = _liver_trans_star(
        b,
        0.5 * a.liver.width_mm * b.u(1.0, 1.25),
        0.5 * a.liver.depth_mm * b.u(0.85, 1.05),
        b.u(-30, 10),
    )
    _star_diaphragm(b, liver)
    if b.rng.random() < 0.35:
        kx, kz = liver.point(math.radians(b.u(100, 140)))
        b.layers += kidney_trans(a, "right", Pose(kx, kz + 10, 0.3, False), b.rng, t).layers
    b.layers.append(Layer(liver, t["liver"], 4.0, 0.6))
    ivc_x, ivc_z = liver.point(math.radians(b.u(35, 70)))
    ivc_x, ivc_z = ivc_x - 0.25 * (ivc_x - liver.cx), ivc_z - 0.25 * (ivc_z - liver.cz)
    if b.rng.random() < 0.6:  # hepatic vein level: three veins converging on the IVC
        for direction in (b.u(-175, -150), b.u(-145, -120), b.u(-115, -95)):
            half = b.u(18.0, 35.0)
            ang = math.radians(direction)
            cx, cz = ivc_x + half * math.cos(ang), ivc_z + half * math.sin(ang)
            vein = Band(cx, cz, ang, half, b.u(3.0, 5.0), b.u(-4, 4), taper=0.6, power=3.0)
            b.layers.append(Layer(Intersect(vein, (liver,)), t["blood"]))
    b.layers.append(Layer(Star(ivc_x, ivc_z, 0.0, 0.75 * a.ivc_mm, 0.5 * a.ivc_mm), t["blood"]))
    b.layers += liver_vessels(
        liver,
        (liver.cx, liver.cz - 0.2 * liver.semi_v),
        0.5 * liver.semi_v,
        b.rng,
        t,
        int(b.rng.integers(2, 6)),
    )
    if b.rng.random() < 0.35:
        gx, gz = liver.point(math.radians(b.u(60, 110)))
        b.layers += gallbladder(a, gx - 10, gz - 25, math.radians(b.u(-40, 0)), b.rng, t)
    b.ribs(int(b.rng.integers(0, 2)))
    return b.scene("liver_right_trans", liver.angle)


def _aorta_long(b: _Builder, z: float, angle: float) -> Band:
    aorta = Band(b.u(-20, 20), z, angle, 170.0, 0.5 * b.anatomy.aorta_mm, power=8.0)
    b.layers.append(Layer(aorta, b.t["blood"], 9.0, 0.9))
    for _ in range(int(b.rng.integers(1, 3))):  # coeliac trunk / SMA leaving anteriorly
        ox, oz = aorta.point(b.u(-0.25, 0.25), -1)
        ang = angle - math.radians(b.u(40, 80))
        half = b.u(10.0, 20.0)
        branch = Band(
            ox + half * math.cos(ang),
            oz + half * math.sin(ang),
            ang,
            half,
            b.u(2.5, 3.5),
            power=6.0,
        )
        b.layers.append(Layer(branch, b.t["blood"], 6.0, 0.7))
    return aorta


def _vertebrae(b: _Builder, along: Band, offset: float) -> None:
    """Sagittal spine deep to a vessel: anterior surfaces of vertebral bodies (bright, with
    shadows) separated by discs that let sound through."""
    c, s = math.cos(along.angle), math.sin(along.angle)
    x0, z0 = along.cx - offset * s, along.cz + offset * c
    pitch, start = b.u(30.0, 36.0), b.u(0.0, 36.0)
    for k in range(-6, 7):
        u = start + k * pitch
        body = Band(x0 + u * c, z0 + u * s, along.angle, 0.5 * pitch - 4.0, 2.0, 1.5, power=6.0)
        b.layers.append(Layer(body, b.t["bone"], 9.0, 0.8))
    # Discs pass some sound, but the canal and posterior elements behind them stop it.
    canal = Band(x0 - 20.0 * s, z0 + 20.0 * c, along.angle, 240.0, 8.0, power=8.0)
    b.layers.append(Layer(canal, Tissue(-12.0, 4.0, 2.0)))


def _left_lobe(b: _Builder, half_len: float) -> Band:
    """Left lobe section: a wedge 5-8 cm thick at most, thinning to its tip at screen right."""
    shape = shape_rng(b.anatomy, "liver_left")
    unit = Band(
        b.u(-30, 5),
        0.0,
        math.radians(b.u(-12, 12)),
        half_len,
        1.0,
        -b.u(2, 8),
        taper=float(shape.uniform(0.9, 1.4)),
        wobble=wobble(shape, 2, 0.05),
    )
    widest = float(np.max(unit.thickness(np.linspace(-1.0, 1.0, 41))))
    lobe = replace(unit, half_thickness=float(shape.uniform(20.0, 32.0)) / widest)
    top = min(lobe.point(s, -1)[1] for s in np.linspace(-0.8, 0.8, 9))
    return replace(lobe, cz=b.radius + b.wall - 3.0 - top)


def _midline_long(b: _Builder, aorta_z: float) -> float:
    """Sagittal midline deep anatomy: aorta with its anterior branches, pancreas, spine.

    Returns the depth (plane z, mm) the view must show."""
    aorta = _aorta_long(b, aorta_z, math.radians(b.u(-10, 6)))
    _vertebrae(b, aorta, aorta.half_thickness + b.u(8, 14))
    px, pz = aorta.point(b.u(0.1, 0.4), -1)
    b.layers.append(Layer(Star(px, pz - 12, 0.0, b.u(15, 25), b.u(6, 10)), b.t["pancreas"]))
    return aorta_z + aorta.half_thickness + 35.0


def _midline_trans(b: _Builder, x: float, aorta_z: float) -> float:
    """Transverse epigastric deep anatomy: aorta, IVC, SMA, pancreas with the splenic vein
    along its back, vertebral body. Returns the depth (plane z, mm) the view must show."""
    a, t = b.anatomy, b.t
    r = 0.5 * a.aorta_mm
    ivc = Star(x - b.u(25, 35), aorta_z, 0.0, 0.75 * a.ivc_mm, 0.5 * a.ivc_mm)
    spine = Band(x, aorta_z + r + b.u(8, 14), 0.0, b.u(18, 25), 3.0, -6.0)
    angle = math.radians(b.u(-15, 5))
    pancreas = Band(x + 10, aorta_z - r - 14, angle, b.u(40, 60), b.u(7, 11), -5.0, power=3.0)
    back = pancreas.half_thickness
    vein = Band(pancreas.cx, pancreas.cz + back, angle, 0.8 * pancreas.half_length, 3.5, -5.0)
    b.layers += [
        Layer(spine, t["bone"], 10.0, 0.8),
        Layer(pancreas, t["pancreas"]),
        Layer(replace(vein, power=6.0), t["blood"], 5.0, 0.6),
        Layer(ivc, t["blood"], 4.0, 0.6),
        Layer(circle(x, aorta_z, r), t["blood"], 9.0, 0.9),
        Layer(circle(x, aorta_z - r - 5.0, 3.0), t["blood"], 8.0, 1.2),  # SMA in its fat collar
    ]
    return spine.cz + 25.0


def _liver_left_view(b: _Builder, plane: str) -> Scene:
    a, t = b.anatomy, b.t
    lobe = _left_lobe(b, b.u(45, 70) if plane == "long" else b.u(60, 90))
    bottom = max(lobe.point(s, 1)[1] for s in np.linspace(-0.8, 0.8, 9))
    if plane == "long":
        if b.rng.random() < 0.4:  # heart beyond the diaphragm, cranial (screen left)
            hx, hz = lobe.point(-1.0)
            heart = Star(hx - 25, hz + 25, 0.4, b.u(35, 45), b.u(28, 35))
            chambers = replace(heart, semi_u=heart.semi_u - 9, semi_v=heart.semi_v - 9)
            b.layers += [Layer(heart, t["myocardium"], 5.0, 0.8), Layer(chambers, t["blood"])]
        shown = _midline_long(b, bottom + b.u(10, 30))
    else:
        shown = _midline_trans(b, b.u(-5, 15), bottom + b.u(15, 35))
    # The sonographer sets the depth to show the aorta and the spine behind it.
    b.min_depth = max(b.min_depth, min(shown - b.radius, _MAX_DEPTH_MM))
    lx, lz = lobe.point(1.0)
    b.bowel((lx - 10, lx + 50), (lz, lz + 40), int(b.rng.integers(1, 4)), 0.3 + 0.6 * a.bowel_gas)
    b.layers.append(Layer(lobe, t["liver"], 4.0, 0.6))
    centre, extent = lobe.point(-0.3), 0.5 * lobe.half_thickness
    b.layers += liver_vessels(lobe, centre, extent, b.rng, t, int(b.rng.integers(1, 4)))
    if plane == "trans" and b.rng.random() < 0.7:  # ligamentum teres: bright, shadowing
        tx, tz = lobe.point(b.u(-0.4, 0.1))
        b.layers.append(Layer(circle(tx, tz, b.u(3.0, 5.0)), Tissue(8.0, 6.0, 1.0), 6.0, 0.8))
    return b.scene(f"liver_left_{plane}", lobe.angle)


# ------------------------------------------------------------------------------ others


def _others_gallbladder(b: _Builder, top: float) -> None:
    liver = _liver_trans_star(b, b.u(90, 120), b.u(55, 75), b.u(-20, 20))
    b.layers.append(Layer(liver, b.t["liver"], 4.0, 0.6))
    b.layers += liver_vessels(liver, (liver.cx, liver.cz), 40.0, b.rng, b.t, 3)
    x, z, angle = b.u(-15, 15), top + b.u(35, 60), math.radians(b.u(-30, 30))
    b.layers += gallbladder(b.anatomy, x, z, angle, b.rng, b.t)


def _others_bladder(b: _Builder, top: float) -> None:
    squarish = ((b.u(0.03, 0.08), 4.0, 0.0), *wobble(b.rng, 2, 0.04, 2.0))
    z = top + b.u(40, 60)
    bladder = Star(b.u(-10, 10), z, math.radians(b.u(-10, 10)), b.u(35, 60), b.u(25, 45), squarish)
    b.layers.append(Layer(bladder, b.t["fluid"], 7.0, 0.8))
    b.bowel((-90, 90), (z + bladder.semi_v + 15, z + 80), 4, b.anatomy.bowel_gas)


def _others_midline(b: _Builder, top: float, plane: str) -> None:
    gas = 0.4 + 0.5 * b.anatomy.bowel_gas
    b.bowel((-80, 80), (top, top + 40), int(b.rng.integers(2, 5)), gas)
    if plane == "long":
        shown = _midline_long(b, top + b.u(50, 90))
    else:
        shown = _midline_trans(b, b.u(-15, 15), top + b.u(55, 80))
    b.min_depth = max(b.min_depth, min(shown - b.radius, _MAX_DEPTH_MM))


def _others_bowel(b: _Builder, top: float) -> None:
    gas = 0.5 + 0.5 * b.anatomy.bowel_gas
    b.bowel((-100, 100), (top, top + 90), int(b.rng.integers(5, 10)), gas)


_OTHER_ANATOMY: dict[str, Any] = {
    "gallbladder": _others_gallbladder,
    "bladder": _others_bladder,
    "aorta": lambda b, top: _others_midline(b, top, "long"),
    "pancreas": lambda b, top: _others_midline(b, top, "trans"),
    "bowel": _others_bowel,
}


def _others_anatomy(b: _Builder) -> Scene:
    """Non-standard planes: gallbladder, bladder, aorta, pancreas, bowel."""
    kind = list(_OTHER_ANATOMY)[int(b.rng.integers(len(_OTHER_ANATOMY)))]
    if kind == "gallbladder" and b.anatomy.gallbladder is None:
        kind = "bowel"  # after cholecystectomy there is no gallbladder to show
    _OTHER_ANATOMY[kind](b, b.radius + b.wall)
    b.ribs(int(b.rng.integers(0, 2)))
    return b.scene(f"others_{kind}")


_STANDARD_SCENES: dict[str, Any] = {
    "liver_right_long": _liver_right_long_view,
    "liver_right_trans": _liver_right_trans_view,
    "liver_left_long": lambda b: _liver_left_view(b, "long"),
    "liver_left_trans": lambda b: _liver_left_view(b, "trans"),
    "kidney_right_long": lambda b: _kidney_long_view(b, "right"),
    "kidney_right_trans": lambda b: _kidney_trans_view(b, "right"),
    "kidney_left_long": lambda b: _kidney_long_view(b, "left"),
    "kidney_left_trans": lambda b: _kidney_trans_view(b, "left"),
    "spleen_long": lambda b: _spleen_view(b, "long"),
    "spleen_trans": lambda b: _spleen_view(b, "trans"),
}


def build_scene(
    anatomy: PatientAnatomy,
    view: str,
    radius: float,
    sector_deg: float,
    rng: np.random.Generator,
) -> Scene:
    """The scene of ``view``. ``others`` is either a non-standard plane of other anatomy or an
    off-axis / partial version of a standard scene (organ cut by the sector edge), so that the
    classes overlap as in real exams; its landmarks are dropped."""
    builder = _Builder(anatomy, radius, sector_deg, rng)
    if view != "others":
        return _STANDARD_SCENES[view](builder)
    if rng.random() < 0.45:
        return _others_anatomy(builder)
    source = list(_STANDARD_SCENES)[int(rng.integers(len(_STANDARD_SCENES)))]
    builder.off_axis = True
    scene = _STANDARD_SCENES[source](builder)
    scene.landmarks, scene.name, scene.target = {}, f"others_partial_{source}", None
    return scene
