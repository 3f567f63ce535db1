"""Plane geometry: organ outline shapes, the convex probe, its polar grid, scan conversion.

Plane coordinates (mm): ``x`` lateral (screen right positive), ``z`` down the screen, origin at
the *virtual apex* of the convex probe (the centre of curvature of its face). A beam at angle
``phi`` (radians, 0 straight down, positive to screen right) passes through
``(x, z) = (r sin phi, r cos phi)``; the skin touches the probe face at ``r = radius_mm`` and
the image ends at ``r = radius_mm + depth_mm``.

Screen pixels: ``(px, py) = apex_px + (x, z) / spacing_mm`` (isotropic spacing).

Shapes are implicit functions ``sdf(x, z)`` in plane mm (negative inside, about the distance
to the outline) with ``bounds()``, so tissue maps are painted vectorised on grid blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

Bounds = tuple[float, float, float, float]  # (x_min, x_max, z_min, z_max) plane mm
Wobble = tuple[tuple[float, float, float], ...]  # (relative amplitude, cycles, phase)


def _rotate(dx: np.ndarray, dz: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    return dx * c + dz * s, dz * c - dx * s


@dataclass(frozen=True)
class Band:
    """A bent, tapered band: the outline of long organ sections (kidney bean, spleen crescent,
    liver wedge, vessels).

    Local axes: ``u`` along ``angle`` (radians from plane +x towards +z), ``v`` across it;
    ``s = u / half_length`` in [-1, 1]. The centre line is ``v = bend * (1 - s^2)`` (plus a
    smooth wobble vanishing at both ends), the half thickness ``t(s) = half_thickness *
    (1 - |s|^power)^(1/power) * (1 - s)^taper * wobble(s)``. The two ends ``s = -1, +1`` lie on
    the outline at ``v = 0``, exactly ``2 * half_length`` apart (the long-axis landmarks).
    ``side`` keeps only the half beyond the centre line (+1: v > c, -1: v < c, 0: both).
    """

    cx: float
    cz: float
    angle: float
    half_length: float
    half_thickness: float
    bend: float = 0.0
    taper: float = 0.0
    power: float = 2.0
    wobble: Wobble = ()
    side: int = 0

    def local(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Plane mm -> local (u, v) mm."""
        return _rotate(x - np.float32(self.cx), z - np.float32(self.cz), self.angle)

    def to_plane(self, u: float, v: float) -> tuple[float, float]:
        """Local (u, v) mm -> plane (x, z) mm."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        return self.cx + u * c - v * s, self.cz + u * s + v * c

    def centre_line(self, s: np.ndarray | float) -> np.ndarray | float:
        """v (mm) of the centre line at ``s``."""
        return self.bend * (1.0 - s * s)

    def thickness(self, s: np.ndarray | float) -> np.ndarray | float:
        """Half thickness (mm) at ``s``; 0 at both ends."""
        a = np.clip(np.abs(s), 0.0, 1.0)
        t = self.half_thickness * (1.0 - a**self.power) ** (1.0 / self.power)
        if self.taper:
            t = t * np.maximum(1.0 - np.clip(s, -1.0, 1.0), 0.05) ** self.taper
        for amp, cycles, phase in self.wobble:
            t = t * (1.0 + amp * np.sin(cycles * math.pi * s + phase))
        return t

    def point(self, s: float, edge: int = 0) -> tuple[float, float]:
        """Plane point at ``s`` on the centre line (edge 0) or on the outline (edge -1 / +1)."""
        return self.to_plane(s * self.half_length, self.centre_line(s) + edge * self.thickness(s))

    def sdf(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        u, v = self.local(x, z)
        s = u / np.float32(self.half_length)
        off = v - self.centre_line(s)
        f = np.maximum(np.abs(off) - self.thickness(s), np.abs(u) - np.float32(self.half_length))
        if self.side:
            f = np.maximum(f, -self.side * off)
        return f

    def bounds(self) -> Bounds:
        grow = 1.0 + sum(abs(a) for a, _, _ in self.wobble)
        extent = self.half_thickness * grow * 2.0 ** max(self.taper, 0.0) + abs(self.bend)
        radius = math.hypot(self.half_length, extent)
        return (self.cx - radius, self.cx + radius, self.cz - radius, self.cz + radius)

    def grown(self, mm: float, **changes: float) -> Band:
        """The same band grown by ``mm`` in length and thickness (a fat rim, a capsule)."""
        return replace(
            self,
            half_length=self.half_length + mm,
            half_thickness=self.half_thickness + mm,
            **changes,
        )


@dataclass(frozen=True)
class Star:
    """A star-shaped outline: an ellipse (semi-axes ``semi_u`` along ``angle``, ``semi_v``
    across) whose normalised radius is ``rho(theta) = 1 + sum amp*cos(k*theta + phase)``
    minus an optional Gaussian notch ``(depth, theta, width)`` (the renal hilum)."""

    cx: float
    cz: float
    angle: float
    semi_u: float
    semi_v: float
    harmonics: Wobble = ()
    notch: tuple[float, float, float] | None = None

    def rho(self, theta: np.ndarray | float) -> np.ndarray | float:
        """Normalised outline radius at normalised angle ``theta``."""
        r = 1.0
        for amp, k, phase in self.harmonics:  # integer orders: the outline must close
            r = r + amp * np.cos(round(k) * theta + phase)
        if self.notch is not None:
            depth, at, width = self.notch
            d = np.angle(np.exp(1j * (theta - at)))
            r = r - depth * np.exp(-0.5 * (d / width) ** 2)
        return r

    def point(self, theta: float) -> tuple[float, float]:
        """Plane point of the outline at normalised angle ``theta``."""
        rho = float(self.rho(theta))
        u, v = self.semi_u * rho * math.cos(theta), self.semi_v * rho * math.sin(theta)
        c, s = math.cos(self.angle), math.sin(self.angle)
        return self.cx + u * c - v * s, self.cz + u * s + v * c

    def sdf(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        u, v = _rotate(x - np.float32(self.cx), z - np.float32(self.cz), self.angle)
        un, vn = u / np.float32(self.semi_u), v / np.float32(self.semi_v)
        rho_n = np.sqrt(un * un + vn * vn)
        return (rho_n - self.rho(np.arctan2(vn, un))) * np.float32(min(self.semi_u, self.semi_v))

    def bounds(self) -> Bounds:
        radius = max(self.semi_u, self.semi_v) * (1.0 + sum(abs(a) for a, _, _ in self.harmonics))
        return (self.cx - radius, self.cx + radius, self.cz - radius, self.cz + radius)


def segment(
    start: tuple[float, float],
    end: tuple[float, float],
    radius: float,
    power: float = 6.0,
    extend: float = 0.0,
) -> Band:
    """A straight tube of ``radius`` mm from ``start`` to ``end`` (plane mm), ``extend`` mm
    longer at both ends (vessels, ducts)."""
    half = 0.5 * math.dist(start, end) + extend
    angle = math.atan2(end[1] - start[1], end[0] - start[0])
    mid = (0.5 * (start[0] + end[0]), 0.5 * (start[1] + end[1]))
    return Band(mid[0], mid[1], angle, half, radius, power=power)


def band_from(
    start: tuple[float, float],
    angle_rad: float,
    half_length_mm: float,
    half_thickness_mm: float,
    **shape: Any,
) -> Band:
    """A band whose ``s = -1`` end lies at ``start`` (plane mm), running along ``angle_rad``:
    a vessel branching off another. ``shape``: the other :class:`Band` fields."""
    return Band(
        start[0] + half_length_mm * math.cos(angle_rad),
        start[1] + half_length_mm * math.sin(angle_rad),
        angle_rad,
        half_length_mm,
        half_thickness_mm,
        **shape,
    )


def circle(x: float, z: float, radius: float) -> Star:
    """A disc of ``radius`` mm centred at plane (x, z)."""
    return Star(x, z, 0.0, radius, radius)


@dataclass(frozen=True)
class Shell:
    """Tissue between ``top_mm`` and ``bottom_mm`` below the skin, parallel to the probe face
    (body-wall layers). ``wobble``: (amplitude mm, cycles per radian, phase) of the depth."""

    probe_radius: float
    top_mm: float
    bottom_mm: float
    wobble: Wobble = ()

    def sdf(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        r = np.sqrt(x * x + z * z)
        d = r - np.float32(self.probe_radius)
        if self.wobble:
            phi = np.arctan2(x, z)
            for amp, cycles, phase in self.wobble:
                d = d - amp * np.sin(cycles * phi + phase)
        return np.maximum(self.top_mm - d, d - self.bottom_mm)

    def bounds(self) -> Bounds:
        outer = self.probe_radius + self.bottom_mm + sum(abs(a) for a, _, _ in self.wobble)
        return (-outer, outer, 0.0, outer)


@dataclass(frozen=True)
class HalfPlane:
    """Points with ``nx * x + nz * z < offset`` (plane mm); unbounded, use inside Intersect."""

    nx: float
    nz: float
    offset: float

    def sdf(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return np.float32(self.nx) * x + np.float32(self.nz) * z - np.float32(self.offset)

    def bounds(self) -> Bounds:
        return (-1e4, 1e4, 0.0, 1e4)


@dataclass(frozen=True)
class Intersect:
    """Points inside ``first`` and every shape of ``others``; ``invert`` flips others (minus)."""

    first: Any
    others: tuple[Any, ...]
    invert: bool = False

    def sdf(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        f = self.first.sdf(x, z)
        for other in self.others:
            g = other.sdf(x, z)
            f = np.maximum(f, -g if self.invert else g)
        return f

    def bounds(self) -> Bounds:
        return self.first.bounds()


def wobble(rng: np.random.Generator, terms: int, amp: float, cycles: float = 1.0) -> Wobble:
    """``terms`` smooth Fourier perturbations of relative amplitude up to ``amp``."""
    return tuple(
        (
            float(rng.uniform(-amp, amp)),
            cycles * (k + 1) + float(rng.uniform(0, 0.5)),
            float(rng.uniform(0, 2 * math.pi)),
        )
        for k in range(terms)
    )


@dataclass(frozen=True)
class ProbeGeometry:
    """A convex probe: face radius (mm), sector opening (degrees), imaging depth (mm)."""

    radius_mm: float
    sector_deg: float
    depth_mm: float

    @property
    def half_angle(self) -> float:
        """Half the sector opening, radians."""
        return math.radians(self.sector_deg) / 2.0

    def bounds(self) -> Bounds:
        """Bounding box of the sector in plane mm."""
        outer = self.radius_mm + self.depth_mm
        half_w = outer * math.sin(self.half_angle)
        return (-half_w, half_w, self.radius_mm * math.cos(self.half_angle), outer)

    def inside(self, x: np.ndarray, z: np.ndarray, margin_mm: float = 0.0) -> np.ndarray:
        """True for plane points (mm) inside the sector, at least ``margin_mm`` from its edges."""
        r = np.hypot(x, z)
        phi = np.arctan2(x, z)
        lateral_mm = r * np.sin(self.half_angle - np.abs(phi))  # distance to the side edge
        return (
            (r >= self.radius_mm + margin_mm)
            & (r <= self.radius_mm + self.depth_mm - margin_mm)
            & (np.abs(phi) < self.half_angle + math.pi / 2)
            & (lateral_mm >= margin_mm)
        )


@dataclass(frozen=True)
class PolarGrid:
    """Sample grid of the beams: ``n_depth`` samples from the skin to the full depth on each
    of ``n_lines`` lines spread evenly over the sector."""

    probe: ProbeGeometry
    n_depth: int
    n_lines: int

    @property
    def dr_mm(self) -> float:
        """Depth step between samples, mm."""
        return self.probe.depth_mm / (self.n_depth - 1)

    @property
    def dphi(self) -> float:
        """Angle step between lines, radians."""
        return 2.0 * self.probe.half_angle / (self.n_lines - 1)

    @cached_property
    def r_mm(self) -> np.ndarray:
        """(n_depth,) radius of each depth sample from the apex, mm."""
        return (self.probe.radius_mm + np.arange(self.n_depth) * self.dr_mm).astype(np.float32)

    @cached_property
    def phi(self) -> np.ndarray:
        """(n_lines,) beam angle of each line, radians."""
        return (-self.probe.half_angle + np.arange(self.n_lines) * self.dphi).astype(np.float32)

    @cached_property
    def xz(self) -> tuple[np.ndarray, np.ndarray]:
        """Plane coordinates (mm) of every sample: two (n_depth, n_lines) float32 arrays."""
        return self.r_mm[:, None] * np.sin(self.phi)[None, :], self.r_mm[:, None] * np.cos(
            self.phi
        )[None, :]

    def block(self, bounds: Bounds, pad_mm: float = 1.0) -> tuple[slice, slice] | None:
        """Index slices of the smallest grid block covering a plane box, or None if outside."""
        x0, x1 = bounds[0] - pad_mm, bounds[1] + pad_mm
        z0, z1 = max(bounds[2] - pad_mm, 1e-3), bounds[3] + pad_mm
        if z1 <= 0:
            return None
        cx, cz = min(max(0.0, x0), x1), min(max(0.0, z0), z1)  # box point nearest the apex
        corners = [(x, z) for x in (x0, x1) for z in (z0, z1)]
        r_lo, r_hi = math.hypot(cx, cz), max(math.hypot(x, z) for x, z in corners)
        phis = [math.atan2(x, z) for x, z in corners]
        i0 = max(0, math.floor((r_lo - self.probe.radius_mm) / self.dr_mm))
        i1 = min(self.n_depth, math.ceil((r_hi - self.probe.radius_mm) / self.dr_mm) + 1)
        j0 = max(0, math.floor((min(phis) + self.probe.half_angle) / self.dphi))
        j1 = min(self.n_lines, math.ceil((max(phis) + self.probe.half_angle) / self.dphi) + 1)
        if i0 >= i1 or j0 >= j1:
            return None
        return slice(i0, i1), slice(j0, j1)


@dataclass(frozen=True)
class ScreenLayout:
    """Where the sector sits on the screen: size (px), spacing (mm/px) and apex (screen px)."""

    width: int
    height: int
    spacing_mm: float
    apex_px: tuple[float, float]
    probe: ProbeGeometry

    def to_px(self, x: np.ndarray | float, z: np.ndarray | float) -> tuple:
        """Plane mm -> screen px ``(px, py)``."""
        return self.apex_px[0] + x / self.spacing_mm, self.apex_px[1] + z / self.spacing_mm

    def to_mm(self, px: np.ndarray | float, py: np.ndarray | float) -> tuple:
        """Screen px -> plane mm ``(x, z)``."""
        return (px - self.apex_px[0]) * self.spacing_mm, (py - self.apex_px[1]) * self.spacing_mm

    @property
    def region_box(self) -> tuple[int, int, int, int]:
        """Sector bounding box ``(x0, y0, x1, y1)`` in screen px, exclusive max."""
        x_lo, x_hi, z_lo, z_hi = self.probe.bounds()
        px0, py0 = self.to_px(x_lo, z_lo)
        px1, py1 = self.to_px(x_hi, z_hi)
        x0, y0 = max(0, math.floor(px0)), max(0, math.floor(py0))
        return x0, y0, min(self.width, math.ceil(px1) + 1), min(self.height, math.ceil(py1) + 1)


def layout_screen(
    probe: ProbeGeometry, width: int, height: int, area: tuple[int, int, int, int]
) -> ScreenLayout:
    """Fit the sector into the screen ``area`` (x0, y0, x1, y1 px), centred, largest spacing
    that fits. Returns the layout with its isotropic spacing (mm/px)."""
    x_lo, x_hi, z_lo, z_hi = probe.bounds()
    avail_w, avail_h = area[2] - area[0] - 2, area[3] - area[1] - 2
    spacing = max((x_hi - x_lo) / avail_w, (z_hi - z_lo) / avail_h)
    spacing = math.ceil(spacing * 1e4) / 1e4  # a round number, as scanners report it
    apex_x = (area[0] + area[2]) / 2.0 - 0.5
    used_h = (z_hi - z_lo) / spacing
    top = area[1] + max(0.0, (avail_h - used_h) * 0.15) + 1.0
    apex_y = top - z_lo / spacing
    return ScreenLayout(width, height, spacing, (apex_x, apex_y), probe)


def scan_convert(lines: np.ndarray, grid: PolarGrid, layout: ScreenLayout) -> np.ndarray:
    """Bilinear scan conversion of polar lines (n_depth, n_lines) onto the screen.

    Returns the (H, W) float32 screen, 0 outside the sector; the sector edge is anti-aliased
    over one screen pixel.
    """
    x0, y0, x1, y1 = layout.region_box
    xs, zs = layout.to_mm(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    r = np.sqrt(xs[None, :] ** 2 + zs[:, None] ** 2)
    depth_idx = (r - np.float32(grid.probe.radius_mm)) / np.float32(grid.dr_mm)
    line_idx = np.arctan2(xs[None, :], zs[:, None])
    line_idx += np.float32(grid.probe.half_angle)
    line_idx /= np.float32(grid.dphi)
    n_r, n_l = lines.shape
    # Anti-aliased sector edge: coverage ramps from 1 to 0 across one screen pixel.
    px_per_line = r * np.float32(grid.dphi / layout.spacing_mm)
    lateral_px = np.minimum(line_idx, (n_l - 1) - line_idx) * px_per_line
    axial_px = np.minimum(depth_idx, (n_r - 1) - depth_idx) * np.float32(
        grid.dr_mm / layout.spacing_mm
    )
    cover = np.clip(np.minimum(lateral_px, axial_px) + 0.5, 0.0, 1.0)
    np.clip(depth_idx, 0.0, n_r - 1.001, out=depth_idx)
    np.clip(line_idx, 0.0, n_l - 1.001, out=line_idx)
    i, j = depth_idx.astype(np.int32), line_idx.astype(np.int32)
    a, c = depth_idx - i, line_idx - j
    flat = lines.ravel()
    idx = i * n_l + j
    top = flat[idx] * (1.0 - c) + flat[idx + 1] * c
    idx += n_l
    bottom = flat[idx] * (1.0 - c) + flat[idx + 1] * c
    screen = np.zeros((layout.height, layout.width), dtype=np.float32)
    screen[y0:y1, x0:x1] = (top + (bottom - top) * a) * cover
    return screen
