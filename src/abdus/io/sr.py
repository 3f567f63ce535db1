"""DICOM Comprehensive SR out (and back in): abdus measurements as a TID 1500 Measurement Report.

One SR document per analysed image (one frame, one tissue region) of a DICOM input, written with
highdicom (``hd.sr.ComprehensiveSR`` holding a ``hd.sr.MeasurementReport``, PS3.16 TID 1500):

* one *Planar ROI measurement group* (TID 1410) per caliper pair (measurement code such as
  ``KL_LA``) that has a value in mm:
  - tracking identifier: the measurement code (text) and a fresh UID;
  - referenced region: the caliper as SCOORD ``POLYLINE`` of its two landmarks, referencing the
    source image (SOP Class / Instance UID, and the frame number for multi-frame images);
  - finding type: the organ; finding site: the organ with laterality for kidneys;
  - geometric purpose of the region: long axis or short axis (LA / SA of the code);
  - one measurement, concept "Length", value in mm (UCUM ``mm``), algorithm "abdus" + version;
  - the view as a qualitative evaluation "Image View" = the abdus view (private scheme 99ABDUS).
* an image without any measurement still gets one *Measurements and qualitative evaluations*
  group (TID 1501) holding the view and the source image reference.

Codes (SNOMED CT "SCT", DICOM "DCM"; the names are pydicom's ``codes`` dictionary):

================  =========================  ============================================
concept            code                       used for
================  =========================  ============================================
Kidney             SCT 64033007              finding type / site of KL_*, KT_*
Liver              SCT 10200004              LL_LA
Spleen             SCT 78961009              SL_*, ST_*
Right / Left       SCT 24028007 / 7771000    laterality of the kidney views
Length             SCT 410668003             the measurement concept of every caliper
Long / Short axis  SCT 103339001 / 103340004 geometric purpose of the caliper line
Image View         DCM 111031                the view (qualitative evaluation)
US of abdomen      SCT 45036003              procedure reported
abdus views        99ABDUS <view name>       value of Image View (no standard code exists)
================  =========================  ============================================

Coordinates: abdus source pixels put pixel *centres* at integers; DICOM 2-D SCOORD puts the top
left corner of the top left pixel at (0, 0) (PS3.3 C.18.6.1.2), so SCOORD = source px + 0.5.
``read_sr_report`` (used by ``abdus info``) undoes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from abdus import __version__
from abdus.errors import AbdusInputError
from abdus.io.atomic import atomic_path
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
_VIEW_TRACKING = "view"
# SCOORD (PS3.3 C.18.6.1.2) minus abdus source px (pixel centres at integers).
_SCOORD_OFFSET = 0.5


@dataclass(frozen=True)
class CaliperMeasurement:
    """One caliper: measurement ``code`` (taxonomy), ``value_mm``, landmarks ``a``, ``b`` as
    ``(x, y)`` source px of the full frame."""

    code: str
    value_mm: float
    a: tuple[float, float]
    b: tuple[float, float]


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


def _algorithm() -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name="abdus", version=__version__)


def _measurement_group(
    caliper: CaliperMeasurement, view: str, source: pydicom.Dataset, frame_numbers: list[int] | None
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    measurement = MEASUREMENT_BY_CODE[caliper.code]
    organ = ORGAN_OF_TASK[measurement.task]
    points = np.array([caliper.a, caliper.b], dtype=np.float64) + _SCOORD_OFFSET  # (2, 2)
    if not np.isfinite(points).all() or not np.isfinite(caliper.value_mm):
        raise ValueError(f"{caliper.code}: landmarks and value must be finite")
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=points,
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=source.SOPClassUID,
            referenced_sop_instance_uid=source.SOPInstanceUID,
            referenced_frame_numbers=frame_numbers,
        ),
    )
    site = hd.sr.FindingSite(anatomic_location=organ, laterality=_laterality(view))
    axis = codes.SCT.ShortAxis if caliper.code.endswith("_SA") else codes.SCT.LongAxis
    length = hd.sr.Measurement(
        name=codes.SCT.Length,
        value=float(caliper.value_mm),
        unit=codes.UCUM.Millimeter,
        algorithm_id=_algorithm(),
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=caliper.code),
        referenced_region=region,
        finding_type=organ,
        finding_sites=[site],
        geometric_purpose=axis,
        algorithm_id=_algorithm(),
        measurements=[length],
        qualitative_evaluations=[_view_evaluation(view)],
    )


def _view_group(
    view: str, source: pydicom.Dataset, frame_numbers: list[int] | None
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    image = hd.sr.SourceImageForMeasurementGroup(
        referenced_sop_class_uid=source.SOPClassUID,
        referenced_sop_instance_uid=source.SOPInstanceUID,
        referenced_frame_numbers=frame_numbers,
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=_VIEW_TRACKING),
        algorithm_id=_algorithm(),
        qualitative_evaluations=[_view_evaluation(view)],
        source_images=[image],
    )


def read_source_header(path: str | Path) -> pydicom.Dataset:
    """The source image's header (no pixels); AbdusInputError when it is not a DICOM image."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:  # pydicom raises many types on a damaged file
        raise AbdusInputError(f"cannot read DICOM header for the SR: {err}", path) from None
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"):
        if not str(ds.get(keyword, "")).strip():
            raise AbdusInputError(f"no {keyword}: an SR cannot reference this image", path)
    return ds


