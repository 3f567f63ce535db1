"""The content of an abdus SR: its codes and the TID 1500 measurement groups, one per caliper.

``abdus.io.sr`` assembles them into a document (and reads them back); the codes and the layout
of each group are described there. Here: the three kinds of group and what they share.

* ``caliper_group``: TID 1410 (planar ROI) for a measurement with a value in mm;
* ``withheld_group``: TID 1501 for a measurement of the view that has no value (no landmark,
  no spacing, or a caliper end off the frame or off the ultrasound region): no coordinates and
  no number, a qualitative evaluation "Length" = "Measurement failure" (DCM 114006, from CID 42
  "Numeric Value Qualifier") and the reason as a TEXT "Comment" (DCM 121106);
* ``view_group``: TID 1501 holding only the view, for an image without any measurement.

Every group carries the algorithm (TID 4019: name "abdus", its version, the model id as the
parameter), as IHE AI Results asks of each AI result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from abdus import __version__
from abdus.taxonomy import MEASUREMENT_BY_CODE, view_by_name

PRIVATE_SCHEME = "99ABDUS"
US_OF_ABDOMEN = hd.sr.CodedConcept("45036003", "SCT", "Ultrasonography of abdomen")
ORGAN_OF_TASK = {
    "kidney_long": codes.SCT.Kidney,
    "kidney_trans": codes.SCT.Kidney,
    "liver_long": codes.SCT.Liver,
    "spleen_long": codes.SCT.Spleen,
    "spleen_trans": codes.SCT.Spleen,
}
VIEW_TRACKING = "view"
# SCOORD (PS3.3 C.18.6.1.2) minus abdus source px (pixel centres at integers).
SCOORD_OFFSET = 0.5


@dataclass(frozen=True)
class CaliperMeasurement:
    """One caliper: measurement ``code`` (taxonomy), ``value_mm``, landmarks ``a``, ``b`` as
    ``(x, y)`` source px of the full frame."""

    code: str
    value_mm: float
    a: tuple[float, float]
    b: tuple[float, float]


@dataclass(frozen=True)
class GroupContext:
    """What every group of one document shares: the ``source`` header, the abdus ``view``,
    the referenced ``frame_numbers`` (1-based; None for a single-frame source) and the
    ``model_id``."""

    source: pydicom.Dataset
    view: str
    frame_numbers: list[int] | None
    model_id: str


def algorithm(model_id: str) -> hd.sr.AlgorithmIdentification:
    """TID 4019: abdus, its version and (as the one parameter) the model that measured."""
    parameters = [f"model_id={model_id}"] if model_id else None
    return hd.sr.AlgorithmIdentification(name="abdus", version=__version__, parameters=parameters)


def _laterality(view: str) -> Any:
    if view.startswith("kidney_right"):
        return codes.SCT.Right
    if view.startswith("kidney_left"):
        return codes.SCT.Left
    return None


def _view_evaluation(view: str) -> hd.sr.QualitativeEvaluation:
    label = view_by_name(view).label
    value = hd.sr.CodedConcept(view, PRIVATE_SCHEME, label.title())
    return hd.sr.QualitativeEvaluation(codes.DCM.ImageView, value)


def _organ_and_site(code: str, view: str) -> tuple[Any, hd.sr.FindingSite]:
    organ = ORGAN_OF_TASK[MEASUREMENT_BY_CODE[code].task]
    return organ, hd.sr.FindingSite(anatomic_location=organ, laterality=_laterality(view))


def _tracking(identifier: str) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=identifier)


def _source_image(context: GroupContext) -> hd.sr.SourceImageForMeasurementGroup:
    return hd.sr.SourceImageForMeasurementGroup(
        referenced_sop_class_uid=context.source.SOPClassUID,
        referenced_sop_instance_uid=context.source.SOPInstanceUID,
        referenced_frame_numbers=context.frame_numbers,
    )


def caliper_group(
    caliper: CaliperMeasurement, context: GroupContext
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """TID 1410 of one caliper: its two ends as a SCOORD POLYLINE on the source image (the
    caller has checked they lie on it) and its Length in mm."""
    organ, site = _organ_and_site(caliper.code, context.view)
    points = np.array([caliper.a, caliper.b], dtype=np.float64) + SCOORD_OFFSET  # (2, 2)
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=points,
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=context.source.SOPClassUID,
            referenced_sop_instance_uid=context.source.SOPInstanceUID,
            referenced_frame_numbers=context.frame_numbers,
        ),
    )
    axis = codes.SCT.ShortAxis if caliper.code.endswith("_SA") else codes.SCT.LongAxis
    length = hd.sr.Measurement(
        name=codes.SCT.Length,
        value=float(caliper.value_mm),
        unit=codes.UCUM.Millimeter,
        algorithm_id=algorithm(context.model_id),
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(caliper.code),
        referenced_region=region,
        finding_type=organ,
        finding_sites=[site],
        geometric_purpose=axis,
        algorithm_id=algorithm(context.model_id),
        measurements=[length],
        qualitative_evaluations=[_view_evaluation(context.view)],
    )


def withheld_group(
    code: str, reason: str, context: GroupContext
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 of a measurement with no value: "Length" = "Measurement failure" and the
    ``reason`` as a TEXT "Comment"; no coordinates, no number."""
    organ, site = _organ_and_site(code, context.view)
    failure = hd.sr.QualitativeEvaluation(codes.SCT.Length, codes.DCM.MeasurementFailure)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(code),
        finding_type=organ,
        finding_sites=[site],
        algorithm_id=algorithm(context.model_id),
        qualitative_evaluations=[_view_evaluation(context.view), failure],
        source_images=[_source_image(context)],
    )
    comment = hd.sr.TextContentItem(
        name=codes.DCM.Comment,
        value=reason[:1024] or "no value",  # UT would allow more; a reason is one line
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    group[0].ContentSequence.append(comment)
    return group


def view_group(context: GroupContext) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 holding the view and the source image only."""
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(VIEW_TRACKING),
        algorithm_id=algorithm(context.model_id),
        qualitative_evaluations=[_view_evaluation(context.view)],
        source_images=[_source_image(context)],
    )


def abdus_view(group: Any) -> str | None:
    """The abdus view of a group (its "Image View" in the private scheme), None without one."""
    for evaluation in group.get_qualitative_evaluations(name=codes.DCM.ImageView):
        if evaluation.value.scheme_designator == PRIVATE_SCHEME:
            return str(evaluation.value.value)
    return None


def withheld_reason(group: Any) -> str | None:
    """The reason of a ``withheld_group`` (its Comment; "no value" without one), None for any
    other group (no "Length" = "Measurement failure", or not a measurement code)."""
    if str(group.tracking_identifier or "") not in MEASUREMENT_BY_CODE:
        return None
    failures = [
        evaluation
        for evaluation in group.get_qualitative_evaluations(name=codes.SCT.Length)
        if evaluation.value == codes.DCM.MeasurementFailure
    ]
    if not failures:
        return None
    for item in group[0].ContentSequence:
        if item.ValueType == "TEXT" and item.name == codes.DCM.Comment:
            return str(item.value)
    return "no value"
