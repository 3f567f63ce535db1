"""DICOM ultrasound reading: one grey float32 image per frame, with spacing in mm.

Pixels are decoded by pydicom (native, RLE, JPEG Baseline, JPEG 2000 and whatever else its
installed plugins decode), one frame at a time straight from the file, so a long clip is never
held whole. Grey levels: MONOCHROME2 as stored, MONOCHROME1 inverted, >8-bit data scaled by
BitsStored to [0, 255]; colour (RGB, YBR_FULL, YBR_FULL_422, JPEG 2000's YBR_ICT/RCT) is
decoded to RGB by pydicom then BT.601 luma; PALETTE COLOR through its LUT then luma.

Spacing comes from the ultrasound regions, then ``PixelSpacing``, then the caller, else none
(never a guess); ``abdus.io.us_regions`` parses the regions and resolves it (PS3.3 C.8.5.5).
A DICOM image that is not ultrasound (``ultrasound_warning``) is read, with a warning on it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from warnings import catch_warnings, simplefilter

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, get_decoder, iter_pixels
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from abdus.errors import AbdusInputError
from abdus.io.images import check_spacing_mm, check_spacing_source, luminance, saturation
from abdus.io.signatures import has_dicom_magic, looks_like_bare_dataset, read_head
from abdus.io.types import Region, UltrasoundImage
from abdus.io.us_regions import (
    RegionEntry,
    choose_tissue_region,
    parse_regions,
    pixel_spacing_of,
    resolve_spacing,
)

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
# Photometrics that pydicom hands back as RGB when decoding with as_rgb (its default).
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
PHOTOMETRICS = (*MONOCHROME, *COLOUR, "PALETTE COLOR")
# Larger values stay on disk until decoded: reading a header never loads a whole clip.
_DEFER_SIZE = "64 KB"
# PS3.4 B.5: the ultrasound image SOP classes, with the retired pre-1996 UIDs (...1.6 and
# ...1.3) that old scanners and archives still hold.
ULTRASOUND_SOP_CLASSES = (
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    "1.2.840.10008.5.1.4.1.1.6",
    "1.2.840.10008.5.1.4.1.1.3",
)


class DicomHeader:
    """Everything but the pixels of one DICOM file, validated.

    ``dataset`` holds the elements (pixel data deferred); ``rows`` / ``cols`` in source pixels.
    """

    def __init__(self, path: Path, dataset: Dataset, syntax: UID) -> None:
        self.path = path
        self.dataset = dataset
        self.syntax = syntax  # the transfer syntax
        ds = dataset
        self.rows = int(ds.get("Rows") or 0)
        self.cols = int(ds.get("Columns") or 0)
        self.frames = int(ds.get("NumberOfFrames") or 1)
        self.photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
        self.bits_allocated = int(ds.get("BitsAllocated") or 8)
        self.bits_stored = int(ds.get("BitsStored") or self.bits_allocated)
        self.signed = int(ds.get("PixelRepresentation") or 0) == 1
        self.warnings: list[str] = []
        self.region_entries: list[RegionEntry] = []
        self.pixel_spacing: tuple[float, float] | None = None  # PixelSpacing (row_mm, col_mm)

    @property
    def regions(self) -> tuple[Region, ...]:
        """All ultrasound regions of the file, in file order."""
        return tuple(entry.region for entry in self.region_entries)


def ultrasound_warning(dataset: Dataset) -> str | None:
    """One line saying that ``dataset`` is not an ultrasound image, or None when it is one.

    Ultrasound means Modality "US" and an Ultrasound (Multi-frame) Image Storage SOP class. Other
    images (say an RGB screenshot stored as Secondary Capture, modality OT) are still read, but
    the network and the spacing rules assume an ultrasound frame, so the user is told.
    """
    modality = str(dataset.get("Modality", "") or "").strip()
    sop_class = str(dataset.get("SOPClassUID", "") or "").strip()
    if modality == "US" and sop_class in ULTRASOUND_SOP_CLASSES:
        return None
    sop_name = UID(sop_class).name if sop_class else "(none)"
    if sop_class and sop_name != sop_class:
        sop_name += f" ({sop_class})"
    return (
        f"not an ultrasound image: modality {modality or '(none)'}, SOP class {sop_name}; "
        "abdus is made for ultrasound, so check its view and measurements"
    )


def _transfer_syntax_of(ds: Dataset, path: Path) -> UID:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if not uid:  # bare dataset: the encoding pydicom detected tells the syntax
        implicit, _little = ds.original_encoding
        return ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    uid = UID(str(uid).strip())
    if not uid.is_transfer_syntax:
        raise AbdusInputError(f"unsupported transfer syntax: unknown UID {uid}", path)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise AbdusInputError(f"unsupported transfer syntax {uid.name} ({uid})", path) from None
    if not decoder.is_available:
        raise AbdusInputError(
            f"no decoder installed for transfer syntax {uid.name} ({uid}); "
            "install pylibjpeg-libjpeg / pylibjpeg-openjpeg / pylibjpeg-rle",
            path,
        )
    return uid


def parse_dicom_file(path: str | Path) -> tuple[Dataset, list[str]]:
    """The dataset (pixel data deferred) and pydicom's warnings about it, as text.

    Any DICOM object (image or document); AbdusInputError when the file is not DICOM.
    """
    path = Path(path)
    head = read_head(path)
    preamble = has_dicom_magic(head)
    if not preamble and not looks_like_bare_dataset(head):
        raise AbdusInputError("not a DICOM file (no 'DICM' marker at byte 128)", path)
    try:
        with catch_warnings(record=True) as caught:
            simplefilter("always")
            ds = pydicom.dcmread(path, force=not preamble, defer_size=_DEFER_SIZE)
    except InvalidDicomError as err:
        raise AbdusInputError(f"not a valid DICOM file: {err}", path) from None
    except Exception as err:  # pydicom raises many types on damaged files
        raise AbdusInputError(f"cannot parse DICOM (truncated or corrupt?): {err}", path) from None
    if not preamble and "SOPClassUID" not in ds and "Rows" not in ds:
        raise AbdusInputError("not a DICOM file (no image elements found)", path)
    return ds, [f"pydicom: {warning.message}" for warning in caught]


def _validate_image(header: DicomHeader) -> None:
    path = header.path
    if "PixelData" not in header.dataset:
        raise AbdusInputError("no pixel data (missing, or the file is truncated)", path)
    if header.rows <= 0 or header.cols <= 0:
        raise AbdusInputError(
            f"image has zero size (Rows={header.rows}, Columns={header.cols})", path
        )
    if header.frames <= 0:
        raise AbdusInputError(f"NumberOfFrames is {header.frames}: no frames", path)
    if header.photometric not in PHOTOMETRICS:
        raise AbdusInputError(
            f"unsupported PhotometricInterpretation {header.photometric or '(none)'}; "
            f"readable: {', '.join(PHOTOMETRICS)}",
            path,
        )
    if not 1 <= header.bits_stored <= header.bits_allocated <= 16:
        raise AbdusInputError(
            f"unsupported bit depth (BitsStored={header.bits_stored}, "
            f"BitsAllocated={header.bits_allocated}); readable: up to 16 bits",
            path,
        )


def read_dicom_header(path: str | Path) -> DicomHeader:
    """Parse and validate a DICOM file's header and ultrasound regions (pixels not decoded)."""
    path = Path(path)
    return header_of_dataset(path, *parse_dicom_file(path))


