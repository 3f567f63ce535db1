"""What ``abdus predict`` writes: one JSON per image, an overlay PNG, the batch CSV.

Every write goes through ``abdus.io.atomic`` (a killed run leaves whole files only). Names: the
file stem, plus ``_f<frame>`` for multi-frame files and ``_r<region>`` where a frame holds more
than one tissue region (``UniqueNames`` adds ``_2``, ``_3`` ... if two inputs share a stem).

Overlay (``draw_overlay``): the grey frame as stored (source px), each caliper as its two
landmarks marked ``+`` joined by a line, long axes amber and short axes cyan, a low-confidence
landmark's mark in red; the view with its probability and every value in mm (or why it has none)
listed top-left.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from abdus.inference.predictor import LOW_LANDMARK_CONFIDENCE, Prediction
from abdus.io.atomic import atomic_path, atomic_write_json, atomic_write_text
from abdus.io.secondary_capture import write_secondary_capture
from abdus.io.types import UltrasoundImage
from abdus.taxonomy import MEASUREMENT_BY_CODE, MEASUREMENT_CODES

CSV_NAME = "predictions.csv"
CSV_COLUMNS = (
    "name",
    "file",
    "frame",
    "region",
    "view",
    "probability",
    *MEASUREMENT_CODES,
    "warnings",
    "error",
)
LONG_AXIS_RGB = (255, 191, 0)
SHORT_AXIS_RGB = (0, 210, 255)
LOW_CONFIDENCE_RGB = (255, 64, 64)
TEXT_RGB = (255, 255, 255)


def image_name(stem: str, frame: int, region: int | None, frames: int, regions: int) -> str:
    """``<stem>[_f<frame>][_r<region>]``: frame only for multi-frame files, region only when
    the frame has more than one tissue region (0-based indices)."""
    name = stem
    if frames > 1:
        name += f"_f{frame}"
    if regions > 1 and region is not None:
        name += f"_r{region}"
    return name


class UniqueNames:
    """Hands out names once: a repeated name gets ``_2``, ``_3`` ... (in the order asked)."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def take(self, name: str) -> str:
        """``name``, or the first free ``name_<k>``; case-insensitive (for such filesystems)."""
        candidate, k = name, 1
        while candidate.lower() in self._used:
            k += 1
            candidate = f"{name}_{k}"
        self._used.add(candidate.lower())
        return candidate


def source_json(path: Path, image: UltrasoundImage | None, region: int | None) -> dict[str, Any]:
    """The ``source`` block of a record: file, frame, region index and box (source px)."""
    box = None if image is None or image.region is None else [int(v) for v in image.region.box]
    return {
        "file": str(path),
        "frame": None if image is None else int(image.frame),
        "region": region,
        "region_box": box,
    }


def prediction_record(
    prediction: Prediction, source: dict[str, Any], *, model_id: str, backend: str
) -> dict[str, Any]:
    """The per-image JSON: source, model, view (+ its probability) and the prediction."""
    body = prediction.to_json()
    probs = prediction.view_probabilities
    return {
        "source": source,
        "model_id": model_id,
        "backend": backend,
        "view_probability": None if probs is None else probs[prediction.view],
        **body,
        "error": None,
    }


def error_record(
    source: dict[str, Any], message: str, *, model_id: str, backend: str
) -> dict[str, Any]:
    """The per-image JSON of an image (or file) that failed: everything null but the error."""
    return {
        "source": source,
        "model_id": model_id,
        "backend": backend,
        "view": None,
        "view_probability": None,
        "view_probabilities": None,
        "landmarks": {},
        "measurements_mm": {},
        "measurement_notes": {},
        "spacing_mm": None,
        "warnings": [],
        "error": message,
    }


