"""The dataset manifest: one JSON file listing every image with its labels (docs/data-format.md).

A dataset is a folder holding images and ``manifest.json``. Landmarks are in *source pixels*
``(x, y)`` of the frame named by ``file`` and ``frame`` (x = column, y = row, pixel centres at
integer coordinates, so a frame of ``cols`` columns spans x in [-0.5, cols - 0.5]). Spacing is
``(row_mm, col_mm)``.

API (stable; other modules rely on it):
    Read(view, landmarks)                      one annotator's reading of one image
    ImageRecord(id, file, frame, patient_id, reference: Read, second_read: Read | None,
                truth: Read | None, spacing_mm, overlay_boxes, meta, size)
    Manifest(root, records, name, meta)        .by_patient(), .path_of(record)
    load_manifest(path_or_dir, *, check_files=True) -> Manifest   (validates; AbdusInputError)
    save_manifest(manifest, path) -> Path                          (validates, atomic)
    record_to_json(record) / record_from_json(obj)                 one image entry <-> JSON
    landmark_array(read) -> (14, 2) / landmarks_from_array(points) taxonomy channel order
    image_geometry(path) -> (rows, cols, frames)                   header only, no pixels

Field-by-field validation (ProblemList and the parsers) lives in ``abdus.io.manifest_validation``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from abdus.errors import AbdusInputError
from abdus.io.atomic import atomic_write_json
from abdus.io.manifest_validation import (
    FORMAT_NAME,
    FORMAT_VERSION,
    Point,
    ProblemList,
    _check_bounds,
    _parse_manifest,
    _parse_record,
)
from abdus.io.signatures import has_dicom_magic, read_head
from abdus.taxonomy import LANDMARK_INDEX, LANDMARKS, NUM_LANDMARKS

MANIFEST_NAME = "manifest.json"


def _integral(value: Any) -> int:
    """``int(value)`` for an integral number; ValueError for 3.5 (no silent truncation)."""
    as_int = int(value)
    if as_int != value:
        raise ValueError(f"expected an integer, got {value!r}")
    return as_int


@dataclass(frozen=True)
class Read:
    """One reader's labels of an image: the view name and landmarks by name (source px).

    Landmarks are normalised to ``(float x, float y)`` tuples in taxonomy order, so a Read
    built from lists or ints compares equal to the same Read loaded from JSON.
    """

    view: str
    landmarks: dict[str, Point] = field(default_factory=dict)

    def __post_init__(self) -> None:
        order = sorted(self.landmarks, key=lambda name: LANDMARK_INDEX.get(name, NUM_LANDMARKS))
        points: dict[str, Point] = {}
        for name in order:
            x, y = self.landmarks[name]  # exactly two coordinates, or ValueError
            points[name] = (float(x), float(y))
        object.__setattr__(self, "landmarks", points)


@dataclass(frozen=True)
class ImageRecord:
    """One image (one frame of one file) of a dataset.

    ``reference`` is reader A, the reference standard used for training and evaluation.
    ``second_read`` is another annotator (reader B) for inter-observer statistics.
    ``truth`` is the noise-free anatomy, present only for synthetic data.
    ``spacing_mm`` is ``(row_mm, col_mm)`` (a single number means isotropic), used only when the
    file itself has none (PNG/JPEG).
    ``overlay_boxes`` are ``(x0, y0, x1, y1)`` source-pixel boxes of burned-in text and icons,
    x0/y0 inclusive, x1/y1 exclusive.
    ``size`` is ``(rows, cols)`` of the frame in source pixels, when known without the file.
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
    size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        spacing = self.spacing_mm
        if spacing is not None:
            pair = (spacing, spacing) if isinstance(spacing, int | float) else spacing
            object.__setattr__(self, "spacing_mm", (float(pair[0]), float(pair[1])))
        boxes = tuple(tuple(_integral(v) for v in box) for box in self.overlay_boxes)
        object.__setattr__(self, "overlay_boxes", boxes)
        if self.size is not None:
            object.__setattr__(self, "size", (_integral(self.size[0]), _integral(self.size[1])))

    @property
    def view(self) -> str:
        """The reference view name."""
        return self.reference.view

    def reads(self) -> dict[str, Read]:
        """The reads present, by manifest field name: ``reference`` always, then the others."""
        named = {"reference": self.reference, "second_read": self.second_read, "truth": self.truth}
        return {key: read for key, read in named.items() if read is not None}


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

    def by_patient(self) -> dict[str, list[ImageRecord]]:
        """Records grouped by patient id; keys sorted, records in manifest order."""
        groups: dict[str, list[ImageRecord]] = {}
        for record in self.records:
            groups.setdefault(record.patient_id, []).append(record)
        return {pid: groups[pid] for pid in sorted(groups)}

    def __len__(self) -> int:
        return len(self.records)


