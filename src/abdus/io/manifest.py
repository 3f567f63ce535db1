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
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from abdus.errors import AbdusInputError
from abdus.io.atomic import atomic_write_json
from abdus.taxonomy import (
    LANDMARK_INDEX,
    LANDMARK_TASK,
    LANDMARKS,
    NUM_LANDMARKS,
    VIEW_INDEX,
    VIEW_NAMES,
    landmarks_of_view,
)

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "abdus-manifest"
FORMAT_VERSION = 1

Point = tuple[float, float]  # (x, y) in source pixels


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


def read_from_array(view: str, points: np.ndarray) -> Read:
    """A Read of ``view`` with the finite rows of a (14, 2) source-px array as its landmarks."""
    return Read(view, landmarks_from_array(points))


# --------------------------------------------------------------------------- validation

MAX_PROBLEMS_SHOWN = 10
_TOP_KEYS = ("format", "version", "name", "meta", "images")
_IMAGE_KEYS = (
    "id",
    "file",
    "frame",
    "patient_id",
    "view",
    "landmarks",
    "spacing_mm",
    "size",
    "overlay_boxes",
    "second_read",
    "truth",
    "meta",
)
_READ_KEYS = ("view", "landmarks")
_SECOND_READS = ("second_read", "truth")
_MISSING = object()


class _FieldError(Exception):
    """One field's problem (message without the image id and field name)."""


class ProblemList:
    """Collects validation problems; reported as one line, the first MAX_PROBLEMS_SHOWN of them.

    ``add(image_id, field, message)`` records "image 'id': field: message" (no image prefix
    when ``image_id`` is None); ``raise_if_any(source)`` raises one AbdusInputError.
    """

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, image_id: str | None, field_name: str, message: str) -> None:
        where = f"image {image_id!r}: " if image_id is not None else ""
        self.items.append(f"{where}{field_name}: {message}")

    def message(self) -> str:
        shown = "; ".join(self.items[:MAX_PROBLEMS_SHOWN])
        more = len(self.items) - MAX_PROBLEMS_SHOWN
        return shown + (f"; ... and {more} more problem(s)" if more > 0 else "")

    def raise_if_any(self, source: str | Path | None) -> None:
        if self.items:
            raise AbdusInputError(self.message(), source)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _FieldError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise _FieldError(f"{what} must be finite, got {value!r}")
    return float(value)


