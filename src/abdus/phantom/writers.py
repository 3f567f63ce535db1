"""Files as a scanner writes them: Ultrasound Image Storage DICOM, or exported PNG screenshots.

DICOM (PS3.3 A.6, Ultrasound Image IOD; SOP class 1.2.840.10008.5.1.4.1.1.6.1)
    Patient, General Study, General Series, General Equipment, General Image, Image Pixel,
    US Region Calibration, US Image and SOP Common modules. The screen is stored whole, with
    one ``SequenceOfUltrasoundRegions`` item for the 2-D tissue region (RegionSpatialFormat 1,
    RegionDataType 1; DICOM's region max is *inclusive*, our boxes are exclusive), spacing in
    cm (PhysicalUnits 3) and the probe's virtual apex as the reference pixel (physical (0, 0),
    relative to the region's top-left corner as PS3.3 C.8.5.5.1.4 defines). Three encodings,
    as scanners and PACS exports write them:

    * ``rgb``: uncompressed RGB (Explicit VR Little Endian);
    * ``monochrome2``: uncompressed gray (luma of the screen, ITU-R BT.601);
    * ``jpeg_baseline``: JPEG Baseline (1.2.840.10008.1.2.4.50), YBR_FULL_422, at the scan's
      ``acquisition["jpeg_quality"]``, flagged LossyImageCompression "01" with ratio and method.

    UIDs come from ``pydicom.uid.generate_uid(entropy_srcs=...)`` over the cohort seed and the
    image identity, and dates are fixed, so the same seed gives the same bytes.

PNG
    The screen after a JPEG round trip at the chosen quality (exported screenshots are usually
    JPEG-compressed somewhere on the way); the spacing goes into the manifest.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from abdus import __version__
from abdus.io.atomic import atomic_path

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
DICOM_ENCODINGS = ("rgb", "monochrome2", "jpeg_baseline")
DEFAULT_JPEG_QUALITY = 90
# Fixed acquisition date: bytes must not depend on the day the cohort was made.
STUDY_DATE = "20180916"  # MICCAI 2018, Granada
_UNIT_CM = 3  # PS3.3 C.8.5.5.1.15 PhysicalUnitsXDirection: 3 = cm
_BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class ScreenLike(Protocol):
    """What the writers need from a rendered scan (``abdus.phantom.render.Scan`` fits)."""

    screen: np.ndarray
    spacing_mm: float
    region_box: tuple[int, int, int, int]
    acquisition: Mapping[str, Any]
    depth_origin: tuple[float, float]


@dataclass(frozen=True)
class DicomIdentity:
    """Who and what a DICOM file belongs to. Build it with :func:`dicom_identity`."""

    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    study_date: str
    study_time: str
    content_time: str
    instance_number: int


def dicom_identity(seed: int, patient_id: str, image_index: int) -> DicomIdentity:
    """Deterministic identity of image ``image_index`` (0-based) of a patient of a cohort.

    One study and one series per patient; UIDs hash (seed, patient, image) so two cohorts of
    different seeds never share UIDs and the same seed always gives the same ones.
    """
    base = ["abdus-phantom", str(seed), patient_id]
    second = image_index * 7  # images a few seconds apart, within one study hour
    return DicomIdentity(
        patient_id=patient_id,
        patient_name=f"SYNTHETIC^{patient_id}",
        study_uid=str(generate_uid(entropy_srcs=[*base, "study"])),
        series_uid=str(generate_uid(entropy_srcs=[*base, "series"])),
        sop_instance_uid=str(generate_uid(entropy_srcs=[*base, "image", str(image_index)])),
        study_date=STUDY_DATE,
        study_time="090000",
        content_time=f"09{second // 60:02d}{second % 60:02d}",
        instance_number=image_index + 1,
    )


def jpeg_quality_of(scan: ScreenLike) -> int:
    """The scan's JPEG quality (1..95), DEFAULT_JPEG_QUALITY when the renderer set none."""
    return int(np.clip(int(scan.acquisition.get("jpeg_quality", DEFAULT_JPEG_QUALITY)), 1, 95))


