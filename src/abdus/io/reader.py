"""Read any supported file (DICOM, PNG, JPEG), chosen by content, not by file name.

    read_any(path, *, spacing_mm, spacing_source, split_regions) -> list[UltrasoundImage]
    read_frame(path, frame, *, spacing_mm, spacing_source) -> UltrasoundImage
    sniff_format(path) -> "dicom" | "png" | "jpeg"

DICOM is recognised by 'DICM' at byte 128 (PS3.10 7.1) or by a bare dataset at the start;
PNG and JPEG by their signatures (``abdus.io.signatures``). See ``abdus.io.dicom`` and
``abdus.io.images`` for pixel values and spacing rules.
"""

from __future__ import annotations

from pathlib import Path

from abdus.errors import AbdusInputError
from abdus.io.dicom import read_dicom
from abdus.io.images import read_image
from abdus.io.signatures import (
    HEAD_BYTES,
    JPEG_SIGNATURE,
    PNG_SIGNATURE,
    has_dicom_magic,
    looks_like_bare_dataset,
    read_head,
)
from abdus.io.types import UltrasoundImage


def sniff_format(path: str | Path) -> str:
    """'dicom', 'png' or 'jpeg' from the file's first bytes; AbdusInputError otherwise."""
    head = read_head(path)
    if not head:
        raise AbdusInputError("file is empty", path)
    if has_dicom_magic(head):
        return "dicom"
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(JPEG_SIGNATURE):
        return "jpeg"
    if looks_like_bare_dataset(head):  # a DICOM dataset without preamble
        return "dicom"
    if len(head) < HEAD_BYTES:
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