def csv_row(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """One ``predictions.csv`` row from a per-image record (empty cells for nulls)."""
    source = record["source"]
    measured = record.get("measurements_mm") or {}
    probability = record.get("view_probability")
    row = {
        "name": name,
        "file": source["file"],
        "frame": "" if source["frame"] is None else source["frame"],
        "region": "" if source["region"] is None else source["region"],
        "view": record.get("view") or "",
        "probability": "" if probability is None else f"{probability:.4f}",
        "warnings": " | ".join(record.get("warnings") or []),
        "error": record.get("error") or "",
    }
    for code in MEASUREMENT_CODES:
        value = measured.get(code)
        row[code] = "" if value is None else f"{value:.2f}"
    return row


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write a per-image JSON atomically."""
    atomic_write_json(path, record)


def write_csv(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write ``predictions.csv`` atomically (columns ``CSV_COLUMNS``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _label(
    draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font, pad: int, colour=TEXT_RGB
) -> float:
    """``colour`` text on a black box with its top-left at ``xy`` (image px); the box bottom."""
    left, top, right, bottom = draw.textbbox(xy, text, font=font)
    draw.rectangle((left - pad, top - pad, right + pad, bottom + pad), fill=(0, 0, 0))
    draw.text(xy, text, fill=colour, font=font)
    return bottom + pad


def _cross(draw: ImageDraw.ImageDraw, x: float, y: float, arm: float, colour, width: int) -> None:
    draw.line((x - arm, y, x + arm, y), fill=colour, width=width)
    draw.line((x, y - arm, x, y + arm), fill=colour, width=width)


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> str:
    """``text``, cut short with "..." where it would be wider than ``width`` (image px)."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "..."


def draw_overlay(image: UltrasoundImage, prediction: Prediction) -> Image.Image:
    """The frame (RGB, source px) with calipers, values in mm and the view (see module doc).

    The view and each measurement are listed top-left (a measurement in its axis colour); each
    caliper is tagged with its code beside its second landmark.
    """
    grey = np.clip(np.rint(image.pixels), 0, 255).astype(np.uint8)
    canvas = Image.fromarray(grey, "L").convert("RGB")
    draw = ImageDraw.Draw(canvas)
    H, W = image.shape
    scale = max(1, round(min(H, W) / 400))
    font = _font(12 * scale)
    probability = prediction.view_probabilities and prediction.view_probabilities[prediction.view]
    title = prediction.view + (f" ({probability:.2f})" if probability else "")
    if prediction.warnings:
        title += f"  [{len(prediction.warnings)} warning(s)]"
    title = _fit(draw, title, font, W - 8 * scale)
    y = _label(draw, (4 * scale, 4 * scale), title, font, scale) + 2 * scale
    marks = prediction.landmarks
    for code, value in prediction.measurements_mm.items():
        colour = SHORT_AXIS_RGB if code.endswith("_SA") else LONG_AXIS_RGB
        note = prediction.measurement_notes.get(code, "no value")
        text = f"{code} {value:.1f} mm" if value is not None else f"{code} n/a: {note}"
        text = _fit(draw, text, font, W - 8 * scale)
        y = _label(draw, (4 * scale, y), text, font, scale, colour) + 2 * scale
        a_name, b_name = MEASUREMENT_BY_CODE[code].landmarks
        if a_name not in marks or b_name not in marks:
            continue
        a, b = marks[a_name], marks[b_name]
        draw.line((a["x"], a["y"], b["x"], b["y"]), fill=colour, width=scale)
        for mark in (a, b):
            low = mark["confidence"] < LOW_LANDMARK_CONFIDENCE
            tint = LOW_CONFIDENCE_RGB if low else colour
            _cross(draw, mark["x"], mark["y"], 5 * scale, tint, scale)
        draw.text((b["x"] + 6 * scale, b["y"] + 2 * scale), code, fill=colour, font=font)
    return canvas


def write_overlay(path: Path, image: UltrasoundImage, prediction: Prediction) -> None:
    """Draw and write the overlay PNG atomically."""
    picture = draw_overlay(image, prediction)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")


def write_overlay_capture(
    path: str | Path, source_path: str | Path, image: UltrasoundImage, prediction: Prediction
) -> Path:
    """Write the overlay (``draw_overlay``) of ``image`` (a frame of the DICOM file
    ``source_path``) as an RGB Secondary Capture in the source's study, atomically; returns
    ``path``. For PACS viewers that cannot show the SR (``abdus.io.secondary_capture``)."""
    picture = np.asarray(draw_overlay(image, prediction))  # (H, W, 3) uint8, source px
    return write_secondary_capture(path, source_path, picture, frame=image.frame)


def measured_calipers(prediction: Prediction) -> Sequence[tuple[str, float, tuple, tuple]]:
    """(code, mm, a_xy, b_xy) of every measurement with a value (for the SR); a withheld one
    (null, see ``withheld_measurements``) is never among them."""
    out = []
    for code, value in prediction.measurements_mm.items():
        a_name, b_name = MEASUREMENT_BY_CODE[code].landmarks
        if (
            value is None
            or a_name not in prediction.landmarks
            or b_name not in prediction.landmarks
        ):
            continue
        a, b = prediction.landmarks[a_name], prediction.landmarks[b_name]
        out.append((code, float(value), (a["x"], a["y"]), (b["x"], b["y"])))
    return out


def withheld_measurements(prediction: Prediction) -> dict[str, str]:
    """Measurement code -> why it has no value, for each null measurement of the view (the SR
    records them so a PACS user sees why a measurement is missing)."""
    return {
        code: prediction.measurement_notes.get(code, "no value")
        for code, value in prediction.measurements_mm.items()
        if value is None
    }