def jpeg_bytes(screen: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG of an (H, W, 3) or (H, W) uint8 image; colour is YCbCr 4:2:2."""
    buffer = io.BytesIO()
    # subsampling=1 is 4:2:2 (what YBR_FULL_422 declares); no optimise/progressive: baseline.
    Image.fromarray(screen).save(buffer, format="JPEG", quality=quality, subsampling=1)
    return buffer.getvalue()


def jpeg_round_trip(screen: np.ndarray, quality: int) -> np.ndarray:
    """The screen (H, W, 3) uint8 after JPEG compression at ``quality`` and decoding."""
    with Image.open(io.BytesIO(jpeg_bytes(screen, quality))) as image:
        return np.asarray(image.convert("RGB"))


def luma(screen: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 luma (ITU-R BT.601)."""
    return np.clip(np.rint(screen.astype(np.float32) @ _BT601), 0, 255).astype(np.uint8)


def ultrasound_region(scan: ScreenLike) -> Dataset:
    """The ``SequenceOfUltrasoundRegions`` item of the scan's 2-D tissue region (PS3.3 C.8.5.5)."""
    x0, y0, x1, y1 = scan.region_box
    delta_cm = float(scan.spacing_mm) / 10.0
    apex_x, apex_y = scan.depth_origin
    item = Dataset()
    item.RegionSpatialFormat = 1  # 2-D
    item.RegionDataType = 1  # tissue
    item.RegionFlags = 0  # high priority, scaling allowed, not scrolling
    item.RegionLocationMinX0 = int(x0)
    item.RegionLocationMinY0 = int(y0)
    item.RegionLocationMaxX1 = int(x1) - 1  # DICOM max is inclusive
    item.RegionLocationMaxY1 = int(y1) - 1
    item.PhysicalUnitsXDirection = _UNIT_CM
    item.PhysicalUnitsYDirection = _UNIT_CM
    item.PhysicalDeltaX = delta_cm
    item.PhysicalDeltaY = delta_cm
    # Reference pixel = the virtual apex of the convex probe, relative to the region corner.
    item.ReferencePixelX0 = round(apex_x - x0)
    item.ReferencePixelY0 = round(apex_y - y0)
    item.ReferencePixelPhysicalValueX = 0.0
    item.ReferencePixelPhysicalValueY = 0.0
    frequency = scan.acquisition.get("frequency_mhz")
    if frequency is not None:
        item.TransducerFrequency = round(float(frequency) * 1000.0)  # kHz
    return item


def _patient_study_series(ds: Dataset, identity: DicomIdentity) -> None:
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = identity.study_uid
    ds.StudyDate = identity.study_date
    ds.StudyTime = identity.study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.StudyDescription = "US ABDOMEN (SYNTHETIC)"
    ds.Modality = "US"
    ds.SeriesInstanceUID = identity.series_uid
    ds.SeriesNumber = 1
    ds.SeriesDate = identity.study_date
    ds.SeriesTime = identity.study_time
    ds.BodyPartExamined = "ABDOMEN"
    ds.Manufacturer = "abdus"
    ds.ManufacturerModelName = "abdus phantom"
    ds.SoftwareVersions = __version__


def _image_modules(ds: Dataset, identity: DicomIdentity, scan: ScreenLike) -> None:
    ds.InstanceNumber = identity.instance_number
    ds.PatientOrientation = ""
    ds.ContentDate = identity.study_date
    ds.ContentTime = identity.content_time
    ds.AcquisitionDateTime = identity.study_date + identity.content_time
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]  # C.8.5.6.1.1: 0001 = 2-D
    ds.BurnedInAnnotation = "YES"
    ds.ImageComments = "synthetic image (abdus phantom)"
    ds.SequenceOfUltrasoundRegions = Sequence([ultrasound_region(scan)])
    depth = scan.acquisition.get("depth_mm")
    if depth is not None:
        ds.DepthOfScanField = round(float(depth))  # mm


def _set_pixels(ds: Dataset, scan: ScreenLike, encoding: str) -> str:
    """Image Pixel module; returns the transfer syntax UID."""
    screen = np.ascontiguousarray(scan.screen, dtype=np.uint8)
    ds.Rows, ds.Columns = int(screen.shape[0]), int(screen.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if encoding == "monochrome2":
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = luma(screen).tobytes()
        return ExplicitVRLittleEndian
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    if encoding == "rgb":
        ds.PhotometricInterpretation = "RGB"
        ds.PixelData = screen.tobytes()
        return ExplicitVRLittleEndian
    quality = jpeg_quality_of(scan)
    data = jpeg_bytes(screen, quality)
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PixelData = encapsulate([data])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = f"{screen.nbytes / len(data):.2f}"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    return JPEGBaseline8Bit


def build_dicom(scan: ScreenLike, identity: DicomIdentity, encoding: str = "rgb") -> FileDataset:
    """The Ultrasound Image Storage dataset of one scan (see the module docstring)."""
    if encoding not in DICOM_ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; valid: {', '.join(DICOM_ENCODINGS)}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = identity.sop_instance_uid
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = US_IMAGE_STORAGE
    ds.SOPInstanceUID = identity.sop_instance_uid
    ds.InstanceCreationDate = identity.study_date
    ds.InstanceCreationTime = identity.content_time
    _patient_study_series(ds, identity)
    _image_modules(ds, identity, scan)
    meta.TransferSyntaxUID = _set_pixels(ds, scan, encoding)
    return ds


def write_dicom(
    path: str | Path, scan: ScreenLike, identity: DicomIdentity, encoding: str = "rgb"
) -> None:
    """Write one scan as an Ultrasound Image Storage file at ``path`` (atomically)."""
    ds = build_dicom(scan, identity, encoding)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def write_png(path: str | Path, scan: ScreenLike) -> None:
    """Write the screen as a PNG screenshot with JPEG artefacts at the scan's quality."""
    pixels = jpeg_round_trip(
        np.ascontiguousarray(scan.screen, dtype=np.uint8), jpeg_quality_of(scan)
    )
    with atomic_path(path) as tmp:
        # zlib level 1: measured ~20 ms and ~200 kB per 0.55 Mpx screen, against ~55 ms and
        # ~180 kB at the default level 6 (Pillow 13, one core); the bytes stay deterministic.
        Image.fromarray(pixels).save(tmp, format="PNG", compress_level=1)
