"""Exports of a review, written under ``REVIEWED/exports/``: a CSV of the measurements (mm), a
COCO keypoints file (the inverse of ``abdus.io.coco``, spacing kept per image) and one verified
DICOM SR per reviewed DICOM image (``abdus.io.sr`` with a ``Verification``)."""

from __future__ import annotations

import csv
import io
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from abdus.io.atomic import atomic_write_json, atomic_write_text
from abdus.io.coco import COCO_PIXEL_SHIFT
from abdus.io.reader import sniff_format
from abdus.io.sr import CaliperMeasurement, Verification, write_sr
from abdus.review.store import ItemState, ReviewStore
from abdus.taxonomy import MEASUREMENT_BY_CODE, MEASUREMENT_CODES, VIEWS, landmarks_of_view

EXPORTS = "exports"
CSV_COLUMNS = ("id", "name", "file", "frame", "patient_id", "status", "view", "reviewer", "time")
NOT_MEASURABLE = "not measurable (reviewer)"


def export_review(store: ReviewStore, *, organization: str = "abdus review") -> dict[str, Any]:
    """Write the CSV, COCO and SR exports of every accepted or corrected item; their paths."""
    folder = store.out / EXPORTS
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "csv": str(write_csv(store, folder / "measurements.csv")),
        "coco": str(write_coco(store, folder / "keypoints.coco.json")),
        "sr": [str(p) for p in write_verified_srs(store, folder / "sr", organization)],
    }


def write_csv(store: ReviewStore, path: Path) -> Path:
    """One row per reviewed item (rejected included): who, when, view and each mm value."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*CSV_COLUMNS, *MEASUREMENT_CODES])
    writer.writeheader()
    for item in store.items:
        state = store.states[item.id]
        if state.status == "todo":
            continue
        mm = store.measurements(item.id, state) if state.status != "rejected" else {}
        row = {
            "id": item.id,
            "name": item.name,
            "file": str(item.file),
            "frame": item.frame,
            "patient_id": item.patient_id,
            "status": state.status,
            "view": state.view,
            "reviewer": state.reviewer or "",
            "time": state.reviewed_at or "",
        }
        row.update(
            {code: "" if mm.get(code) is None else f"{mm[code]:.3f}" for code in MEASUREMENT_CODES}
        )
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())
    return path


def write_coco(store: ReviewStore, path: Path) -> Path:
    """COCO keypoints: one category per view (keypoints = the view's landmarks), one image per
    reviewed item (``file_name`` relative to the COCO file, ``view``, ``patient_id``,
    ``spacing_mm``), coordinates shifted +0.5 px (pixel centre -> pixel corner origin)."""
    categories = [
        {"id": v.index + 1, "name": v.name, "keypoints": list(landmarks_of_view(v.name))}
        for v in VIEWS
    ]
    images, annotations = [], []
    for number, (item, state) in enumerate(store.reviewed(), start=1):
        frame = store.frame(item.id)
        file_name = Path(os.path.relpath(item.file, path.parent)).as_posix()
        images.append(
            {
                "id": number,
                "file_name": file_name,
                "width": frame.cols,
                "height": frame.rows,
                "view": state.view,
                "patient_id": item.patient_id,
                "spacing_mm": None if frame.spacing_mm is None else list(frame.spacing_mm),
                "abdus_id": item.id,
            }
        )
        annotations.append(_annotation(number, state))
    coco = {"images": images, "annotations": annotations, "categories": categories}
    atomic_write_json(path, coco)
    return path


def _annotation(number: int, state: ItemState) -> dict[str, Any]:
    dropped = {lm for c in state.not_measurable for lm in MEASUREMENT_BY_CODE[c].landmarks}
    keypoints: list[float] = []
    for name in landmarks_of_view(state.view):
        point = state.landmarks.get(name)
        if point is None or name in dropped:
            keypoints += [0, 0, 0]  # v = 0: not labelled
        else:
            keypoints += [point[0] - COCO_PIXEL_SHIFT, point[1] - COCO_PIXEL_SHIFT, 2]
    view_index = next(v.index for v in VIEWS if v.name == state.view)
    return {
        "id": number,
        "image_id": number,
        "category_id": view_index + 1,
        "keypoints": keypoints,
        "num_keypoints": sum(1 for v in keypoints[2::3] if v),
    }


def write_verified_srs(store: ReviewStore, folder: Path, organization: str) -> list[Path]:
    """One SR per accepted or corrected DICOM item, VerificationFlag VERIFIED by its reviewer."""
    written = []
    for item, state in store.reviewed():
        if sniff_format(item.file) != "dicom":
            continue
        mm = store.measurements(item.id, state)
        calipers = []
        for code, value in mm.items():
            a, b = (state.landmarks.get(n) for n in MEASUREMENT_BY_CODE[code].landmarks)
            if value is not None and a is not None and b is not None:
                calipers.append(CaliperMeasurement(code, value, a, b))
        withheld = {code: NOT_MEASURABLE for code in state.not_measurable}
        reviewer = state.reviewer or store.reviewer or "unknown"
        time = datetime.fromisoformat(state.reviewed_at) if state.reviewed_at else datetime.now()
        verification = Verification(reviewer[:64], organization[:64], time)
        path = write_sr(
            folder / f"{item.id}.sr.dcm",
            item.file,
            calipers,
            view=state.view,
            frame=item.frame,
            model_id=item.model_id,
            withheld=withheld,
            verification=verification,
        )
        written.append(path)
    return written
