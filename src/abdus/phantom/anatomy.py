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

The organs built from these sizes are :mod:`abdus.phantom.organs` (the measured kidney,
spleen and liver sections) and :mod:`abdus.phantom.surroundings` (body wall, vessels, bowel,
gallbladder); their echogenicities are :mod:`abdus.phantom.tissues`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
