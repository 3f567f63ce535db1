"""Manifest validation: JSON values -> checked field values, every problem named.

Parses a manifest dict (or one ``images[]`` entry) field by field, collecting problems in a
:class:`ProblemList` (reported as one AbdusInputError line naming the image id and field)
instead of stopping at the first. Checks structure, format/version, the taxonomy (views,
landmarks that fit the view), numbers, spacing, sizes, overlay boxes and, when ``size`` is
known, that points and boxes lie inside the frame. No file access; ``abdus.io.manifest``
builds records from the values returned here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from abdus.errors import AbdusInputError
from abdus.taxonomy import (
    LANDMARK_INDEX,
    LANDMARK_TASK,
    LANDMARKS,
    VIEW_INDEX,
    VIEW_NAMES,
    landmarks_of_view,
)

FORMAT_NAME = "abdus-manifest"
FORMAT_VERSION = 1

Point = tuple[float, float]  # (x, y) in source pixels


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
