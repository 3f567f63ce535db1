"""DICOM Secondary Capture out: a picture of a source image with abdus' calipers burned in.

For PACS viewers that cannot show an SR (``abdus.io.sr``): one RGB Secondary Capture Image
(SOP class 1.2.840.10008.5.1.4.1.1.7, PS3.3 A.8.1) per analysed image, in the source's patient
and study, in a new series. ``abdus.inference.outputs.write_overlay_capture`` draws the
picture (``draw_overlay``) and calls ``write_secondary_capture`` here.

What it holds (PS3.3 modules):

* Patient / General Study: copied from the source (missing type 2 elements left empty);
* General Series: a new Series Instance UID, Series Number 901, "abdus calipers", the source's
  Modality (OT without one) and Laterality (empty without one);
* SC Equipment: Conversion Type WSD (a workstation made it); Manufacturer "abdus",
  Software Versions the abdus version;
* General Image / General Reference: Image Type DERIVED\\SECONDARY, Burned In Annotation YES
  (the values and the calipers are pixels: a viewer must not show this to someone who should
  not see them), Derivation Description, and the source image (SOP class, instance and, for a
  multi-frame source, the frame) in Source Image Sequence;
* Image Pixel: RGB, 8 bits, samples interleaved (Planar Configuration 0), uncompressed
  (Explicit VR Little Endian).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from abdus import __version__
from abdus.io.atomic import atomic_path
from abdus.io.sr import read_source_header

SECONDARY_CAPTURE_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"
SERIES_NUMBER = 901
DERIVATION = "abdus view classification and calipers drawn over the source image"
# Copied from the source when present: Patient (C.7.1.1) and General Study (C.7.2.1) modules.
_PATIENT_AND_STUDY = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)


def _check_picture(picture: np.ndarray, source: Dataset) -> np.ndarray:
    picture = np.asarray(picture)
    if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
        raise ValueError(
            f"picture must be (H, W, 3) uint8 RGB, got {picture.shape} {picture.dtype}"
        )
    rows, cols = int(source.get("Rows", 0) or 0), int(source.get("Columns", 0) or 0)
    if rows and cols and picture.shape[:2] != (rows, cols):
        raise ValueError(f"picture is {picture.shape[:2]} px, the source frame ({rows}, {cols})")
    return np.ascontiguousarray(picture)


def _source_reference(source: Dataset, frame: int) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if int(source.get("NumberOfFrames", 1) or 1) > 1:
        item.ReferencedFrameNumber = int(frame) + 1  # DICOM frames count from 1
    return item


def build_secondary_capture(
    source: Dataset,
    picture: np.ndarray,
    *,
    frame: int = 0,
    series_instance_uid: str | None = None,
    instance_number: int = 1,
    description: str = DERIVATION,
) -> Dataset:
    """The Secondary Capture dataset (with file meta) of ``picture`` (H, W, 3) uint8 RGB, the
    ``frame`` (0-based) of ``source`` (a header dataset, see ``read_source_header``) drawn over.
    ValueError for a picture of another shape or type than the source frame's."""
    picture = _check_picture(picture, source)
    now = datetime.datetime.now()
    ds = Dataset()
    for keyword in _PATIENT_AND_STUDY:
        if keyword in source:
            setattr(ds, keyword, source.data_element(keyword).value)
    ds.SOPClassUID = SECONDARY_CAPTURE_SOP_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceCreationDate, ds.InstanceCreationTime = (
        now.strftime("%Y%m%d"),
        now.strftime("%H%M%S"),
    )
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.Modality = str(source.get("Modality", "") or "OT")
    ds.SeriesInstanceUID = series_instance_uid or generate_uid()
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = "abdus calipers"
    ds.Laterality = str(source.get("Laterality", "") or "")  # type 2C: empty when not known
    ds.InstanceNumber = instance_number
    ds.ConversionType = "WSD"
    ds.Manufacturer = "abdus"
    ds.SoftwareVersions = __version__
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "YES"
    ds.DerivationDescription = description[:1024]
    ds.SourceImageSequence = [_source_reference(source, frame)]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = int(picture.shape[0]), int(picture.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression = "00"
    ds.PixelData = picture.tobytes()  # pydicom pads an odd length to even when writing
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return ds


def write_secondary_capture(
    path: str | Path,
    source_path: str | Path,
    picture: np.ndarray,
    *,
    frame: int = 0,
    description: str = DERIVATION,
) -> Path:
    """Write the Secondary Capture of ``picture`` (H, W, 3) uint8 RGB over ``frame`` (0-based)
    of the DICOM file ``source_path`` atomically; returns ``path``. AbdusInputError when the
    source cannot be referenced (see ``read_source_header``)."""
    source = read_source_header(source_path)
    ds = build_secondary_capture(source, picture, frame=frame, description=description)
    path = Path(path)
    with atomic_path(path) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    return path
