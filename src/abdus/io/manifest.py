"""The dataset manifest: one JSON file listing every image with its labels (docs/data-format.md).

A dataset is a folder holding images and ``manifest.json``. Landmarks are in *source pixels*
``(x, y)`` of the frame named by ``file`` and ``frame``. Spacing is ``(row_mm, col_mm)``.

API (stable; other modules rely on it):
    Read(view, landmarks)                      one annotator's reading of one image
    ImageRecord(id, file, frame, patient_id, reference: Read, second_read: Read | None,
                truth: Read | None, spacing_mm, overlay_boxes, meta)
    Manifest(root, records, name, meta)
    load_manifest(path_or_dir, *, check_files=True) -> Manifest   (validates; AbdusInputError)
    save_manifest(manifest, path) -> None                          (atomic)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "abdus-manifest"
FORMAT_VERSION = 1

Point = tuple[float, float]  # (x, y) in source pixels


@dataclass(frozen=True)
class Read:
    """One reader's labels of an image: the view name and landmarks by name (source px)."""

    view: str
    landmarks: dict[str, Point] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageRecord:
    """One image (one frame of one file) of a dataset.

    ``reference`` is reader A, the reference standard used for training and evaluation.
    ``second_read`` is another annotator (reader B) for inter-observer statistics.
    ``truth`` is the noise-free anatomy, present only for synthetic data.
    ``overlay_boxes`` are ``(x0, y0, x1, y1)`` source-pixel boxes of burned-in text and icons.
    """

    id: str
    file: str
    patient_id: str
    reference: Read
    frame: int = 0
    second_read: Read | None = None
    truth: Read | None = None
    spacing_mm: tuple[float, float] | None = None
    overlay_boxes: tuple[tuple[int, int, int, int], ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def view(self) -> str:
        """The reference view name."""
        return self.reference.view


@dataclass
class Manifest:
    """All images of a dataset. ``root`` is the folder that ``ImageRecord.file`` is relative to."""

    root: Path
    records: list[ImageRecord]
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def path_of(self, record: ImageRecord) -> Path:
        """Absolute path of a record's image file."""
        return self.root / record.file

    def __len__(self) -> int:
        return len(self.records)