# --------------------------------------------------------------------------- landmark arrays


def landmark_array(read: Read | None) -> np.ndarray:
    """Landmarks as a (14, 2) float64 array of (x, y) source px in ``taxonomy.LANDMARKS`` order.

    Rows of landmarks the read does not have (or a ``None`` read) are NaN.
    """
    points = np.full((NUM_LANDMARKS, 2), np.nan, dtype=np.float64)
    if read is not None:
        for name, (x, y) in read.landmarks.items():
            points[LANDMARK_INDEX[name]] = (x, y)
    return points


def landmarks_from_array(points: np.ndarray) -> dict[str, Point]:
    """Inverse of :func:`landmark_array`: (14, 2) source px -> {name: (x, y)}, NaN rows dropped."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected landmarks of shape ({NUM_LANDMARKS}, 2), got {points.shape}")
    present = np.isfinite(points).all(axis=1)
    return {
        LANDMARKS[i]: (float(points[i, 0]), float(points[i, 1])) for i in np.flatnonzero(present)
    }


# --------------------------------------------------------------------------- JSON <-> records


def record_to_json(record: ImageRecord) -> dict[str, Any]:
    """One manifest ``images[]`` entry; optional fields are written only when set."""
    obj: dict[str, Any] = {
        "id": record.id,
        "file": record.file,
        "frame": record.frame,
        "patient_id": record.patient_id,
        "view": record.reference.view,
        "landmarks": {name: [x, y] for name, (x, y) in record.reference.landmarks.items()},
    }
    if record.spacing_mm is not None:
        obj["spacing_mm"] = list(record.spacing_mm)
    if record.size is not None:
        obj["size"] = list(record.size)
    if record.overlay_boxes:
        obj["overlay_boxes"] = [list(box) for box in record.overlay_boxes]
    for key in ("second_read", "truth"):
        read = getattr(record, key)
        if read is not None:
            lms = {name: [x, y] for name, (x, y) in read.landmarks.items()}
            obj[key] = {"view": read.view, "landmarks": lms}
    if record.meta:
        obj["meta"] = record.meta
    return obj


def _record_from_fields(values: dict[str, Any]) -> ImageRecord:
    reads = values["reads"]
    return ImageRecord(
        id=values["id"],
        file=values["file"],
        patient_id=values["patient_id"],
        reference=Read(reads["reference"][0], reads["reference"][1]),
        frame=values["frame"],
        second_read=Read(*reads["second_read"]) if "second_read" in reads else None,
        truth=Read(*reads["truth"]) if "truth" in reads else None,
        spacing_mm=values["spacing_mm"],
        overlay_boxes=values["overlay_boxes"],
        meta=values["meta"],
        size=values["size"],
    )


def record_from_json(obj: Any, *, source: str | Path | None = None) -> ImageRecord:
    """Parse and validate one ``images[]`` entry (no file access); AbdusInputError naming
    ``source``, the image id and the field on any problem."""
    problems = ProblemList()
    values = _parse_record(obj, 0, problems)
    problems.raise_if_any(source)
    assert values is not None  # parse_record returns None only when it reported a problem
    return _record_from_fields(values)


def manifest_to_json(manifest: Manifest) -> dict[str, Any]:
    """The whole manifest as a JSON-ready dict (format, version, name, meta, images)."""
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "name": manifest.name,
        "meta": manifest.meta,
        "images": [record_to_json(record) for record in manifest.records],
    }


def manifest_from_json(obj: Any, *, root: str | Path, source: str | Path | None = None) -> Manifest:
    """Parse and validate a manifest dict (structure, taxonomy, `size` bounds; no file access)."""
    problems = ProblemList()
    parsed = _parse_manifest(obj, problems)
    problems.raise_if_any(source)
    assert parsed is not None
    records = [_record_from_fields(values) for values in parsed["images"]]
    return Manifest(Path(root), records, name=parsed["name"], meta=parsed["meta"])


# --------------------------------------------------------------------------- files


def image_geometry(path: str | Path) -> tuple[int, int, int]:
    """``(rows, cols, frames)`` of a DICOM, PNG or JPEG file from its header only.

    DICOM is recognised by its "DICM" preamble (or, failing PIL, by pydicom parsing it);
    Rows/Columns/NumberOfFrames are read with ``stop_before_pixels``. Raises AbdusInputError
    for a missing or unreadable file.
    """
    path = Path(path)
    if has_dicom_magic(read_head(path)):
        return _dicom_geometry(path, force=False)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            cols, rows = image.size
            return rows, cols, int(getattr(image, "n_frames", 1))
    except (UnidentifiedImageError, OSError):
        return _dicom_geometry(path, force=True)


def _dicom_geometry(path: Path, *, force: bool) -> tuple[int, int, int]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=force)
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:  # any parse failure means: not an image abdus can read
        raise AbdusInputError("not a readable DICOM, PNG or JPEG image", path) from None
    return rows, cols, frames


def check_manifest_files(manifest: Manifest, *, source: str | Path | None = None) -> None:
    """Check every record's file exists, its frame exists, its `size` (if given) matches the
    file, and its landmarks and overlay boxes lie inside the frame. AbdusInputError otherwise.

    Headers are read only when needed (no `size`, or a frame other than 0), once per file.
    """
    problems = ProblemList()
    cache: dict[Path, tuple[int, int, int] | str] = {}
    for record in manifest.records:
        path = manifest.path_of(record)
        if not path.is_file():
            problems.add(record.id, "file", f"missing file {record.file!r}")
            continue
        if record.size is not None and record.frame == 0:
            continue  # bounds were already checked against `size` when parsing
        if path not in cache:
            try:
                cache[path] = image_geometry(path)
            except AbdusInputError as error:
                cache[path] = str(error).removeprefix(f"{path}: ")
        geometry = cache[path]
        if isinstance(geometry, str):
            problems.add(record.id, "file", f"{record.file!r}: {geometry}")
            continue
        rows, cols, frames = geometry
        if record.frame >= frames:
            problems.add(record.id, "frame", f"frame {record.frame} out of range: {frames} frames")
        if record.size is not None and record.size != (rows, cols):
            problems.add(record.id, "size", f"{list(record.size)} but the file has {[rows, cols]}")
        elif record.size is None:
            lms = {key: read.landmarks for key, read in record.reads().items()}
            _check_bounds(lms, record.overlay_boxes, rows, cols, record.id, problems)
    problems.raise_if_any(source)


# --------------------------------------------------------------------------- load / save


def _manifest_path(path_or_dir: str | Path) -> Path:
    path = Path(path_or_dir).absolute()
    if path.is_dir():
        path = path / MANIFEST_NAME
        if not path.is_file():
            raise AbdusInputError(f"no {MANIFEST_NAME} in this folder", path.parent)
    elif not path.is_file():
        raise AbdusInputError("manifest not found", path)
    return path


def load_manifest(path_or_dir: str | Path, *, check_files: bool = True) -> Manifest:
    """Load and validate a manifest from its folder or its JSON path.

    Raises AbdusInputError (one line: the manifest path, then up to 10 problems each naming the
    image id and field) for malformed JSON, a wrong format/version, unknown views or landmarks,
    landmarks that do not fit the view, bad coordinates, spacing, frames or sizes, duplicate
    ids and (with ``check_files``) missing or unreadable files and points outside the frame.
    """
    path = _manifest_path(path_or_dir)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise AbdusInputError(f"malformed JSON: {error}", path) from None
    except (OSError, UnicodeDecodeError) as error:
        raise AbdusInputError(f"cannot read manifest ({error})", path) from None
    manifest = manifest_from_json(obj, root=path.parent, source=path)
    if check_files:
        check_manifest_files(manifest, source=path)
    return manifest


def save_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Validate (no file access) and write ``manifest`` atomically; returns the JSON path.

    ``path`` is the JSON file, or a folder (anything not ending in ``.json``) to hold
    ``manifest.json``. ``file`` entries are written as they are: relative to the manifest's
    folder, so save into ``manifest.root`` unless the paths were made relative to the new one.
    """
    target = Path(path)
    if target.suffix.lower() != ".json":
        target = target / MANIFEST_NAME
    obj = manifest_to_json(manifest)
    problems = ProblemList()
    _parse_manifest(obj, problems)
    try:
        json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError) as error:
        problems.add("-", "meta", f"not JSON-serialisable (NaN/inf or non-JSON type): {error}")
    if problems.items:
        raise AbdusInputError(f"refusing to save an invalid manifest: {problems.message()}", target)
    atomic_write_json(target, obj)
    return target
