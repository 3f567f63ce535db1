"""What most needs a look first: the work-list priority of one item (higher = sooner).

Each reason adds to the score, so an item with several reasons rises above one with a single
reason: a low view probability, a low landmark confidence, a measurement outside the normal
adult range, and disagreement between reader A and reader B.
"""

from __future__ import annotations

from collections.abc import Mapping

from abdus.taxonomy import PAPER_HUMAN_MAE_MM

# Normal adult ranges in mm. A value outside is not necessarily disease; it is more often a
# misplaced caliper, which is what the reviewer should look at first.
#   KL_LA  kidney length 90-130: Emamian et al., AJR 1993;160:83-86 (mean 10.9-11.2 cm).
#   KT_LA  kidney width 40-70, KT_SA kidney depth (AP) 30-60: Emamian et al. 1993.
#   LL_LA  right liver lobe length (mid-clavicular) 100-160: Kratzer et al., J Ultrasound Med
#          2003;22:1155-1161 (upper limit ~16 cm).
#   SL_LA  spleen length 70-130: Chow et al., Radiology 2016;279:306-313 (upper limit ~13 cm).
#   ST_LA  spleen width 40-80, ST_SA spleen thickness 20-50: the "12-7-4" rule (length 12,
#          width 7, thickness 4 cm), Frank et al. 1986, as quoted in Rumack, Diagnostic
#          Ultrasound, 5th ed., ch. 4.
NORMAL_ADULT_RANGE_MM: dict[str, tuple[float, float]] = {
    "KL_LA": (90.0, 130.0),
    "KT_LA": (40.0, 70.0),
    "KT_SA": (30.0, 60.0),
    "LL_LA": (100.0, 160.0),
    "SL_LA": (70.0, 130.0),
    "ST_LA": (40.0, 80.0),
    "ST_SA": (20.0, 50.0),
}
# Two readers differ by more than this many times the paper's mean inter-observer difference
# (Table 1, "Human" row): worth a look.
DISAGREEMENT_FACTOR = 2.0


def outside_normal_range(measurements_mm: Mapping[str, float | None]) -> list[str]:
    """The measurement codes whose value (mm) lies outside ``NORMAL_ADULT_RANGE_MM``."""
    outside = []
    for code, value in measurements_mm.items():
        low, high = NORMAL_ADULT_RANGE_MM.get(code, (float("-inf"), float("inf")))
        if value is not None and not low <= value <= high:
            outside.append(code)
    return outside


def readers_disagree(
    view_a: str,
    view_b: str | None,
    mm_a: Mapping[str, float | None],
    mm_b: Mapping[str, float | None],
) -> bool:
    """Reader B named another view, or a measurement differs by more than the threshold."""
    if view_b is None:
        return False
    if view_a != view_b:
        return True
    for code, a in mm_a.items():
        b = mm_b.get(code)
        limit = DISAGREEMENT_FACTOR * PAPER_HUMAN_MAE_MM[code]
        if a is not None and b is not None and abs(a - b) > limit:
            return True
    return False


def priority(
    *,
    view_probability: float | None,
    landmark_confidences: list[float],
    measurements_mm: Mapping[str, float | None],
    disagreement: bool,
) -> float:
    """Score in [0, 4]: (1 - view probability) + (1 - lowest landmark confidence) + 1 when a
    measurement is outside the normal adult range + 1 when the readers disagree. Unknown
    probabilities and confidences (a labelled dataset) add nothing."""
    score = 0.0
    if view_probability is not None:
        score += 1.0 - float(view_probability)
    if landmark_confidences:
        score += 1.0 - min(float(c) for c in landmark_confidences)
    if outside_normal_range(measurements_mm):
        score += 1.0
    if disagreement:
        score += 1.0
    return round(score, 6)
