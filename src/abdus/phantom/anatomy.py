"""Virtual patients: organ sizes from published adult ranges, and smooth random organ shapes.

A :class:`PatientAnatomy` is sampled once per patient and stays the same across all of their
views, so the same kidney is measured on the long and the transverse view.

Sizes (adult, mm) and their sources:

* kidney length 90-125 (Emamian et al., AJR 1993: 11.2 +/- 0.8 cm left, 10.9 right), left and
  right lengths differ by < 15 mm; width (transverse long axis) 45-65; AP depth 33-52.
* spleen length 80-130 (Frank et al. 1987; normal < 12-13 cm); transverse width 55-90, thickness
  30-55.
* liver right lobe craniocaudal 140 +/- 17 (Kratzer et al., Radiology 2003, midclavicular line),
  kept within 100-190 so every standard liver view can contain both ends.
* subcutaneous fat 6-45 mm (body habitus).

Organ outlines are deformed with a few low-order Fourier terms drawn from ``shape_seed`` (see
:func:`shape_rng`), so shapes are smooth, random and the same for a patient in every view.

Organ builders (``kidney_long``, ``kidney_trans``, ``spleen_section``, ``liver_right_long``,
...) return the layers to paint and the outline points at the ends of the organ's axes, in
plane mm (see :mod:`abdus.phantom.scan`). Echogenicity follows the usual ordering (Rumack,
*Diagnostic Ultrasound*): renal sinus > perirenal fat > spleen >= liver > renal cortex >
medullary pyramids > fluid; a fatty liver is brighter and attenuates more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from abdus.phantom.physics import Layer, Tissue
from abdus.phantom.scan import (
    Band,
    HalfPlane,
    Intersect,
    Shell,
    Star,
    circle,
    segment,
    wobble,
)


@dataclass(frozen=True)
class OrganSize:
    """Organ dimensions in mm.

    ``length_mm``: long axis (craniocaudal); ``width_mm``: long axis of the transverse section;
    ``depth_mm``: short axis of the transverse section (AP thickness).
    """

    length_mm: float
    width_mm: float
    depth_mm: float


@dataclass(frozen=True)
class PatientAnatomy:
    """One virtual patient, consistent across all of their views (sizes in mm, echoes in dB).

    Echogenicity offsets are in dB relative to normal liver parenchyma (0 dB).
    """

    patient_id: str
    kidney_right: OrganSize
    kidney_left: OrganSize
    spleen: OrganSize
    liver: OrganSize  # length_mm = right lobe craniocaudal (LL_LA)
    fat_mm: float  # subcutaneous fat thickness (habitus)
    shape_seed: int  # seeds the smooth random deformation of organ outlines
    muscle_mm: float  # abdominal / flank wall muscle thickness
    liver_echo_db: float  # > ~4 dB: fatty liver (brighter, more attenuating)
    liver_atten: float  # dB/cm/MHz
    spleen_echo_db: float
    kidney_cortex_echo_db: float  # normal cortex is hypoechoic to liver (negative)
    kidney_sinus_echo_db: float
    aorta_mm: float  # diameter
    ivc_mm: float  # AP diameter
    portal_vein_mm: float
    gallbladder: OrganSize | None  # None after cholecystectomy
    bowel_gas: float  # 0..1, how much bowel gas the patient has

    def kidney(self, side: str) -> OrganSize:
        """The kidney on ``side`` ('right' or 'left')."""
        if side not in ("right", "left"):
            raise ValueError(f"unknown side {side!r}; valid sides: right, left")
        return self.kidney_right if side == "right" else self.kidney_left


def _normal(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float) -> float:
    """A normal draw clipped into [lo, hi] (published normal ranges)."""
    return float(np.clip(rng.normal(mean, sd), lo, hi))


def _kidneys(rng: np.random.Generator) -> tuple[OrganSize, OrganSize]:
    right_len = _normal(rng, 107.0, 8.0, 90.0, 125.0)
    # Left kidney is on average ~3 mm longer; |left - right| < 15 mm (Emamian 1993).
    left_len = float(np.clip(right_len + _normal(rng, 3.0, 5.0, -14.0, 14.0), 90.0, 125.0))
    sizes = []
    for length in (right_len, left_len):
        width = _normal(rng, 55.0, 4.0, 45.0, 65.0)
        depth = min(_normal(rng, 42.0, 4.0, 33.0, 52.0), width - 4.0)
        sizes.append(OrganSize(length, width, depth))
    return sizes[0], sizes[1]


def sample_patient(rng: np.random.Generator, patient_id: str) -> PatientAnatomy:
    """Draw one adult virtual patient. All randomness comes from ``rng``."""
    kidney_right, kidney_left = _kidneys(rng)
    spleen_len = _normal(rng, 103.0, 11.0, 80.0, 130.0)
    spleen = OrganSize(
        spleen_len, _normal(rng, 70.0, 7.0, 55.0, 90.0), _normal(rng, 42.0, 5.0, 30.0, 55.0)
    )
    liver = OrganSize(
        _normal(rng, 140.0, 17.0, 100.0, 190.0),
        _normal(rng, 160.0, 15.0, 120.0, 200.0),
        _normal(rng, 115.0, 12.0, 85.0, 150.0),
    )
    fatty = rng.random() < 0.2  # steatosis prevalence ~20-30% in adults
    gallbladder = None
    if rng.random() > 0.06:  # ~6% cholecystectomy
        gb_len = _normal(rng, 75.0, 12.0, 45.0, 100.0)
        gallbladder = OrganSize(gb_len, _normal(rng, 30.0, 5.0, 18.0, 40.0), 0.0)
    return PatientAnatomy(
        patient_id=patient_id,
        kidney_right=kidney_right,
        kidney_left=kidney_left,
        spleen=spleen,
        liver=liver,
        fat_mm=_normal(rng, 20.0, 8.0, 6.0, 45.0),
        shape_seed=int(rng.integers(0, 2**31 - 1)),
        muscle_mm=_normal(rng, 12.0, 3.0, 6.0, 20.0),
        liver_echo_db=(5.0 if fatty else 0.0) + float(rng.normal(0.0, 1.0)),
        liver_atten=(0.75 if fatty else 0.5) + float(rng.normal(0.0, 0.05)),
        spleen_echo_db=float(rng.normal(1.0, 1.0)),
        kidney_cortex_echo_db=float(rng.normal(-5.0, 1.2)),
        kidney_sinus_echo_db=float(rng.normal(7.0, 1.5)),
        aorta_mm=_normal(rng, 19.0, 2.5, 14.0, 28.0),
        ivc_mm=_normal(rng, 17.0, 3.0, 10.0, 25.0),
        portal_vein_mm=_normal(rng, 11.5, 1.5, 8.0, 15.0),
        gallbladder=gallbladder,
        bowel_gas=float(rng.beta(2.0, 3.0)),
    )


def shape_rng(anatomy: PatientAnatomy, organ: str) -> np.random.Generator:
    """A generator for the fixed shape of one organ of one patient (same in every view)."""
    key = sum((i + 1) * ord(c) for i, c in enumerate(organ))
    return np.random.default_rng([anatomy.shape_seed, key])


# --------------------------------------------------------------------------------------------
# Organs: layers to paint plus named outline points (plane mm)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pose:
    """Where an organ section lies in the image plane: centre (mm), in-plane rotation of its
    long axis (radians from screen +x towards +z), ``flip`` (mirror across the long axis, e.g.
    which side the hilum faces) and the out-of-plane probe ``tilt`` in degrees, which changes
    the look of the section (not its measured axes)."""

    x: float
    z: float
    angle: float
    flip: bool = False
    tilt: float = 0.0

    @property
    def sign(self) -> int:
        """-1 when flipped, else +1."""
        return -1 if self.flip else 1


@dataclass
class Organ:
    """Layers of one organ section, its outline and named outline points (plane mm).

    ``points``: ``la_1``/``la_2`` (long-axis ends) and for transverse sections ``sa_1``/
    ``sa_2`` (short-axis ends), exactly the sampled sizes apart.
    """

    layers: list[Layer]
    outline: Any
    points: dict[str, tuple[float, float]]


def tissue_table(anatomy: PatientAnatomy) -> dict[str, Tissue]:
    """Acoustic tissue classes of one patient (echo dB relative to normal liver)."""
    liver = anatomy.liver_echo_db
    cortex = anatomy.kidney_cortex_echo_db
    return {
        "background": Tissue(-8.0, 0.6, 5.5, 1.5),
        "skin": Tissue(5.0, 0.6, 1.0, 2.0),
        "fat": Tissue(-12.0, 0.6, 3.0, 2.5),
        "fascia": Tissue(3.0, 0.7, 1.0, 3.0),
        "muscle": Tissue(-9.0, 0.9, 1.0, 3.5),
        "liver": Tissue(liver, anatomy.liver_atten, 1.2),
        "mirror": Tissue(liver - 4.0, 0.5, 2.5, 1.0),
        "spleen": Tissue(anatomy.spleen_echo_db, 0.5, 0.8),
        "cortex": Tissue(cortex, 0.6, 0.9),
        "pyramid": Tissue(cortex - 10.0, 0.5, 0.8),
        "sinus": Tissue(anatomy.kidney_sinus_echo_db, 0.7, 4.5, 1.5),
        "perirenal": Tissue(5.0, 0.6, 3.5, 2.5),
        "fluid": Tissue(-48.0, 0.02, 0.0),
        "blood": Tissue(-40.0, 0.05, 0.0),
        "diaphragm": Tissue(9.0, 0.8, 1.0, 2.0),
        "gas": Tissue(12.0, 60.0, 2.0, 0.0, gas=True),
        "bone": Tissue(12.0, 60.0, 1.0),
        "stone": Tissue(14.0, 40.0, 0.5),
        "bowel_wall": Tissue(-10.0, 0.6, 1.0),
        "bowel_content": Tissue(2.0, 0.6, 5.0, 1.0),
        "pancreas": Tissue(1.0, 0.5, 2.5),
        "psoas": Tissue(-9.0, 0.8, 1.0, 4.0),
        "myocardium": Tissue(-6.0, 0.6, 1.5, 1.0),
    }


def _ends(band: Band) -> dict[str, tuple[float, float]]:
    return {"la_1": band.point(-1.0), "la_2": band.point(1.0)}


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
    The probe tilt (``pose.tilt``) moves the sinus off centre, thins it and hides pyramids.
    """
    size, shape = anatomy.kidney(side), shape_rng(anatomy, f"kidney_{side}")
    thick = 0.5 * (size.width_mm + size.depth_mm) * float(shape.uniform(0.86, 0.98))
    bend = pose.sign * float(shape.uniform(1.5, 5.0))
    half_len, half_thick = 0.5 * size.length_mm * length_scale, 0.5 * thick * length_scale**0.5
    outline = Band(
        pose.x,
        pose.z,
        pose.angle,
        half_len,
        half_thick,
        bend,
        power=2.3,
        wobble=wobble(shape, 3, 0.045),
    )
    tilt = float(np.clip(pose.tilt / 12.0, -1.0, 1.0))
    sinus_at = outline.to_plane(0.0, bend + pose.sign * thick * (0.06 + 0.05 * tilt))
    sinus = Band(
        *sinus_at,
        pose.angle,
        half_len * float(rng.uniform(0.58, 0.72)),
        half_thick * float(rng.uniform(0.3, 0.42)) * (1 - 0.2 * abs(tilt)),
        0.7 * bend,
        wobble=wobble(rng, 3, 0.14, 1.5),
    )
    layers = [
        Layer(outline.grown(float(shape.uniform(3.0, 7.0))), tissues["perirenal"]),
        Layer(outline, tissues["cortex"], rim_db=8.0, rim_mm=0.6),
        *_pyramids_long(outline, int(shape.integers(3, 5)), 0.25 + 0.2 * abs(tilt), rng, tissues),
        Layer(sinus, tissues["sinus"]),
    ]
    if rng.random() < 0.35:  # renal vein / pelvis leaving through the hilum
        inner = outline.to_plane(0.0, bend)
        hilum = outline.to_plane(0.0, bend + pose.sign * 0.75 * thick)
        layers.append(Layer(segment(inner, hilum, float(rng.uniform(2.0, 3.5))), tissues["blood"]))
    return Organ(layers, outline, _ends(outline))


