"""Per-view scene parameters: where each view puts its organs and what it adds around them.

Every range is a :class:`Span` whose unit is in the field's name (``_mm`` plane mm, ``_deg``
degrees, ``_rad`` radians, ``_fraction`` a share of a size); ``*_at`` fields are positions
``s`` along a band outline (-1 .. +1, :class:`abdus.phantom.scan.Band`); counts are whole
numbers, both ends included. The scenes that use them are :mod:`abdus.phantom.views`,
:mod:`abdus.phantom.liver_views` and :mod:`abdus.phantom.other_views`. Changing a value changes
what every seed generates.
"""

from __future__ import annotations

from dataclasses import dataclass

from abdus.phantom.anatomy import PatientAnatomy


@dataclass(frozen=True)
class Span:
    """A closed interval ``[low, high]`` to draw from; the unit is in the name of the field
    that holds it (``angle_deg: Span``). Counts are whole numbers, both ends included."""

    low: float
    high: float

    def offset(self, by: float) -> Span:
        """The span moved by ``by`` (same unit): relative to a point of the scene."""
        return Span(by + self.low, by + self.high)


@dataclass(frozen=True)
class Placement:
    """Where a view first tries its measured organ, before
    :meth:`abdus.phantom.scene.SceneBuilder.fit`.

    ``flip_probability``: chance the section is mirrored across its long axis;
    ``angle_deg``: in-plane angle of the long axis (from screen +x towards +z);
    ``lateral_mm``: centre offset from the central beam (plane x);
    ``gap_below_wall_mm``: drawn gap below the body wall, to which ``centre_below_gap_mm``
    (about the organ's half thickness) is added to give the depth of the centre.
    """

    flip_probability: float
    angle_deg: Span
    lateral_mm: Span
    gap_below_wall_mm: Span
    centre_below_gap_mm: float


@dataclass(frozen=True)
class BowelGas:
    """Chance that a bowel loop carries gas: ``base + per_patient * anatomy.bowel_gas``."""

    base: float
    per_patient: float

    def probability(self, anatomy: PatientAnatomy) -> float:
        """The chance for this patient (0..1)."""
        return self.base + self.per_patient * anatomy.bowel_gas


@dataclass(frozen=True)
class BowelLoops:
    """Bowel loops centred in a box around a point of the scene: ``lateral_mm`` (screen right
    positive) and ``below_mm`` from that point, ``count`` loops, gas by chance."""

    lateral_mm: Span
    below_mm: Span
    count: Span
    gas: BowelGas


@dataclass(frozen=True)
class KidneyLongLayout:
    """Kidney long view through the flank: the liver is the window on the right; on the
    left the spleen lies over the upper pole and bowel over the rest."""

    placement: Placement
    oblique_probability: float = 0.5  # 'others' partial views: a shorter, off-axis cut
    oblique_length_fraction: Span = Span(0.55, 0.8)
    psoas_gap_mm: Span = Span(15.0, 30.0)
    liver_gap_mm: Span = Span(2.0, 6.0)
    liver_extension_mm: float = 20.0
    spleen_angle_deg: Span = Span(-25.0, 0.0)  # relative to the kidney
    spleen_gap_mm: Span = Span(2.0, 6.0)  # above the upper pole
    bowel_beyond_kidney_mm: float = 20.0  # towards screen right
    bowel_above_kidney_mm: float = 10.0
    bowel_loops: int = 3
    bowel_gas: BowelGas = BowelGas(0.4, 0.6)
    ribs: Span = Span(0, 2)


def _kidney_placement(angle_deg: Span, centre_below_gap_mm: float) -> Placement:
    return Placement(0.5, angle_deg, Span(-15.0, 15.0), Span(15.0, 45.0), centre_below_gap_mm)


KIDNEY_LONG = KidneyLongLayout(_kidney_placement(Span(-28.0, 12.0), 25.0))


@dataclass(frozen=True)
class KidneyTransLayout:
    """Kidney transverse view: vertebral body medially, liver (right) or spleen (left) above.
    Lateral offsets are from the kidney's centre (plane x)."""

    placement: Placement
    psoas_gap_mm: Span = Span(10.0, 25.0)
    spine_below_centre_mm: Span = Span(15.0, 30.0)
    vertebra_probability: float = 0.5
    vertebra_medial_mm: Span = Span(55.0, 80.0)
    vertebra_half_width_mm: Span = Span(18.0, 25.0)
    liver_gap_mm: Span = Span(2.0, 6.0)  # right
    right_bowel_lateral_mm: Span = Span(20.0, 70.0)
    right_bowel_above_centre_mm: float = 30.0
    right_bowel_gas: BowelGas = BowelGas(0.0, 0.5)
    spleen_lateral_mm: Span = Span(15.0, 40.0)  # left, from the kidney's top
    spleen_above_mm: Span = Span(25.0, 35.0)
    spleen_angle_deg: Span = Span(-30.0, 0.0)
    left_bowel_lateral_mm: Span = Span(-70.0, 10.0)
    left_bowel_above_kidney_mm: float = 10.0
    left_bowel_loops: int = 3
    left_bowel_gas: BowelGas = BowelGas(0.4, 0.6)
    ribs: Span = Span(0, 1)


