"""The review state: every item's current version, the append-only history and the reviewed
manifest.

Nothing is overwritten: each save appends one line to ``REVIEWED/history.jsonl`` (the item, its
new version, status, view, landmarks in source px, reviewer, time) and rewrites
``REVIEWED/manifest.json`` atomically from the latest versions. Restarting replays the history,
so a review goes on where it stopped. Several reviewers at once: a save names the version it
started from; a stale one raises ``VersionConflictError`` (HTTP 409), never a silent overwrite.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from abdus.io.manifest import ImageRecord, Manifest, Read, save_manifest
from abdus.io.reader import read_frame
from abdus.review.source import ReviewItem, load_items, view_measurements
from abdus.taxonomy import (
    MEASUREMENT_BY_CODE,
    landmarks_of_view,
    measurements_of_view,
    view_by_name,
)

STATUSES = ("todo", "accepted", "corrected", "rejected")
SAVED_STATUSES = STATUSES[1:]
HISTORY_NAME = "history.jsonl"
PNG_CACHE_SIZE = 64  # encoded frames kept in memory (a few MB each at most)


class VersionConflictError(Exception):
    """A save carried a stale version (someone else saved the item in between)."""


class ReviewError(ValueError):
    """A save the store refuses (unknown view, landmark or status; point off the frame)."""


@dataclass
class ItemState:
    """The latest version of one item (version 0: as loaded, not yet reviewed)."""

    version: int
    status: str
    view: str
    landmarks: dict[str, tuple[float, float]]
    not_measurable: list[str] = field(default_factory=list)
    comment: str = ""
    reviewer: str | None = None
    reviewed_at: str | None = None


@dataclass(frozen=True)
class Frame:
    """A decoded frame: the PNG bytes, ``rows`` x ``cols`` source px, spacing (row, col) mm."""

    png: bytes
    rows: int
    cols: int
    spacing_mm: tuple[float, float] | None


def _initial_state(item: ReviewItem) -> ItemState:
    points = {n: (p["x"], p["y"]) for n, p in item.original["landmarks"].items()}
    return ItemState(0, "todo", item.original["view"], points)


class ReviewStore:
    """Items of SOURCE and their review state, saved under ``out`` (REVIEWED)."""

    def __init__(self, source: str | Path, out: str | Path, *, reviewer: str = "") -> None:
        self.source = Path(source).absolute()
        self.out = Path(out).absolute()
        self.out.mkdir(parents=True, exist_ok=True)
        self.reviewer = reviewer
        self.items = load_items(self.source, self.out)
        self.by_id = {item.id: item for item in self.items}
        self.order = sorted(self.items, key=lambda item: (-item.priority, item.name))
        self.states = {item.id: _initial_state(item) for item in self.items}
        self.lock = threading.Lock()
        self._frames: OrderedDict[str, Frame] = OrderedDict()
        self._frame_lock = threading.Lock()
        self._replay_history()

    @property
    def history_path(self) -> Path:
        return self.out / HISTORY_NAME

    def _replay_history(self) -> None:
        if not self.history_path.is_file():
            return
        for line in self.history_path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line) if line.strip() else None
            if entry and entry.get("id") in self.states:
                self.states[entry["id"]] = _state_from_entry(entry)

    # ------------------------------------------------------------------ frames (pixels, PNG)
    def frame(self, item_id: str) -> Frame:
        """The item's frame, decoded once and kept (most recent ``PNG_CACHE_SIZE``)."""
        with self._frame_lock:
            if item_id in self._frames:
                self._frames.move_to_end(item_id)
                return self._frames[item_id]
        item = self.by_id[item_id]
        spacing = None if item.spacing_mm is None else item.spacing_mm[0]
        anisotropic = item.spacing_mm is not None and item.spacing_mm[0] != item.spacing_mm[1]
        image = read_frame(item.file, item.frame, spacing_mm=None if anisotropic else spacing)
        pixels = np.clip(np.asarray(image.pixels), 0, 255).astype(np.uint8)  # (H, W)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
        rows, cols = pixels.shape[:2]
        frame = Frame(buffer.getvalue(), rows, cols, image.spacing_mm or item.spacing_mm)
        with self._frame_lock:
            self._frames[item_id] = frame
            while len(self._frames) > PNG_CACHE_SIZE:
                self._frames.popitem(last=False)
        return frame

    # ------------------------------------------------------------------ reading
    def neighbours(self, item_id: str) -> tuple[str | None, str | None]:
        """(previous_id, next_id) in work-list (priority) order."""
        ids = [item.id for item in self.order]
        index = ids.index(item_id)
        previous = ids[index - 1] if index > 0 else None
        following = ids[index + 1] if index + 1 < len(ids) else None
        return previous, following

    def list_items(self, view: str | None = None, status: str | None = None) -> list[dict]:
        """The work list in priority order, filtered by current view and status."""
        if status is not None and status not in STATUSES:
            raise ReviewError(f"unknown status {status!r}; valid: {', '.join(STATUSES)}")
        if view is not None:
            view_by_name(view)
        rows = []
        for item in self.order:
            state = self.states[item.id]
            if (view is None or state.view == view) and (status is None or state.status == status):
                rows.append(
                    {
                        "id": item.id,
                        "name": item.name,
                        "view": state.view,
                        "view_probability": item.view_probability,
                        "status": state.status,
                        "priority": item.priority,
                        "version": state.version,
                    }
                )
        return rows

    def measurements(self, item_id: str, state: ItemState) -> dict[str, float | None]:
        """``{code: mm or None}`` of the state's view; None where not measurable."""
        spacing = self.frame(item_id).spacing_mm
        measured = view_measurements(state.view, state.landmarks, spacing)
        return {c: None if c in state.not_measurable else v for c, v in measured.items()}

    def detail(self, item_id: str) -> dict[str, Any]:
        """Everything the page shows of one item (source px, mm)."""
        item, frame = self.by_id[item_id], self.frame(item_id)
        with self.lock:
            state = self.states[item_id]
        confidences = {n: p.get("confidence") for n, p in item.original["landmarks"].items()}
        previous, following = self.neighbours(item_id)
        probabilities = item.original.get("view_probabilities")
        return {
            "id": item.id,
            "name": item.name,
            "width": frame.cols,
            "height": frame.rows,
            "spacing_mm": None if frame.spacing_mm is None else list(frame.spacing_mm),
            "view": state.view,
            "view_probabilities": probabilities,
            "landmarks": {
                name: {"x": x, "y": y, "confidence": confidences.get(name)}
                for name, (x, y) in state.landmarks.items()
            },
            "measurements_mm": self.measurements(item_id, state),
            "not_measurable": list(state.not_measurable),
            "comment": state.comment,
            "status": state.status,
            "version": state.version,
            "original": item.original,
            "next_id": following,
            "previous_id": previous,
        }

    # ------------------------------------------------------------------ saving
    def save(self, item_id: str, body: dict[str, Any], *, reviewer: str | None = None) -> dict:
        """Check and store a new version; returns ``{"version", "measurements_mm"}``.

        ReviewError for a bad body, VersionConflictError for a stale ``version``. The check, the
        history line and the manifest are written under one lock (read-check-write)."""
        frame = self.frame(item_id)  # outside the lock: decoding can take a while
        new = _parse_body(body, frame)
        with self.lock:
            current = self.states[item_id]
            if new["version"] != current.version:
                raise VersionConflictError(
                    f"item {item_id} was saved by {current.reviewer or 'someone'} at "
                    f"{current.reviewed_at} (version {current.version}); you edited version "
                    f"{new['version']}: reload it and apply your change again"
                )
            state = ItemState(
                version=current.version + 1,
                status=new["status"],
                view=new["view"],
                landmarks=new["landmarks"],
                not_measurable=new["not_measurable"],
                comment=new["comment"],
                reviewer=reviewer or self.reviewer,
                reviewed_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            self._append_history(item_id, state)
            self.states[item_id] = state
            self.write_manifest()
        return {"version": state.version, "measurements_mm": self.measurements(item_id, state)}

    def _append_history(self, item_id: str, state: ItemState) -> None:
        entry = {"id": item_id, **_state_json(state)}
        with open(self.history_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, allow_nan=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def reviewed(self) -> list[tuple[ReviewItem, ItemState]]:
        """Items accepted or corrected (what a model may learn from), in SOURCE order."""
        pairs = [(item, self.states[item.id]) for item in self.items]
        return [(i, s) for i, s in pairs if s.status in ("accepted", "corrected")]

    def write_manifest(self) -> Path:
        """REVIEWED/manifest.json (atomic): every accepted or corrected item, labelled as the
        reviewer left it; ``meta.review`` keeps the original prediction, reviewer and time."""
        records = [self._record(item, state) for item, state in self.reviewed()]
        meta = {"reviewed_from": str(self.source), "history": HISTORY_NAME}
        manifest = Manifest(self.out, records, name=f"reviewed {self.source.name}", meta=meta)
        path = save_manifest(manifest, self.out)
        return path

    def _record(self, item: ReviewItem, state: ItemState) -> ImageRecord:
        dropped = {lm for c in state.not_measurable for lm in MEASUREMENT_BY_CODE[c].landmarks}
        landmarks = {n: p for n, p in state.landmarks.items() if n not in dropped}
        review = {**_state_json(state), "original": item.original}
        file = Path(os.path.relpath(item.file, self.out)).as_posix()
        base = item.record
        spacing = item.spacing_mm if base is None else base.spacing_mm
        if base is None:
            return ImageRecord(
                id=item.id,
                file=file,
                patient_id=item.patient_id,
                reference=Read(state.view, landmarks),
                frame=item.frame,
                spacing_mm=spacing,
                meta={"review": review, "model_id": item.model_id},
            )
        return replace(
            base,
            file=file,
            reference=Read(state.view, landmarks),
            meta={**base.meta, "review": review},
        )


def _state_json(state: ItemState) -> dict[str, Any]:
    return {
        "version": state.version,
        "status": state.status,
        "view": state.view,
        "landmarks": {n: [x, y] for n, (x, y) in state.landmarks.items()},
        "not_measurable": state.not_measurable,
        "comment": state.comment,
        "reviewer": state.reviewer,
        "time": state.reviewed_at,
    }


def _state_from_entry(entry: dict[str, Any]) -> ItemState:
    return ItemState(
        version=int(entry["version"]),
        status=entry["status"],
        view=entry["view"],
        landmarks={n: (float(x), float(y)) for n, (x, y) in entry["landmarks"].items()},
        not_measurable=list(entry.get("not_measurable", [])),
        comment=entry.get("comment", ""),
        reviewer=entry.get("reviewer"),
        reviewed_at=entry.get("time"),
    )


def _parse_body(body: Any, frame: Frame) -> dict[str, Any]:
    """The checked fields of a save; ReviewError naming the field otherwise."""
    if not isinstance(body, dict):
        raise ReviewError("the body must be a JSON object")
    version = body.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ReviewError("version: an integer is required")
    status = body.get("status")
    if status not in SAVED_STATUSES:
        raise ReviewError(f"status: {status!r}; valid: {', '.join(SAVED_STATUSES)}")
    view = body.get("view")
    try:
        view_by_name(view if isinstance(view, str) else repr(view))
    except ValueError as error:
        raise ReviewError(f"view: {error}") from None
    landmarks = _parse_landmarks(body.get("landmarks", {}), view, frame)
    codes = [m.code for m in measurements_of_view(view)]
    not_measurable = body.get("not_measurable", [])
    if not isinstance(not_measurable, list) or any(c not in codes for c in not_measurable):
        raise ReviewError(f"not_measurable: codes of view {view} only ({', '.join(codes)})")
    comment = body.get("comment", "")
    if not isinstance(comment, str):
        raise ReviewError("comment: a string is required")
    return {
        "version": version,
        "status": status,
        "view": view,
        "landmarks": landmarks,
        "not_measurable": sorted(set(not_measurable), key=codes.index),
        "comment": comment,
    }


def _parse_landmarks(raw: Any, view: str, frame: Frame) -> dict[str, tuple[float, float]]:
    if not isinstance(raw, dict):
        raise ReviewError('landmarks: must be {name: {"x": px, "y": px}}')
    allowed = landmarks_of_view(view)
    points = {}
    for name, point in raw.items():
        if name not in allowed:
            valid = ", ".join(allowed) or "none"
            raise ReviewError(f"landmarks.{name}: not a landmark of view {view} (valid: {valid})")
        try:
            x, y = float(point["x"]), float(point["y"])
        except (KeyError, TypeError, ValueError):
            raise ReviewError(f'landmarks.{name}: must be {{"x": px, "y": px}}') from None
        if not (-0.5 <= x <= frame.cols - 0.5 and -0.5 <= y <= frame.rows - 0.5):
            raise ReviewError(f"landmarks.{name}: ({x:g}, {y:g}) is off the frame")
        points[name] = (x, y)
    return {name: points[name] for name in allowed if name in points}