def _pyramids_long(
    outline: Band,
    per_side: int,
    p_missing: float,
    rng: np.random.Generator,
    tissues: dict[str, Tissue],
) -> list[Layer]:
    """Medullary pyramids in a row on both sides of the sinus; some are not in the plane."""
    layers = []
    for s in np.linspace(-0.72, 0.72, per_side):
        for edge in (-1, 1):
            if rng.random() < p_missing:
                continue
            s_k = float(s + rng.uniform(-0.06, 0.06))
            t = float(outline.thickness(s_k))
            at = outline.to_plane(
                s_k * outline.half_length, outline.centre_line(s_k) + edge * 0.58 * t
            )
            pyramid = Star(
                *at,
                outline.angle,
                0.07 * outline.half_length + 1.5,
                0.2 * t + 1.0,
                wobble(rng, 1, 0.1, 3.0),
            )
            layers.append(Layer(pyramid, tissues["pyramid"]))
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
    notch_at = math.pi + pose.sign * float(shape.uniform(0.5, 0.85))
    notch = (float(shape.uniform(0.2, 0.3)), notch_at, float(shape.uniform(0.22, 0.3)))
    unit = Star(0.0, 0.0, 0.0, 1.0, 1.0, wobble(shape, 2, 0.04, 2.0), notch)
    semi_u = float(size.width_mm / (unit.rho(0.0) + unit.rho(math.pi)))
    semi_v = float(size.depth_mm / (unit.rho(0.5 * math.pi) + unit.rho(-0.5 * math.pi)))
    outline = replace(unit, cx=pose.x, cz=pose.z, angle=pose.angle, semi_u=semi_u, semi_v=semi_v)
    fat = float(shape.uniform(3.0, 7.0))
    hilum = outline.point(notch_at)
    # Probe tilt moves the cut through the hilum: the sinus shifts towards the notch.
    mix = 0.3 + 0.08 * float(np.clip(pose.tilt / 12.0, -1.0, 1.0)) + float(rng.uniform(-0.05, 0.05))
    sinus_at = (pose.x + mix * (hilum[0] - pose.x), pose.z + mix * (hilum[1] - pose.z))
    sinus = Star(
        *sinus_at,
        pose.angle + notch_at,
        0.38 * semi_u,
        float(rng.uniform(0.28, 0.4)) * semi_v,
        wobble(rng, 3, 0.12, 2.0),
    )
    layers = [
        Layer(replace(outline, semi_u=semi_u + fat, semi_v=semi_v + fat), tissues["perirenal"]),
        Layer(outline, tissues["cortex"], rim_db=8.0, rim_mm=0.6),
    ]
    for k in range(int(rng.integers(2, 5))):  # pyramids around the sinus, away from the hilum
        theta = notch_at + math.pi + (k - 1.5) * 0.9 + float(rng.uniform(-0.2, 0.2))
        edge = outline.point(theta)
        at = (0.45 * pose.x + 0.55 * edge[0], 0.45 * pose.z + 0.55 * edge[1])
        pyramid = Star(*at, pose.angle + theta, 0.16 * semi_u, 0.1 * semi_u + 1.0)
        layers.append(Layer(pyramid, tissues["pyramid"]))
    layers.append(Layer(sinus, tissues["sinus"]))
    if rng.random() < 0.6:  # renal vein in the hilum
        layers.append(
            Layer(
                segment(sinus_at, hilum, float(rng.uniform(2.0, 4.0)), 4.0, 4.0), tissues["blood"]
            )
        )
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
        half_len, half_thick = 0.5 * size.length_mm, 0.5 * size.depth_mm * shape.uniform(0.9, 1.1)
        bend = -pose.sign * half_len * float(shape.uniform(0.2, 0.32))
    else:
        half_len, half_thick = 0.5 * size.width_mm, 0.5 * size.depth_mm
        bend = -pose.sign * half_len * float(shape.uniform(0.12, 0.25))
    unit = Band(
        pose.x,
        pose.z,
        pose.angle,
        half_len,
        1.0,
        bend,
        taper=float(shape.uniform(0, 0.4)),
        power=1.8,
        wobble=wobble(shape, 3, 0.05),
    )
    outline = replace(unit, half_thickness=float(half_thick / unit.thickness(0.0)))
    layers = [Layer(outline, tissues["spleen"], rim_db=8.0, rim_mm=0.6)]
    for _ in range(int(rng.integers(1, 4))):  # hilar vessels on the concave side
        s = float(rng.uniform(-0.3, 0.3))
        at = outline.point(s, edge=pose.sign)
        layers.append(
            Layer(
                Star(*at, pose.angle, float(rng.uniform(2.5, 5.0)), float(rng.uniform(2.0, 3.5))),
                tissues["blood"],
            )
        )
    points = _ends(outline)
    if plane == "trans":
        points |= {"sa_1": outline.point(0.0, -1), "sa_2": outline.point(0.0, 1)}
    return Organ(layers, outline, points)