def build_sr(
    source: pydicom.Dataset,
    calipers: Sequence[CaliperMeasurement],
    *,
    view: str,
    frame: int = 0,
    model_id: str = "",
    series_instance_uid: str | None = None,
    instance_number: int = 1,
) -> hd.sr.ComprehensiveSR:
    """The SR dataset for one image (``frame`` 0-based) of ``source`` (a header dataset).

    Measurements without a finite value must be left out by the caller (an SR carries numbers,
    not the absence of one). The frame number is referenced only for multi-frame sources.
    """
    view_by_name(view)
    multi_frame = int(source.get("NumberOfFrames", 1) or 1) > 1
    frame_numbers = [int(frame) + 1] if multi_frame else None
    groups: list[Any] = [_measurement_group(c, view, source, frame_numbers) for c in calipers]
    if not groups:
        groups = [_view_group(view, source, frame_numbers)]
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(),
            name="abdus",
            manufacturer_name="abdus",
            model_name=(model_id or "abdus")[:64],
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=US_OF_ABDOMEN,
        imaging_measurements=groups,
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=report,
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=900,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer="abdus",
        series_description="abdus measurements",
        is_complete=True,
    )
    scheme = pydicom.Dataset()  # PS3.3 C.12.1.1.2.1: identify the private coding scheme
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = "abdus standard abdominal ultrasound views"
    scheme.CodingSchemeResponsibleOrganization = "abdus"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def write_sr(
    path: str | Path,
    source_path: str | Path,
    calipers: Sequence[CaliperMeasurement],
    *,
    view: str,
    frame: int = 0,
    model_id: str = "",
) -> Path:
    """Write the SR of one image of the DICOM file ``source_path`` atomically; returns ``path``."""
    sr = build_sr(
        read_source_header(source_path), calipers, view=view, frame=frame, model_id=model_id
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        sr.save_as(tmp, enforce_file_format=True)
    return path


# ------------------------------------------------------------------------------ reading back
@dataclass(frozen=True)
class SrReport:
    """What an abdus SR holds, as ``write_sr`` was given it.

    ``calipers``: the measurements in mm, landmarks ``a`` / ``b`` in *source px* of the
    referenced frame (pixel centres at integers; the SR's SCOORD minus 0.5).
    ``source_frame``: the 0-based frame of a multi-frame source, None for a single frame.
    """

    view: str | None
    calipers: tuple[CaliperMeasurement, ...]
    source_sop_class_uid: str | None
    source_sop_instance_uid: str | None
    source_frame: int | None
    model_id: str | None  # the observer device's model name (the model that measured)


def is_sr_document(ds: pydicom.Dataset) -> bool:
    """True for a DICOM Structured Report (a document, not an image)."""
    return str(ds.get("Modality", "")).strip() == "SR" or "ContentSequence" in ds


def _abdus_view(group: Any) -> str | None:
    for evaluation in group.get_qualitative_evaluations(name=codes.DCM.ImageView):
        if evaluation.value.scheme_designator == PRIVATE_SCHEME:
            return str(evaluation.value.value)
    return None


def _caliper(
    group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations,
) -> CaliperMeasurement | None:
    """The caliper of one TID 1410 group (tracking identifier, Length in mm, its two points),
    None for a group without a Length, a region or an identifier (not an abdus caliper)."""
    lengths = group.get_measurements(name=codes.SCT.Length)
    if not lengths or group.roi is None or not group.tracking_identifier:
        return None
    unit = lengths[0].unit.value
    if unit != "mm":
        raise ValueError(f"measurement unit {unit!r}, expected mm")
    points = np.asarray(group.roi.value, dtype=np.float64).reshape(-1, 2) - _SCOORD_OFFSET
    if points.shape != (2, 2):
        raise ValueError(f"caliper with {len(points)} points, expected 2")
    (ax, ay), (bx, by) = points.tolist()
    return CaliperMeasurement(
        str(group.tracking_identifier), float(lengths[0].value), (ax, ay), (bx, by)
    )


def _source_image(report: hd.sr.MeasurementReport) -> Any:
    """The source image reference (an IMAGE content item) of the first group that has one."""
    for group in report.get_planar_roi_measurement_groups():
        if group.roi is not None and "ContentSequence" in group.roi:
            return group.roi.ContentSequence[0]
    for group in report.get_image_measurement_groups():
        if group.source_images:
            return group.source_images[0]
    return None


def _model_id(report: hd.sr.MeasurementReport) -> str | None:
    for context in report.get_observer_contexts():
        attributes = context.observer_identifying_attributes
        if isinstance(attributes, hd.sr.DeviceObserverIdentifyingAttributes):
            return attributes.model_name
    return None


def sr_report_from_dataset(ds: pydicom.Dataset, path: str | Path | None = None) -> SrReport:
    """Parse an abdus Comprehensive SR (TID 1500) with highdicom; AbdusInputError otherwise."""
    try:
        document = hd.sr.ComprehensiveSR.from_dataset(ds, copy=True)
        report = document.content
        if not isinstance(report, hd.sr.MeasurementReport):
            raise ValueError("the document is not a TID 1500 measurement report")
        planar = report.get_planar_roi_measurement_groups()
        groups = [*planar, *report.get_image_measurement_groups()]
        calipers = tuple(c for c in map(_caliper, planar) if c is not None)
        view = next((v for v in map(_abdus_view, groups) if v is not None), None)
        image = _source_image(report)
        frames = None if image is None else image.referenced_frame_numbers
        model_id = _model_id(report)
    except Exception as err:  # highdicom raises many types on a foreign or damaged document
        raise AbdusInputError(f"not a readable abdus SR measurement report: {err}", path) from None
    return SrReport(
        view=view,
        calipers=calipers,
        source_sop_class_uid=None if image is None else str(image.referenced_sop_class_uid),
        source_sop_instance_uid=None if image is None else str(image.referenced_sop_instance_uid),
        source_frame=int(frames[0]) - 1 if frames else None,
        model_id=model_id,
    )


def read_sr_report(path: str | Path) -> SrReport:
    """Read an abdus SR file (see ``SrReport``); AbdusInputError for anything else."""
    try:
        ds = pydicom.dcmread(path)
    except Exception as err:  # pydicom raises many types on a damaged or foreign file
        raise AbdusInputError(f"not a readable DICOM file: {err}", path) from None
    return sr_report_from_dataset(ds, path)


__all__ = [
    "ORGAN_OF_TASK",
    "PRIVATE_SCHEME",
    "CaliperMeasurement",
    "SrReport",
    "build_sr",
    "is_sr_document",
    "read_source_header",
    "read_sr_report",
    "sr_report_from_dataset",
    "write_sr",
]
