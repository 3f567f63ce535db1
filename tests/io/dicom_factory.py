"""Builders of realistic ultrasound DICOM test files (reusable by every test folder).

Everything a test reads, it makes here first: no file is downloaded or checked in.

Use from a test file (``--import-mode=importlib`` puts no test folder on ``sys.path``)::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
    import dicom_factory

Main entry points
-----------------
``make_us_dicom(path, *, pixels, rows, cols, frames, photometric, transfer_syntax, bits_stored,
regions, pixel_spacing, palette, preamble) -> Path``
    One Ultrasound Image (``...6.1``) or Ultrasound Multi-frame Image (``...3.1``) file.
``RegionSpec``
    One ``SequenceOfUltrasoundRegions`` item; ``box`` is DICOM's *inclusive* (x0, y0, x1, y1).
``dual_view_regions()`` / ``DUAL_VIEW_SHAPE``
    A dual-view screen: two tissue regions of different spacing (one with a negative
    PhysicalDeltaY), a PW Doppler strip and a colour bar.
``speckle_pattern(rows, cols, frames, colour)``
    Deterministic pixels with structure (gradient + blobs + noise), uint8.
``make_secondary_capture(path, *, pixels, rows, cols, seed) -> Path``
    Not ultrasound: an RGB screenshot stored as Secondary Capture (``...7``), modality OT.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"

# PS3.3 C.8.5.5.1: RegionSpatialFormat, RegionDataType and PhysicalUnits codes used here.
SPATIAL_NONE, SPATIAL_2D, SPATIAL_M_MODE, SPATIAL_SPECTRAL = 0, 1, 2, 3
DATA_TISSUE, DATA_COLOR_FLOW, DATA_PW_DOPPLER, DATA_CW_DOPPLER, DATA_COLOR_BAR = 1, 2, 3, 4, 0x0E
UNIT_NONE, UNIT_CM, UNIT_SECONDS, UNIT_CM_PER_S = 0, 3, 4, 7

# Dual-view screen (rows, cols) and its regions, see dual_view_regions().
DUAL_VIEW_SHAPE = (128, 192)


@dataclass(frozen=True)
class RegionSpec:
    """One ultrasound region as written in the file.

    ``box``: (RegionLocationMinX0, MinY0, MaxX1, MaxY1), DICOM-inclusive source pixels.
    ``delta``: (PhysicalDeltaX, PhysicalDeltaY) in ``units`` (3 = cm, so 0.02 is 0.2 mm/px).
    ``units``: (PhysicalUnitsXDirection, PhysicalUnitsYDirection).
    """

    box: tuple[int, int, int, int]
    delta: tuple[float, float] = (0.02, 0.02)
    units: tuple[int, int] = (UNIT_CM, UNIT_CM)
    spatial_format: int = SPATIAL_2D
    data_type: int = DATA_TISSUE
    flags: int = 0

    def to_dataset(self) -> Dataset:
        """The ``SequenceOfUltrasoundRegions`` item (PS3.3 C.8.5.5)."""
        item = Dataset()
        item.RegionSpatialFormat = self.spatial_format
        item.RegionDataType = self.data_type
        item.RegionFlags = self.flags
        x0, y0, x1, y1 = self.box
        item.RegionLocationMinX0 = x0
        item.RegionLocationMinY0 = y0
        item.RegionLocationMaxX1 = x1
        item.RegionLocationMaxY1 = y1
        item.PhysicalUnitsXDirection = self.units[0]
        item.PhysicalUnitsYDirection = self.units[1]
        item.PhysicalDeltaX = float(self.delta[0])
        item.PhysicalDeltaY = float(self.delta[1])
        # Reference pixel: transducer face centre of the region (optional in the IOD).
        item.ReferencePixelX0 = (x0 + x1) // 2
        item.ReferencePixelY0 = y0
        return item


def dual_view_regions() -> list[RegionSpec]:
    """Regions of a (128, 192) dual-view screen (see ``DUAL_VIEW_SHAPE``).

    0: left tissue view, x 0..87, y 0..89, 0.02 cm/px (0.2 mm) in both axes — the larger one.
    1: right tissue view, x 88..159, y 0..89, 0.03 cm/px (0.3 mm), PhysicalDeltaY negative.
    2: PW Doppler strip, x 0..191, y 96..127, seconds by cm/s (no length unit).
    3: colour bar, x 176..183, y 8..71, no physical units.
    """
    return [
        RegionSpec(box=(0, 0, 87, 89), delta=(0.02, 0.02)),
        RegionSpec(box=(88, 0, 159, 89), delta=(0.03, -0.03)),
        RegionSpec(
            box=(0, 96, 191, 127),
            delta=(0.01, 2.5),
            units=(UNIT_SECONDS, UNIT_CM_PER_S),
            spatial_format=SPATIAL_SPECTRAL,
            data_type=DATA_PW_DOPPLER,
            flags=0b100,
        ),
        RegionSpec(
            box=(176, 8, 183, 71),
            delta=(0.0, 0.0),
            units=(UNIT_NONE, UNIT_NONE),
            spatial_format=SPATIAL_NONE,
            data_type=DATA_COLOR_BAR,
        ),
    ]


def speckle_pattern(
    rows: int, cols: int, frames: int = 1, *, colour: bool = False, seed: int = 0
) -> np.ndarray:
    """Deterministic uint8 pixels, (F, H, W) or (F, H, W, 3) with ``colour``.

    A vertical gradient with bright blobs and speckle-like noise, different per frame, so
    lossy codecs have something to keep and frame mix-ups show.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    base = 40.0 + 120.0 * yy / max(rows - 1, 1)
    out = []
    for f in range(frames):
        cx, cy = (0.3 + 0.1 * f) * cols, 0.5 * rows
        blob = 90.0 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (0.02 * rows * cols + 1.0))
        gray = base + blob + rng.normal(0.0, 6.0, size=(rows, cols))
        if colour:
            tint = np.stack([gray, 0.8 * gray + 20.0 * f, 0.6 * gray + 40.0], axis=-1)
            out.append(tint)
        else:
            out.append(gray)
    return np.clip(np.rint(np.stack(out)), 0, 255).astype(np.uint8)