def header_of_dataset(path: Path, ds: Dataset, notes: Sequence[str] = ()) -> DicomHeader:
    """Validate an image dataset parsed by ``parse_dicom_file`` (its ``notes`` are warnings)."""
    syntax = _transfer_syntax_of(ds, path)
    try:
        header = DicomHeader(path, ds, syntax)
    except (TypeError, ValueError) as err:
        raise AbdusInputError(f"malformed image pixel attributes: {err}", path) from None
    _validate_image(header)
    header.region_entries, header.warnings = parse_regions(ds, header.rows, header.cols, path)
    not_ultrasound = ultrasound_warning(ds)
    header.warnings[:0] = [*notes, *([not_ultrasound] if not_ultrasound else [])]
    header.pixel_spacing = pixel_spacing_of(ds, header.warnings)
    return header


def _scale_to_255(values: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Stored values -> float32 [0, 255] by the nominal range of BitsStored (PS3.3 C.7.6.3)."""
    out = values.astype(np.float32)
    if values.dtype == np.uint8 and bits_stored == 8:
        return out  # already 0..255
    if signed:
        out += float(2 ** (bits_stored - 1))
    out *= np.float32(255.0 / float(2**bits_stored - 1))
    return np.clip(out, 0.0, 255.0, out=out)


def frame_to_gray(frame: np.ndarray, header: DicomHeader) -> tuple[np.ndarray, np.ndarray | None]:
    """A decoded frame -> ((H, W) float32 grey in [0, 255], (H, W) saturation or None).

    ``frame`` is pydicom's output with ``as_rgb`` (colour already RGB): (H, W) or (H, W, 3).
    """
    photometric = header.photometric
    if photometric in MONOCHROME:
        gray = _scale_to_255(frame, header.bits_stored, header.signed)
        if photometric == "MONOCHROME1":  # minimum value is white (PS3.3 C.7.6.3.1.2)
            gray = np.subtract(np.float32(255.0), gray, out=gray)
        return gray, None
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, header.dataset)
        lut_bits = int(header.dataset.RedPaletteColorLookupTableDescriptor[2])
        rgb = _scale_to_255(rgb, 8 if lut_bits <= 8 else 16, signed=False)
    elif frame.dtype != np.uint8 or header.bits_stored != 8:
        rgb = _scale_to_255(frame, header.bits_stored, signed=False)
    else:
        rgb = frame  # 8-bit RGB: luminance and saturation take it as it is
    return luminance(rgb), saturation(rgb)


def _frame_indices(frames: Sequence[int] | None, header: DicomHeader) -> list[int]:
    if frames is None:
        return list(range(header.frames))
    indices = [int(index) for index in frames]
    bad = [index for index in indices if not 0 <= index < header.frames]
    if bad:
        raise AbdusInputError(
            f"frame {bad[0]} does not exist: the file has {header.frames} frame(s)", header.path
        )
    return indices


def _preferred_plugin(syntax: UID) -> str:
    """The decoding plugin to try first; '' lets pydicom try every installed plugin.

    Pillow decodes JPEG Baseline about 2x faster than pylibjpeg (measured on 2 CPU cores,
    one 600 x 800 YBR_FULL_422 frame: 20 ms vs 38 ms); the two differ by at most 3 grey
    levels, within JPEG's own loss.
    """
    if syntax == JPEGBaseline8Bit and "pillow" in get_decoder(syntax).available_plugins:
        return "pillow"
    return ""


def _check_shape(header: DicomHeader, index: int, frame: np.ndarray) -> None:
    if frame.shape[:2] != (header.rows, header.cols):
        raise AbdusInputError(
            f"frame {index} decodes to {frame.shape[:2]}, not Rows x Columns "
            f"{header.rows} x {header.cols}",
            header.path,
        )


def iter_frames(header: DicomHeader, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Decode the frames ``indices`` (in that order) straight from the file, one at a time.

    Only those frames' bytes are read. Yields ``(index, frame)``: pydicom's array, (H, W), or
    (H, W, 3) RGB for colour (pydicom's default ``as_rgb``), in stored units. A frame the
    preferred plugin cannot decode is retried with every installed plugin.
    """
    remaining, plugin = list(indices), _preferred_plugin(header.syntax)
    while remaining:
        pixels = iter_pixels(
            header.path,
            indices=list(remaining),
            transfer_syntax_uid=header.syntax,
            decoding_plugin=plugin,
        )
        for index in list(remaining):
            try:
                with catch_warnings():
                    simplefilter("ignore")  # damage is reported as an error below
                    frame = next(pixels)
            except Exception as err:  # decoders raise many types on damaged data
                if plugin:
                    pixels.close()  # closes the file
                    plugin = ""
                    break  # retry from this frame with every plugin
                raise AbdusInputError(
                    f"cannot decode frame {index} ({header.syntax.name}); truncated or "
                    f"corrupt pixel data? {err}",
                    header.path,
                ) from None
            _check_shape(header, index, frame)
            remaining.pop(0)
            yield index, frame


def _images_for_frame(
    header: DicomHeader,
    index: int,
    gray: np.ndarray,
    sat: np.ndarray | None,
    regions: Sequence[Region | None],
    spacing_mm: float | None,
    spacing_source: str,
    extra_warnings: Sequence[str],
) -> list[UltrasoundImage]:
    images = []
    for region in regions:
        spacing, source, warnings = resolve_spacing(
            region, header.pixel_spacing, spacing_mm, spacing_source
        )
        images.append(
            UltrasoundImage(
                pixels=gray,
                spacing_mm=spacing,
                spacing_source=source,
                source=str(header.path),
                frame=index,
                region=region,
                regions=header.regions,
                photometric=header.photometric,
                saturation=sat,
                warnings=[*header.warnings, *extra_warnings, *warnings],
            )
        )
    return images


def read_dicom(
    path: str | Path,
    *,
    spacing_mm: float | None = None,
    frames: Sequence[int] | None = None,
    split_regions: bool = False,
    spacing_source: str = "user",
) -> list[UltrasoundImage]:
    """Read a DICOM file as grey images: one per frame, or per tissue region per frame.

    ``pixels``: (H, W) float32 in [0, 255], the full frame in source pixels (with
    ``split_regions`` the images of one frame share one array: treat it as read-only).
    ``spacing_mm``: (row_mm, col_mm) from the tissue region, PixelSpacing, the caller's
    isotropic ``spacing_mm`` (labelled ``spacing_source``: 'user' or 'manifest'), or None.
    Without ``split_regions``, ``region`` is the largest tissue region (None if there is none).
    ``frames``: 0-based frame indices to decode (default all), in the order given.
    """
    spacing_mm = check_spacing_mm(spacing_mm)
    check_spacing_source(spacing_source)
    header = read_dicom_header(path)
    indices = _frame_indices(frames, header)
    tissue = [entry.region for entry in header.region_entries if entry.region.is_tissue_2d]
    extra: list[str] = []
    if split_regions and tissue:
        regions: list[Region | None] = list(tissue)
    else:
        chosen, note = choose_tissue_region(header.region_entries)
        regions, extra = [chosen], [note] if note else []
    images: list[UltrasoundImage] = []
    for index, frame in iter_frames(header, indices):
        gray, sat = frame_to_gray(frame, header)
        images += _images_for_frame(
            header, index, gray, sat, regions, spacing_mm, spacing_source, extra
        )
    return images