KIDNEY_TRANS = KidneyTransLayout(_kidney_placement(Span(-22.0, 22.0), 20.0))


@dataclass(frozen=True)
class SpleenLayout:
    """Spleen view (left intercostal): diaphragm on the convex side, the left kidney deep to
    the hilum, bowel below. ``*_at``: position ``s`` along the spleen (-1 .. +1)."""

    plane: str  # "long" or "trans"
    placement: Placement
    diaphragm_up_to: Span = Span(-0.2, 0.4)
    kidney_at: Span = Span(0.1, 0.5)  # on the concave (hilar) edge
    kidney_lateral_mm: Span = Span(0.0, 20.0)
    kidney_below_mm: Span = Span(25.0, 40.0)  # away from the hilum
    kidney_angle_deg: Span = Span(-25.0, 25.0)  # relative to the spleen
    kidney_length_fraction: Span = Span(0.75, 1.0)  # long only
    kidney_shown_probability: float = 0.8
    bowel: BowelLoops = BowelLoops(  # around the spleen's centre
        Span(-40.0, 60.0), Span(30.0, 80.0), Span(0, 2), BowelGas(0.0, 1.0)
    )
    ribs: Span = Span(1, 2)


def _spleen_placement(angle_deg: Span) -> Placement:
    return Placement(0.15, angle_deg, Span(-15.0, 15.0), Span(8.0, 30.0), 25.0)


SPLEEN_LONG = SpleenLayout("long", _spleen_placement(Span(-35.0, 10.0)))
SPLEEN_TRANS = SpleenLayout("trans", _spleen_placement(Span(-25.0, 25.0)))


@dataclass(frozen=True)
class LiverRightLongLayout:
    """Right lobe sagittal view: dome at screen left under the diaphragm, the right kidney
    often behind the inferior part, bowel beyond the tip. ``*_at``: position ``s`` along the
    lobe (-1 dome .. +1 tip)."""

    angle_deg: Span = Span(-50.0, -20.0)  # lobe axis from screen +x towards +z
    lateral_mm: Span = Span(-45.0, 5.0)
    centre_below_wall_mm: float = 20.0
    fallback_angle_rad: float = -1.4  # the pose tried last: axis along the beam, tip up
    diaphragm_up_to: Span = Span(-0.1, 0.3)
    kidney_probability: float = 0.85
    kidney_at: Span = Span(0.15, 0.5)  # on the lobe's deep edge
    kidney_gap_mm: Span = Span(3.0, 10.0)  # beyond the kidney's half thickness
    kidney_angle_deg: Span = Span(0.0, 30.0)  # relative to the lobe
    kidney_length_fraction: Span = Span(0.7, 1.0)  # oblique cuts look shorter
    bowel: BowelLoops = BowelLoops(  # beyond the tip
        Span(0.0, 50.0), Span(0.0, 40.0), Span(0, 2), BowelGas(0.0, 1.0)
    )
    ribs: Span = Span(0, 2)


LIVER_RIGHT_LONG = LiverRightLongLayout()


@dataclass(frozen=True)
class LiverRightTransLayout:
    """Right lobe transverse view: hepatic veins converging on the IVC, sometimes the right
    kidney or the gallbladder. ``*_at_deg``: normalised angle on the liver outline."""

    semi_width_fraction: Span = Span(1.0, 1.25)  # of half the sampled width
    semi_depth_fraction: Span = Span(0.85, 1.05)  # of half the sampled depth
    lateral_mm: Span = Span(-30.0, 10.0)
    kidney_probability: float = 0.35
    kidney_at_deg: Span = Span(100.0, 140.0)
    ivc_at_deg: Span = Span(35.0, 70.0)
    ivc_inset_fraction: float = 0.25  # from the outline towards the centre
    hepatic_veins_probability: float = 0.6
    hepatic_vein_directions_deg: tuple[Span, ...] = (
        Span(-175.0, -150.0),
        Span(-145.0, -120.0),
        Span(-115.0, -95.0),
    )
    hepatic_vein_half_length_mm: Span = Span(18.0, 35.0)
    portal_branches: Span = Span(2, 5)
    gallbladder_probability: float = 0.35
    gallbladder_at_deg: Span = Span(60.0, 110.0)
    gallbladder_angle_deg: Span = Span(-40.0, 0.0)
    ribs: Span = Span(0, 1)