def liver_vessels(
    liver: Any,
    centre: tuple[float, float],
    extent: float,
    rng: np.random.Generator,
    tissues: dict[str, Tissue],
    count: int,
) -> list[Layer]:
    """Portal branches (bright walls) and hepatic veins (no wall) inside the ``liver`` outline,
    within ``extent`` mm of ``centre``."""
    layers = []
    for _ in range(count):
        at = (
            centre[0] + float(rng.uniform(-extent, extent)),
            centre[1] + float(rng.uniform(-0.7, 0.7)) * extent,
        )
        angle = float(rng.uniform(0, math.pi))
        if rng.random() < 0.5:  # portal triad: echogenic fibro-fatty wall
            shape = Star(*at, angle, float(rng.uniform(2.5, 6.0)), float(rng.uniform(2.0, 4.0)))
            layers.append(Layer(Intersect(shape, (liver,)), tissues["blood"], 9.0, 0.8))
        else:  # hepatic vein, cut along its length
            shape = Band(
                *at,
                angle,
                float(rng.uniform(10.0, 30.0)),
                float(rng.uniform(2.0, 4.5)),
                float(rng.uniform(-3, 3)),
                taper=0.4,
                power=4.0,
            )
            layers.append(Layer(Intersect(shape, (liver,)), tissues["blood"]))
    return layers


