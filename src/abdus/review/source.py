"""The items to review, read from SOURCE: a folder of ``abdus predict`` JSON, or a dataset.

An item is one image (one frame of one file) with what is to be checked: the model's
prediction (view, view probabilities, landmarks with confidences, all in source px), or, for a
dataset, reader A's labels (the reference) and reader B's where present.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abdus.errors import AbdusInputError
from abdus.io.dicom import read_dicom_header
from abdus.io.manifest import MANIFEST_NAME, ImageRecord, load_manifest
from abdus.io.reader import sniff_format
from abdus.io.us_regions import choose_tissue_region, resolve_spacing
from abdus.measurements import measurements_from_landmarks
from abdus.review.priority import priority, readers_disagree
from abdus.taxonomy import VIEW_NAMES, landmarks_of_view, measurements_of_view


@dataclass(frozen=True)
class ReviewItem:
    """One image to review. ``file`` is absolute; ``spacing_mm`` ``(row_mm, col_mm)`` when
    known without opening the image; ``original`` the prediction (or reader A) as JSON, with
    landmarks ``{name: {"x", "y", "confidence"}}`` in source px."""

    id: str
    name: str
    file: Path
    frame: int
    patient_id: str
    spacing_mm: tuple[float, float] | None
    original: dict[str, Any]
    priority: float
    record: ImageRecord | None = None  # the dataset's record (reader B, truth, meta), if any
    model_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def view_probability(self) -> float | None:
        return self.original.get("view_probability")


class UniqueIds:
    """URL-safe item ids, each handed out once (a repeat gets ``_2``, ``_3`` ...)."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def take(self, name: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "item"
        candidate, k = base, 1
        while candidate in self._used:
            k += 1
            candidate = f"{base}_{k}"
        self._used.add(candidate)
        return candidate


def _spacing(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return (float(value), float(value))
    return (float(value[0]), float(value[1]))


def _points(landmarks: dict[str, Any]) -> dict[str, tuple[float, float]]:
    return {name: (float(p["x"]), float(p["y"])) for name, p in landmarks.items()}


def view_measurements(
    view: str, points: dict[str, tuple[float, float]], spacing: tuple[float, float] | None
) -> dict[str, float | None]:
    """``{code: mm or None}`` for every measurement of ``view`` (None: no spacing or a missing
    landmark)."""
    measured = measurements_from_landmarks(points, spacing)
    return {m.code: measured.get(m.code) for m in measurements_of_view(view)}


def _prediction_item(path: Path, name: str, record: dict[str, Any], names: UniqueIds) -> ReviewItem:
    view = record["view"]
    if view not in VIEW_NAMES:
        raise AbdusInputError(f"unknown view {view!r}", path)
    source = record["source"]
    file = Path(source["file"])
    if not file.is_absolute():
        file = file.absolute() if file.exists() else (path.parent / file).absolute()
    allowed = set(landmarks_of_view(view))
    landmarks = {
        lm: {"x": float(p["x"]), "y": float(p["y"]), "confidence": p.get("confidence")}
        for lm, p in (record.get("landmarks") or {}).items()
        if lm in allowed and p is not None and p.get("x") is not None
    }
    spacing = _spacing(record.get("spacing_mm"))
    measured = view_measurements(view, _points(landmarks), spacing)
    original = {
        "view": view,
        "view_probability": record.get("view_probability"),
        "view_probabilities": record.get("view_probabilities"),
        "landmarks": landmarks,
        "measurements_mm": measured,
        "model_id": record.get("model_id") or "",
    }
    confidences = [p["confidence"] for p in landmarks.values() if p["confidence"] is not None]
    score = priority(
        view_probability=record.get("view_probability"),
        landmark_confidences=confidences,
        measurements_mm=measured,
        disagreement=False,
    )
    return ReviewItem(
        id=names.take(name),
        name=name,
        file=file,
        frame=int(source.get("frame") or 0),
        patient_id=file.parent.name or name,
        spacing_mm=spacing,
        original=original,
        priority=score,
        model_id=original["model_id"],
    )


def _load_predictions(folder: Path, skip: Path) -> list[ReviewItem]:
    items, names = [], UniqueIds()
    for path in sorted(folder.rglob("*.json")):
        if path.name.startswith(".") or skip in path.parents or path.name == MANIFEST_NAME:
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise AbdusInputError(f"cannot read prediction ({error})", path) from None
        if not isinstance(record, dict) or "source" not in record or record.get("error"):
            continue  # not a prediction, or an image that failed: nothing to review
        name = path.relative_to(folder).with_suffix("").as_posix()
        try:
            items.append(_prediction_item(path, name, record, names))
        except (KeyError, TypeError, ValueError) as error:
            raise AbdusInputError(f"not an abdus predict record ({error})", path) from None
    return items


def file_spacing(path: Path) -> tuple[float, float] | None:
    """A DICOM file's spacing (row_mm, col_mm) from its header only, as ``abdus predict``
    would use it (the tissue region's, else PixelSpacing); None for other files or none."""
    try:
        if sniff_format(path) != "dicom":
            return None
        header = read_dicom_header(path)
    except (AbdusInputError, OSError):
        return None  # an unreadable file shows its error when the item is opened
    region, _ = choose_tissue_region(header.region_entries)
    return resolve_spacing(region, header.pixel_spacing, None, "manifest")[0]


def _dataset_item(record: ImageRecord, root: Path, names: UniqueIds) -> ReviewItem:
    reference, second = record.reference, record.second_read
    landmarks = {
        lm: {"x": x, "y": y, "confidence": None} for lm, (x, y) in reference.landmarks.items()
    }
    file = (root / record.file).resolve()
    spacing = record.spacing_mm or file_spacing(file)  # for the work list's ranges only
    measured = view_measurements(reference.view, reference.landmarks, spacing)
    disagree = False
    if second is not None:
        mm_b = view_measurements(second.view, second.landmarks, spacing)
        disagree = readers_disagree(reference.view, second.view, measured, mm_b)
    original = {
        "view": reference.view,
        "view_probability": None,
        "view_probabilities": None,
        "landmarks": landmarks,
        "measurements_mm": measured,
        "reader": "A",
    }
    if second is not None:
        original["second_read"] = {
            "view": second.view,
            "landmarks": {lm: {"x": x, "y": y} for lm, (x, y) in second.landmarks.items()},
        }
    score = priority(
        view_probability=None,
        landmark_confidences=[],
        measurements_mm=measured,
        disagreement=disagree,
    )
    return ReviewItem(
        id=names.take(record.id),
        name=record.id,
        file=file,
        frame=record.frame,
        patient_id=record.patient_id,
        spacing_mm=record.spacing_mm,
        original=original,
        priority=score,
        record=record,
    )


def load_items(source: str | Path, out: str | Path) -> list[ReviewItem]:
    """Every item of SOURCE (a dataset when it holds manifest.json, else predict JSON files;
    ``out`` is skipped when it lies inside). AbdusInputError for an unreadable SOURCE."""
    folder = Path(source).absolute()
    if not folder.is_dir():
        raise AbdusInputError("SOURCE must be a folder of predictions or a dataset", folder)
    if (folder / MANIFEST_NAME).is_file():
        manifest = load_manifest(folder, check_files=False)
        names = UniqueIds()
        return [_dataset_item(record, manifest.root, names) for record in manifest.records]
    items = _load_predictions(folder, Path(out).absolute())
    if not items:
        raise AbdusInputError("no abdus predict JSON and no manifest.json here", folder)
    return items