LIVER_RIGHT_TRANS = LiverRightTransLayout()


@dataclass(frozen=True)
class LiverLeftLayout:
    """Left lobe view (epigastric): a wedge thinning to its tip at screen right over the
    aorta and spine, which the sonographer keeps in view."""

    plane: str  # "long" (sagittal) or "trans"
    half_length_mm: Span
    aorta_below_lobe_mm: Span
    lateral_mm: Span = Span(-30.0, 5.0)
    angle_deg: Span = Span(-12.0, 12.0)
    sag_mm: Span = Span(2.0, 8.0)  # the lobe bends away from the probe
    heart_probability: float = 0.4  # long only: the heart beyond the diaphragm, cranial
    aorta_lateral_mm: Span = Span(-5.0, 15.0)  # trans only
    bowel: BowelLoops = BowelLoops(  # around the tip
        Span(-10.0, 50.0), Span(0.0, 40.0), Span(1, 3), BowelGas(0.3, 0.6)
    )
    portal_branches: Span = Span(1, 3)
    ligamentum_teres_probability: float = 0.7  # trans only: bright, shadowing
    ligamentum_teres_at: Span = Span(-0.4, 0.1)  # s along the lobe


LIVER_LEFT_LONG = LiverLeftLayout("long", Span(45.0, 70.0), Span(10.0, 30.0))
LIVER_LEFT_TRANS = LiverLeftLayout("trans", Span(60.0, 90.0), Span(15.0, 35.0))


@dataclass(frozen=True)
class GallbladderPlane:
    """Subcostal plane through the liver and the gallbladder."""

    liver_semi_width_mm: Span = Span(90.0, 120.0)
    liver_semi_depth_mm: Span = Span(55.0, 75.0)
    liver_lateral_mm: Span = Span(-20.0, 20.0)
    portal_branches: int = 3
    portal_extent_mm: float = 40.0
    gallbladder_lateral_mm: Span = Span(-15.0, 15.0)
    gallbladder_below_wall_mm: Span = Span(35.0, 60.0)
    gallbladder_angle_deg: Span = Span(-30.0, 30.0)


@dataclass(frozen=True)
class BladderPlane:
    """Suprapubic plane: a full, squarish bladder with bowel beyond it."""

    squareness: Span = Span(0.03, 0.08)  # amplitude of the 4th outline harmonic
    below_wall_mm: Span = Span(40.0, 60.0)
    lateral_mm: Span = Span(-10.0, 10.0)
    angle_deg: Span = Span(-10.0, 10.0)
    semi_width_mm: Span = Span(35.0, 60.0)
    semi_depth_mm: Span = Span(25.0, 45.0)
    bowel_lateral_mm: Span = Span(-90.0, 90.0)
    bowel_gap_mm: float = 15.0  # below the bladder
    bowel_deepest_mm: float = 80.0  # below the bladder's centre
    bowel_loops: int = 4
    bowel_gas: BowelGas = BowelGas(0.0, 1.0)


@dataclass(frozen=True)
class MidlinePlane:
    """Epigastric plane of the aorta (sagittal) or the pancreas (transverse), under bowel."""

    plane: str  # "long" or "trans"
    aorta_below_wall_mm: Span
    aorta_lateral_mm: Span = Span(-15.0, 15.0)  # trans only
    bowel: BowelLoops = BowelLoops(  # under the wall on the central beam
        Span(-80.0, 80.0), Span(0.0, 40.0), Span(2, 4), BowelGas(0.4, 0.5)
    )


@dataclass(frozen=True)
class BowelPlane:
    """Bowel loops only, under the wall on the central beam."""

    bowel: BowelLoops = BowelLoops(
        Span(-100.0, 100.0), Span(0.0, 90.0), Span(5, 9), BowelGas(0.5, 0.5)
    )


GALLBLADDER_PLANE = GallbladderPlane()
BLADDER_PLANE = BladderPlane()
AORTA_PLANE = MidlinePlane("long", aorta_below_wall_mm=Span(50.0, 90.0))
PANCREAS_PLANE = MidlinePlane("trans", aorta_below_wall_mm=Span(55.0, 80.0))
BOWEL_PLANE = BowelPlane()
OTHERS_RIBS = Span(0, 1)  # ribs in any 'others' plane of other anatomy