def bowel_loop(
    x: float,
    z: float,
    radius: float,
    gas: bool,
    rng: np.random.Generator,
    tissues: dict[str, Tissue],
) -> list[Layer]:
    """A bowel loop: hypoechoic wall, echogenic content and, if ``gas``, a gas cap on the
    probe side that casts a dirty shadow."""
    outer = Star(
        x,
        z,
        float(rng.uniform(0, math.pi)),
        radius,
        radius * float(rng.uniform(0.6, 1)),
        wobble(rng, 2, 0.08, 2.0),
    )
    inner = replace(outer, semi_u=outer.semi_u - 2.5, semi_v=max(outer.semi_v - 2.5, 1.5))
    layers = [Layer(outer, tissues["bowel_wall"]), Layer(inner, tissues["bowel_content"], 4.0)]
    if gas:
        cap = Intersect(inner, (HalfPlane(0.0, 1.0, z - 0.2 * inner.semi_v),))
        layers.append(Layer(cap, tissues["gas"], 10.0, 0.8))
    return layers


def body_wall(
    anatomy: PatientAnatomy,
    probe_radius: float,
    rng: np.random.Generator,
    tissues: dict[str, Tissue],
    fat_scale: float = 1.0,
) -> tuple[list[Layer], float]:
    """Skin, subcutaneous fat, fascia, muscle and peritoneum under the probe face.

    Returns the layers and the wall thickness in mm (depth where the organs may begin).
    """
    fat = anatomy.fat_mm * fat_scale
    muscle = anatomy.muscle_mm * float(rng.uniform(0.8, 1.2))
    w = tuple(
        (float(rng.uniform(0.5, 2.0)), float(rng.uniform(2, 6)), float(rng.uniform(0, 6.3)))
        for _ in range(2)
    )
    depths = [0.0, 1.2, 1.2 + fat, 2.4 + fat, 2.4 + fat + muscle, 3.6 + fat + muscle]
    kinds = ["skin", "fat", "fascia", "muscle", "fascia"]
    layers = [
        Layer(Shell(probe_radius, top, bottom, w if top > 0 else ()), tissues[kind])
        for top, bottom, kind in zip(depths[:-1], depths[1:], kinds, strict=True)
    ]
    return layers, depths[-1]