def _integer(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _FieldError(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        raise _FieldError(f"{what} must be >= {minimum}, got {value}")
    return value


def _identifier(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise _FieldError(f"must be a non-empty string, got {value!r}")
    return value


def _file(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _FieldError(f"must be a non-empty relative path, got {value!r}")
    if value.startswith(("/", "\\")) or (len(value) > 1 and value[1] == ":"):
        raise _FieldError(f"must be relative to the manifest's folder, got {value!r}")
    return value


def _spacing(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    pair = value if isinstance(value, list) else [value]
    if not 1 <= len(pair) <= 2:
        raise _FieldError(f"must be a number or [row_mm, col_mm], got {value!r}")
    numbers = [_number(v, "spacing") for v in pair]
    if min(numbers) <= 0:
        raise _FieldError(f"must be > 0 mm per pixel, got {value!r}")
    return (numbers[0], numbers[-1])


def _size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise _FieldError(f"must be [rows, cols], got {value!r}")
    return (_integer(value[0], "rows", 1), _integer(value[1], "cols", 1))


def _boxes(value: Any) -> tuple[tuple[int, int, int, int], ...]:
    if not isinstance(value, list):
        raise _FieldError(f"must be a list of [x0, y0, x1, y1], got {value!r}")
    boxes = []
    for box in value:
        if not isinstance(box, list) or len(box) != 4:
            raise _FieldError(f"each box must be [x0, y0, x1, y1], got {box!r}")
        x0, y0, x1, y1 = (_integer(v, "box corner", 0) for v in box)
        if x1 <= x0 or y1 <= y0:
            raise _FieldError(
                f"box {box} is empty (x1 and y1 are exclusive and must exceed x0, y0)"
            )
        boxes.append((x0, y0, x1, y1))
    return tuple(boxes)


def _meta(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _FieldError(f"must be an object, got {value!r}")
    return value


def _point(value: Any) -> Point:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise _FieldError(f"must be [x, y] in source pixels, got {value!r}")
    return (_number(value[0], "x"), _number(value[1], "y"))


def _landmark_misfit(name: str, view: str) -> str:
    fits = landmarks_of_view(view)
    owned = f"its landmarks: {', '.join(fits)}" if fits else "that view has no landmarks"
    return f"landmark {name!r} ({LANDMARK_TASK[name]}) does not fit view {view!r} ({owned})"


def _parse_read(
    view: Any, landmarks: Any, image_id: str, prefix: str, problems: ProblemList
) -> tuple[str, dict[str, Point]] | None:
    """(view, {name: point}) of one reader, or None after reporting its problems."""
    before = len(problems.items)
    if not isinstance(view, str) or view not in VIEW_INDEX:
        got = "missing" if view is _MISSING else f"unknown view {view!r}"
        problems.add(image_id, f"{prefix}view", f"{got}; valid views: {', '.join(VIEW_NAMES)}")
        view = None
    landmarks = {} if landmarks in (_MISSING, None) else landmarks
    if not isinstance(landmarks, dict):
        problems.add(image_id, f"{prefix}landmarks", f"must be {{name: [x, y]}}, got {landmarks!r}")
        return None
    points: dict[str, Point] = {}
    for name, value in landmarks.items():
        where = f"{prefix}landmarks.{name}"
        if name not in LANDMARK_INDEX:
            valid = ", ".join(LANDMARKS)
            problems.add(image_id, where, f"unknown landmark {name!r}; valid landmarks: {valid}")
        elif view is not None and name not in landmarks_of_view(view):
            problems.add(image_id, where, _landmark_misfit(name, view))
        else:
            try:
                points[name] = _point(value)
            except _FieldError as bad:
                problems.add(image_id, where, str(bad))
    return (view, points) if len(problems.items) == before else None


_FIELD_PARSERS = {
    "file": (_file, _MISSING),
    "patient_id": (_identifier, _MISSING),
    "frame": (lambda v: _integer(v, "frame", 0), 0),
    "spacing_mm": (_spacing, None),
    "size": (_size, None),
    "overlay_boxes": (_boxes, []),
    "meta": (_meta, {}),
}


def _parse_reads(
    obj: dict[str, Any], image_id: str, problems: ProblemList
) -> dict[str, Any] | None:
    reads = {}
    reference = _parse_read(
        obj.get("view", _MISSING), obj.get("landmarks", _MISSING), image_id, "", problems
    )
    ok = reference is not None
    if ok:
        reads["reference"] = reference
    for key in _SECOND_READS:
        sub = obj.get(key)
        if sub is None:
            continue
        if not isinstance(sub, dict) or set(sub) - set(_READ_KEYS):
            problems.add(
                image_id, key, f'must be {{"view": ..., "landmarks": {{...}}}}, got {sub!r}'
            )
            ok = False
            continue
        # A second read without a view inherits the reference view (docs/data-format.md).
        view = sub.get("view", obj.get("view", _MISSING))
        read = _parse_read(view, sub.get("landmarks", _MISSING), image_id, f"{key}.", problems)
        ok = ok and read is not None
        if read is not None:
            reads[key] = read
    return reads if ok else None


def _parse_record(obj: Any, index: int, problems: ProblemList) -> dict[str, Any] | None:
    """Validated field values of one ``images[]`` entry, or None after reporting problems."""
    if not isinstance(obj, dict):
        problems.add(f"#{index}", "images", f"each image must be an object, got {obj!r}")
        return None
    before = len(problems.items)
    try:
        image_id = _identifier(obj.get("id", _MISSING))
    except _FieldError as bad:
        image_id = f"#{index}"
        problems.add(image_id, "id", str(bad))
    for key in sorted(set(obj) - set(_IMAGE_KEYS)):
        problems.add(image_id, key, f"unknown field; valid fields: {', '.join(_IMAGE_KEYS)}")
    values: dict[str, Any] = {"id": image_id}
    for key, (parse, default) in _FIELD_PARSERS.items():
        raw = obj.get(key, default)
        try:
            if raw is _MISSING:
                raise _FieldError("missing")
            values[key] = parse(raw)
        except _FieldError as bad:
            problems.add(image_id, key, str(bad))
    values["reads"] = _parse_reads(obj, image_id, problems)
    if len(problems.items) != before:
        return None
    if values["size"] is not None:
        rows, cols = values["size"]
        lms = {key: read[1] for key, read in values["reads"].items()}
        _check_bounds(lms, values["overlay_boxes"], rows, cols, image_id, problems)
    return values


def _check_bounds(
    reads: dict[str, dict[str, Point]],
    boxes: tuple[tuple[int, ...], ...],
    rows: int,
    cols: int,
    image_id: str,
    problems: ProblemList,
) -> None:
    """Landmarks inside the frame (pixel centres at integers: x in [-0.5, cols - 0.5]); boxes
    inside [0, cols] x [0, rows] (exclusive max)."""
    for key, points in reads.items():
        prefix = "" if key == "reference" else f"{key}."
        for name, (x, y) in points.items():
            if not (-0.5 <= x <= cols - 0.5 and -0.5 <= y <= rows - 0.5):
                where = f"{prefix}landmarks.{name}"
                frame = f"the {rows}x{cols} (rows x cols) frame"
                problems.add(image_id, where, f"point ({x:g}, {y:g}) outside {frame}")
    for box in boxes:
        if box[2] > cols or box[3] > rows:
            problems.add(
                image_id, "overlay_boxes", f"box {list(box)} outside the {rows}x{cols} frame"
            )


def _parse_manifest(obj: Any, problems: ProblemList) -> dict[str, Any] | None:
    """Validated top-level values (``images`` = list of record values), or None."""
    if not isinstance(obj, dict):
        problems.add(None, "manifest", "the top level must be a JSON object")
        return None
    if obj.get("format") != FORMAT_NAME:
        problems.add(None, "format", f"expected {FORMAT_NAME!r}, got {obj.get('format')!r}")
        return None
    if obj.get("version") != FORMAT_VERSION:
        got = obj.get("version")
        problems.add(None, "version", f"unsupported {got!r}; this abdus reads {FORMAT_VERSION}")
        return None
    for key in sorted(set(obj) - set(_TOP_KEYS)):
        problems.add(None, key, f"unknown top-level field; valid fields: {', '.join(_TOP_KEYS)}")
    name, meta, images = obj.get("name", ""), obj.get("meta", {}), obj.get("images")
    if not isinstance(name, str):
        problems.add(None, "name", f"must be a string, got {name!r}")
    if not isinstance(meta, dict):
        problems.add(None, "meta", f"must be an object, got {meta!r}")
    if not isinstance(images, list):
        problems.add(None, "images", f"must be a list of image objects, got {images!r}")
        return None
    parsed, seen = [], set()
    for index, entry in enumerate(images):
        values = _parse_record(entry, index, problems)
        if values is None:
            continue
        if values["id"] in seen:
            problems.add(values["id"], "id", "duplicate id")
        seen.add(values["id"])
        parsed.append(values)
    return {"name": name, "meta": meta, "images": parsed}


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
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError as error:
        raise AbdusInputError(f"cannot read file ({error.strerror})", path) from None
    if head[128:132] == b"DICM":
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