def _base_dataset(sop_class: str, rows: int, cols: int) -> Dataset:
    """Patient / study / series / equipment / general image / SOP common modules."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Phantom^Abdus"
    ds.PatientID = "ABDUS-TEST-001"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20180916"
    ds.StudyTime = "101500"
    ds.ContentDate = "20180916"
    ds.ContentTime = "101500"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.Modality = "US"
    ds.BodyPartExamined = "ABDOMEN"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.Manufacturer = "abdus test factory"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelRepresentation = 0
    return ds


def _as_frames(pixels: np.ndarray, colour: bool) -> np.ndarray:
    """Pixels as (F, H, W) or (F, H, W, 3)."""
    arr = np.asarray(pixels)
    single_ndim = 3 if colour else 2
    return arr[None] if arr.ndim == single_ndim else arr


def _set_pixel_module(ds: Dataset, photometric: str, bits_stored: int) -> None:
    colour = photometric in ("RGB", "YBR_FULL", "YBR_FULL_422")
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    if colour:
        ds.PlanarConfiguration = 0


def default_palette() -> np.ndarray:
    """(256, 3) uint16 'hot' LUT: black -> red -> yellow -> white, 16-bit entries."""
    ramp = np.linspace(0.0, 3.0, 256)
    channels = np.clip(np.stack([ramp, ramp - 1.0, ramp - 2.0], axis=1), 0.0, 1.0)
    return np.rint(channels * 65535).astype(np.uint16)


def _set_palette(ds: Dataset, palette: np.ndarray) -> None:
    """Palette LUTs with 16-bit entries (PS3.3 C.7.6.3.1.5), ``palette`` (N, 3) uint16."""
    lut = np.asarray(palette, dtype=np.uint16)
    for channel, name in enumerate(("Red", "Green", "Blue")):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [len(lut), 0, 16])
        setattr(ds, f"{name}PaletteColorLookupTableData", lut[:, channel].astype("<u2").tobytes())


def _encode_jpeg_baseline(frames: np.ndarray, quality: int) -> list[bytes]:
    """JPEG Baseline frames with Pillow; colour frames become YCbCr 4:2:2 (YBR_FULL_422)."""
    encoded = []
    for frame in frames:
        buffer = io.BytesIO()
        image = Image.fromarray(frame, "RGB" if frame.ndim == 3 else "L")
        image.save(buffer, "JPEG", quality=quality, subsampling="4:2:2")
        encoded.append(buffer.getvalue())
    return encoded


def _store_pixels(ds: Dataset, frames: np.ndarray, transfer_syntax: str, jpeg_quality: int) -> None:
    """Put ``frames`` (already in the stored photometric) into ``ds`` with the transfer syntax."""
    if transfer_syntax == JPEGBaseline8Bit:
        ds.PixelData = encapsulate(_encode_jpeg_baseline(frames, jpeg_quality))
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        return
    arr = frames if len(frames) > 1 else frames[0]
    native = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    ds["PixelData"].VR = "OB" if ds.BitsAllocated == 8 else "OW"
    ds.file_meta.TransferSyntaxUID = transfer_syntax if transfer_syntax in native else native[0]
    if transfer_syntax in (RLELossless, JPEG2000Lossless):
        ds.compress(transfer_syntax, arr)
    elif transfer_syntax == JPEG2000:
        ds.compress(JPEG2000, arr, j2k_cr=[10])
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_15444_1"
    elif transfer_syntax not in native:
        raise ValueError(f"factory cannot write transfer syntax {transfer_syntax}")


def make_us_dicom(
    path: str | Path,
    *,
    pixels: np.ndarray | None = None,
    rows: int = 64,
    cols: int = 80,
    frames: int = 1,
    photometric: str = "MONOCHROME2",
    transfer_syntax: str = ExplicitVRLittleEndian,
    bits_stored: int = 8,
    regions: Sequence[RegionSpec] | None = None,
    pixel_spacing: tuple[float, float] | None = None,
    palette: np.ndarray | None = None,
    preamble: bool = True,
    jpeg_quality: int = 95,
    seed: int = 0,
) -> Path:
    """Write an ultrasound DICOM file and return its path.

    ``pixels``: stored values, (H, W) / (F, H, W) for grey or palette indices, (H, W, 3) /
    (F, H, W, 3) **RGB** for colour photometrics (converted here to YBR_FULL when asked;
    YBR_FULL_422 needs JPEG Baseline, which subsamples). Default: ``speckle_pattern``.
    ``palette``: (N, 3) uint16 LUT for PALETTE COLOR (16-bit entries; default
    ``default_palette()``).
    ``regions``: written as ``SequenceOfUltrasoundRegions``; ``pixel_spacing`` (row, col) mm
    as ``PixelSpacing``. ``preamble=False`` writes a bare dataset (no preamble, no file meta).
    """
    colour = photometric in ("RGB", "YBR_FULL", "YBR_FULL_422")
    if photometric == "YBR_FULL_422" and transfer_syntax != JPEGBaseline8Bit:
        raise ValueError("the factory writes YBR_FULL_422 only with JPEG Baseline")
    if not preamble and transfer_syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        raise ValueError("a bare dataset (preamble=False) must be uncompressed")
    if pixels is None:
        pixels = speckle_pattern(rows, cols, frames, colour=colour, seed=seed)
    stack = _as_frames(pixels, colour)
    frames, rows, cols = stack.shape[0], stack.shape[1], stack.shape[2]
    if photometric == "YBR_FULL":
        stack = convert_color_space(stack, "RGB", "YBR_FULL")
    if bits_stored > 8:
        stack = stack.astype(np.uint16)

    sop_class = US_MULTIFRAME_STORAGE if frames > 1 else US_IMAGE_STORAGE
    ds = _base_dataset(sop_class, rows, cols)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    _set_pixel_module(ds, photometric, bits_stored)
    if photometric == "PALETTE COLOR":
        _set_palette(ds, default_palette() if palette is None else palette)
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.FrameTime = 33.3
        ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    if regions:
        ds.SequenceOfUltrasoundRegions = [spec.to_dataset() for spec in regions]
    if pixel_spacing is not None:
        ds.PixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]
    ds.LossyImageCompression = "00"
    _store_pixels(ds, stack, transfer_syntax, jpeg_quality)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:  # PS3.10 7.1 says files have both; old exports and some PACS dumps do not
        ds.file_meta = FileMetaDataset()
        ds.save_as(path, implicit_vr=transfer_syntax == ImplicitVRLittleEndian, little_endian=True)
    return path


def make_secondary_capture(
    path: str | Path,
    *,
    pixels: np.ndarray | None = None,
    rows: int = 64,
    cols: int = 80,
    seed: int = 0,
) -> Path:
    """Write an RGB Secondary Capture (modality OT): a screen grab, not an ultrasound image.

    ``pixels``: (H, W, 3) uint8 RGB; default ``speckle_pattern(..., colour=True)``. No spacing.
    """
    if pixels is None:
        pixels = speckle_pattern(rows, cols, 1, colour=True, seed=seed)[0]
    rows, cols = pixels.shape[:2]
    ds = _base_dataset(SECONDARY_CAPTURE_STORAGE, rows, cols)
    ds.Modality = "OT"
    ds.ConversionType = "WSD"  # workstation (PS3.3 C.8.6.1)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    _set_pixel_module(ds, "RGB", 8)
    _store_pixels(ds, np.asarray(pixels, dtype=np.uint8)[None], ExplicitVRLittleEndian, 95)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