def liver_right_long(
    anatomy: PatientAnatomy, pose: Pose, rng: np.random.Generator, tissues: dict[str, Tissue]
) -> Organ:
    """Right lobe sagittal section: a wedge from the diaphragm dome (``la_1`` end, blunt) to
    the inferior tip (``la_2`` end, sharp), exactly the craniocaudal length apart."""
    shape = shape_rng(anatomy, "liver_long")
    half_len = 0.5 * anatomy.liver.length_mm
    unit = Band(
        pose.x,
        pose.z,
        pose.angle,
        half_len,
        1.0,
        -float(shape.uniform(0.04, 0.1)) * half_len,
        taper=float(shape.uniform(0.6, 0.9)),
        wobble=wobble(shape, 3, 0.04),
    )
    widest = float(np.max(unit.thickness(np.linspace(-1.0, 1.0, 41))))
    outline = replace(
        unit, half_thickness=0.5 * anatomy.liver.depth_mm * float(shape.uniform(0.8, 0.95)) / widest
    )
    layers = [Layer(outline, tissues["liver"], 4.0, 0.6)]
    layers += liver_vessels(
        outline,
        outline.point(-0.2),
        0.45 * outline.half_thickness,
        rng,
        tissues,
        int(rng.integers(3, 8)),
    )
    return Organ(layers, outline, _ends(outline))


def gallbladder(
    anatomy: PatientAnatomy,
    x: float,
    z: float,
    angle: float,
    rng: np.random.Generator,
    tissues: dict[str, Tissue],
) -> list[Layer]:
    """Pear-shaped anechoic gallbladder with an echogenic wall, sometimes with a shadowing
    stone in its dependent part (empty list after cholecystectomy)."""
    size = anatomy.gallbladder
    if size is None:
        return []
    gb = Band(
        x,
        z,
        angle,
        0.5 * size.length_mm,
        0.5 * size.width_mm,
        float(rng.uniform(-4, 4)),
        taper=0.45,
        power=2.2,
        wobble=wobble(rng, 2, 0.05),
    )
    layers = [Layer(gb, tissues["fluid"], 7.0, 0.8)]
    if rng.random() < 0.2:
        stone = gb.point(float(rng.uniform(-0.6, 0.2)), 1)
        layers.append(
            Layer(
                circle(stone[0], stone[1] - 4.0, float(rng.uniform(3.0, 6.0))),
                tissues["stone"],
                10.0,
                0.6,
            )
        )
    return layers
