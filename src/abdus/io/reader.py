"""Read any supported file (DICOM, PNG, JPEG), chosen by content, not by file name.

    read_any(path, *, spacing_mm, spacing_source, split_regions) -> list[UltrasoundImage]
    read_frame(path, frame, *, spacing_mm, spacing_source) -> UltrasoundImage
    sniff_format(path) -> "dicom" | "png" | "jpeg"
    describe_file(path, *, spacing_mm) -> dict           (defined in abdus.io.info)

DICOM is recognised by 'DICM' at byte 128 (PS3.10 7.1) or by a bare dataset at the start;
PNG and JPEG by their signatures. See ``abdus.io.dicom`` and ``abdus.io.images`` for pixel
values and spacing rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from abdus.errors import AbdusInputError
from abdus.io.dicom import is_dicom, read_dicom
from abdus.io.images import JPEG_SIGNATURE, PNG_SIGNATURE, read_image
from abdus.io.types import UltrasoundImage

FORMATS = ("dicom", "png", "jpeg")


def sniff_format(path: str | Path) -> str:
    """'dicom', 'png' or 'jpeg' from the file's first bytes; AbdusInputError otherwise."""
    path = Path(path)
    if not path.exists():
        raise AbdusInputError("file not found", path)
    if path.is_dir():
        raise AbdusInputError("is a folder, not a file", path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError as err:
        raise AbdusInputError(f"cannot open file: {err.strerror or err}", path) from None
    if not head:
        raise AbdusInputError("file is empty", path)
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(JPEG_SIGNATURE):
        return "jpeg"
    if is_dicom(path):  # a bare dataset without preamble
        return "dicom"
    if len(head) < 132:
        raise AbdusInputError(
            f"not a DICOM, PNG or JPEG file (only {len(head)} bytes: truncated?)", path
        )
    raise AbdusInputError("not a DICOM, PNG or JPEG file", path)


def read_any(
    path: str | Path,
    *,
    spacing_mm: float | None = None,
    spacing_source: str = "user",
    split_regions: bool = False,
) -> list[UltrasoundImage]:
    """Every frame of a DICOM / PNG / JPEG file as grey images (see ``read_dicom``).

    ``spacing_mm`` (isotropic mm/px) is used only when the file gives none, and is labelled
    ``spacing_source`` ('user' or 'manifest'). ``split_regions`` applies to DICOM only.
    """
    if sniff_format(path) == "dicom":
        return read_dicom(
            path,
            spacing_mm=spacing_mm,
            spacing_source=spacing_source,
            split_regions=split_regions,
        )
    return read_image(path, spacing_mm=spacing_mm, spacing_source=spacing_source)


def read_frame(
    path: str | Path,
    frame: int = 0,
    *,
    spacing_mm: float | None = None,
    spacing_source: str = "manifest",
) -> UltrasoundImage:
    """One frame (0-based) of a file, decoding only that frame; for the dataset loader.

    ``pixels`` (H, W) float32 in [0, 255], source pixels; ``region`` the largest tissue region.
    """
    reader = read_dicom if sniff_format(path) == "dicom" else read_image
    return reader(path, spacing_mm=spacing_mm, spacing_source=spacing_source, frames=[frame])[0]


def describe_file(path: str | Path, *, spacing_mm: float | None = None) -> dict[str, Any]:
    """What a file holds, as a JSON-serialisable dict (see ``abdus.io.info.describe_file``)."""
    from abdus.io.info import describe_file as describe  # info imports this module

    return describe(path, spacing_mm=spacing_mm)
