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
* one *Measurements and qualitative evaluations* group (TID 1501) per measurement of the view
  that has no value (``withheld``: no spacing, or a caliper end off the frame or off the
  ultrasound region): tracking identifier, organ and site as above, the source image, the view,
  "Length" = "Measurement failure" and the reason as a TEXT "Comment"; no coordinate, no number;
* an image without any of these still gets one TID 1501 group holding the view and the source
  image reference.

IHE AI Results (AIR): every group names the algorithm (TID 4019: "abdus", ``abdus.__version__``,
parameter ``model_id=<model>``); the observer device's model name and the Manufacturer's Model
Name are the model id, Software Versions the abdus version; VerificationFlag is UNVERIFIED (no
person has checked it); CurrentRequestedProcedureEvidenceSequence lists the source (study,
series, SOP class and instance) and the Performed Procedure Code is "US of abdomen".

Codes (SNOMED CT "SCT", DICOM "DCM"; the names are pydicom's ``codes`` dictionary):

===================  =========================  =============================================
concept              code                       used for
===================  =========================  =============================================
Kidney               SCT 64033007               finding type / site of KL_*, KT_*
Liver                SCT 10200004               LL_LA
Spleen               SCT 78961009               SL_*, ST_*
Right / Left         SCT 24028007 / 7771000     laterality of the kidney views
Length               SCT 410668003              the measurement concept of every caliper
Long / Short axis    SCT 103339001 / 103340004  geometric purpose of the caliper line
Image View           DCM 111031                 the view (qualitative evaluation)
US of abdomen        SCT 45036003               procedure reported and performed
Measurement failure  DCM 114006                 value of "Length" in a withheld group
Comment              DCM 121106                 why a measurement is withheld (TEXT)
abdus views          99ABDUS <view name>        value of Image View (no standard code exists)
===================  =========================  =============================================

Coordinates: abdus source pixels put pixel *centres* at integers; DICOM 2-D SCOORD puts the top
left corner of the top left pixel at (0, 0) (PS3.3 C.18.6.1.2), so SCOORD = source px + 0.5.
``read_sr_report`` (used by ``abdus info``) undoes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
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
from abdus.io.sr_groups import (
    ORGAN_OF_TASK,
    PRIVATE_SCHEME,
    SCOORD_OFFSET,
    US_OF_ABDOMEN,
    CaliperMeasurement,
    GroupContext,
    abdus_view,
    caliper_group,
    view_group,
    withheld_group,
    withheld_reason,
)
from abdus.taxonomy import MEASUREMENT_BY_CODE, view_by_name

# Type 2 attributes of the Patient and General Study modules that highdicom copies from the
# source; a scanner file may lack one, and the SR then carries it empty (PS3.3 C.7.1.1, C.7.2.1).
_PATIENT_AND_STUDY = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def read_source_header(path: str | Path) -> pydicom.Dataset:
    """The source image's header (no pixels); AbdusInputError when it is not a DICOM image."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:  # pydicom raises many types on a damaged file
        raise AbdusInputError(f"cannot read DICOM header for the SR: {err}", path) from None
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not str(ds.get(keyword, "")).strip():
            raise AbdusInputError(f"no {keyword}: an SR cannot reference this image", path)
    for keyword in _PATIENT_AND_STUDY:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _off_image(caliper: CaliperMeasurement, source: pydicom.Dataset) -> str | None:
    """Why ``caliper`` cannot be drawn on ``source`` (an end off its Columns x Rows), or None.

    The predictor withholds such calipers already; this keeps any caller from writing an SR
    coordinate off the referenced image (PS3.3 C.18.6.1.2)."""
    rows, cols = int(source.get("Rows", 0) or 0), int(source.get("Columns", 0) or 0)
    points = np.array([caliper.a, caliper.b], dtype=np.float64) + SCOORD_OFFSET  # (2, 2)
    if not rows or not cols:
        return None  # a header without a size: nothing to check against
    inside = (points >= 0).all() and (points[:, 0] <= cols).all() and (points[:, 1] <= rows).all()
    return None if inside else f"caliper end outside the {cols} x {rows} px image"


def _groups(
    calipers: Sequence[CaliperMeasurement], withheld: Mapping[str, str], context: GroupContext
) -> list[Any]:
    """The measurement groups: one per caliper (withheld ones as TID 1501), else the view."""
    withheld = dict(withheld)
    groups: list[Any] = []
    for caliper in calipers:
        values = np.array([*caliper.a, *caliper.b, caliper.value_mm], dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"{caliper.code}: landmarks and value must be finite")
        problem = _off_image(caliper, context.source)
        if problem is not None:
            withheld[caliper.code] = problem
            continue
        groups.append(caliper_group(caliper, context))
    for code, reason in withheld.items():
        if code not in MEASUREMENT_BY_CODE:
            raise ValueError(f"withheld: unknown measurement code {code!r}")
        groups.append(withheld_group(code, reason, context))
    return groups or [view_group(context)]


def build_sr(
    source: pydicom.Dataset,
    calipers: Sequence[CaliperMeasurement],
    *,
    view: str,
    frame: int = 0,
    model_id: str = "",
    withheld: Mapping[str, str] | None = None,
    series_instance_uid: str | None = None,
    instance_number: int = 1,
    verification: Verification | None = None,
) -> hd.sr.ComprehensiveSR:
    """The SR dataset for one image (``frame`` 0-based) of ``source`` (a header dataset).

    ``calipers``: the measurements with a finite value; ``withheld``: measurement code -> why
    it has no value (recorded without coordinates or number). A caliper with an end off the
    image is recorded as withheld too. The frame number is referenced only for multi-frame
    sources. The document follows IHE AI Results: algorithm name, version and model id in every
    group, VerificationFlag UNVERIFIED (VERIFIED with ``verification``: a person checked it),
    the source in CurrentRequestedProcedureEvidenceSequence.
    """
    view_by_name(view)
    multi_frame = int(source.get("NumberOfFrames", 1) or 1) > 1
    frame_numbers = [int(frame) + 1] if multi_frame else None
    context = GroupContext(source, view, frame_numbers, model_id)
    groups = _groups(calipers, withheld or {}, context)
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
    # highdicom lists the referenced source in CurrentRequestedProcedureEvidenceSequence
    # (study, series, SOP class and instance) and sets VerificationFlag UNVERIFIED.
    sr = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=report,
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=900,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer="abdus",
        manufacturer_model_name=(model_id or "abdus")[:64],
        software_versions=__version__,
        series_description="abdus measurements",
        performed_procedure_codes=[US_OF_ABDOMEN],
        is_complete=True,
        is_verified=verification is not None,
        verifying_observer_name=None if verification is None else verification.observer_name,
        verifying_organization=None if verification is None else verification.organization,
    )
    if verification is not None:  # highdicom stamps "now"; record when the person checked it
        stamp = verification.time.strftime("%Y%m%d%H%M%S")
        sr.VerifyingObserverSequence[0].VerificationDateTime = stamp
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
    withheld: Mapping[str, str] | None = None,
    verification: Verification | None = None,
) -> Path:
    """Write the SR of one image of the DICOM file ``source_path`` atomically; returns ``path``
    (``withheld``: measurement code -> why it has no value; ``verification``: who checked it;
    see ``build_sr``)."""
    header = read_source_header(source_path)
    sr = build_sr(
        header,
        calipers,
        view=view,
        frame=frame,
        model_id=model_id,
        withheld=withheld,
        verification=verification,
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        sr.save_as(tmp, enforce_file_format=True)
    return path


# ------------------------------------------------------------------------------ reading back
@dataclass(frozen=True)
class Verification:
    """The person who checked the measurements (``abdus review``): the SR is then VERIFIED,
    naming the observer (a person name, ``Last^First``), the organisation and the time
    (PS3.3 C.17.2, Verifying Observer Sequence)."""

    observer_name: str
    organization: str
    time: datetime


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
    withheld: dict[str, str] = field(default_factory=dict)  # code -> why it has no value


def is_sr_document(ds: pydicom.Dataset) -> bool:
    """True for a DICOM Structured Report (a document, not an image)."""
    return str(ds.get("Modality", "")).strip() == "SR" or "ContentSequence" in ds


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
    points = np.asarray(group.roi.value, dtype=np.float64).reshape(-1, 2) - SCOORD_OFFSET
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
        view = next((v for v in map(abdus_view, groups) if v is not None), None)
        withheld = {
            str(group.tracking_identifier): reason
            for group in report.get_image_measurement_groups()
            if (reason := withheld_reason(group)) is not None
        }
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
        withheld=withheld,
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
    "Verification",
    "build_sr",
    "is_sr_document",
    "read_source_header",
    "read_sr_report",
    "sr_report_from_dataset",
    "write_sr",
]
