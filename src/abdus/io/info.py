"""``abdus info``: what a file holds — size, frames, pixel format, regions, spacing in mm;
for an abdus SR, its view, measurements in mm and caliper landmarks.

    describe_file(path, *, spacing_mm) -> dict      JSON-serialisable description of one file
    run_info(files, *, as_json, spacing_mm) -> int  prints descriptions; 0 if all read, else 1

Sizes and boxes are in source pixels; region boxes are ``[x0, y0, x1, y1]`` with x1 / y1
exclusive (DICOM's inclusive RegionLocationMax + 1). Spacing is ``[row_mm, col_mm]``. SR
landmarks are ``[x, y]`` in source pixels of the referenced frame (``abdus.io.sr``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from abdus.errors import AbdusInputError
from abdus.io.dicom import DicomHeader, header_of_dataset, iter_frames, parse_dicom_file
from abdus.io.images import check_spacing_mm, open_image, read_image
from abdus.io.reader import sniff_format
from abdus.io.sr import SrReport, is_sr_document, sr_report_from_dataset
from abdus.io.us_regions import UNIT_NAMES, RegionEntry, choose_tissue_region, resolve_spacing
from abdus.taxonomy import MEASUREMENT_BY_CODE

# PS3.3 C.8.5.5.1.1 / C.8.5.5.1.2: RegionSpatialFormat and RegionDataType codes.
SPATIAL_FORMAT_NAMES = {0: "none", 1: "2D", 2: "M-mode", 3: "spectral", 4: "waveform",
                        5: "graphics"}  # fmt: skip
DATA_TYPE_NAMES = {0: "none", 1: "tissue", 2: "color flow", 3: "PW spectral Doppler",
                   4: "CW spectral Doppler", 5: "Doppler mean trace", 6: "Doppler mode trace",
                   7: "Doppler max trace", 8: "volume trace", 10: "ECG trace",
                   11: "pulse trace", 12: "phonocardiogram trace", 13: "gray bar",
                   14: "color bar", 15: "integrated backscatter", 16: "area trace",
                   17: "d(area)/dt", 18: "other physiological input"}  # fmt: skip


def region_summary(entry: RegionEntry) -> dict[str, Any]:
    """One ultrasound region as a JSON-serialisable dict; box in exclusive source pixels."""
    region = entry.region
    return {
        "index": entry.index,
        "box": list(region.box),
        "spacing_mm": None if region.spacing_mm is None else list(region.spacing_mm),
        "spatial_format": region.spatial_format,
        "spatial_format_name": SPATIAL_FORMAT_NAMES.get(region.spatial_format, "unknown"),
        "data_type": region.data_type,
        "data_type_name": DATA_TYPE_NAMES.get(region.data_type, "unknown"),
        "flags": entry.flags,
        "units": [UNIT_NAMES.get(u, str(u)) if u is not None else None for u in entry.units],
        "flipped_x": region.flipped_x,
        "flipped_y": region.flipped_y,
        "tissue": region.is_tissue_2d,
    }


def _uid_dict(value: object) -> dict[str, str] | None:
    text = str(value or "").strip()
    return {"uid": text, "name": UID(text).name} if text else None


def describe_dicom(path: str | Path, *, spacing_mm: float | None = None) -> dict[str, Any]:
    """``describe_file`` for DICOM: an image (``describe_dicom_image``) or an abdus SR."""
    path = Path(path)
    ds, notes = parse_dicom_file(path)
    if is_sr_document(ds):
        return describe_sr(path, ds, notes)
    return describe_dicom_image(header_of_dataset(path, ds, notes), spacing_mm=spacing_mm)


def describe_dicom_image(header: DicomHeader, *, spacing_mm: float | None) -> dict[str, Any]:
    """A DICOM image's description; decodes the first and last frames to check the pixels."""
    for _ in iter_frames(header, sorted({0, header.frames - 1})):
        pass  # decoding proves the pixel data is complete
    chosen, note = choose_tissue_region(header.region_entries)
    spacing, source, warnings = resolve_spacing(chosen, header.pixel_spacing, spacing_mm, "user")
    ds = header.dataset
    return {
        "path": str(header.path),
        "format": "dicom",
        "size": [header.rows, header.cols],
        "frames": header.frames,
        "photometric": header.photometric,
        "bits_stored": header.bits_stored,
        "transfer_syntax": _uid_dict(header.syntax),
        "modality": str(ds.get("Modality", "")).strip() or None,
        "sop_class": _uid_dict(ds.get("SOPClassUID")),
        "regions": [region_summary(entry) for entry in header.region_entries],
        "tissue_regions": [e.index for e in header.region_entries if e.region.is_tissue_2d],
        "chosen_region": next((e.index for e in header.region_entries if e.region is chosen), None),
        "spacing_mm": None if spacing is None else [float(s) for s in spacing],
        "spacing_source": source,
        "warnings": [*header.warnings, *([note] if note else []), *warnings],
    }


def _landmark_names(code: str) -> tuple[str, str]:
    """The two landmarks of a measurement code (taxonomy), or ``<code>_a`` / ``_b``."""
    known = MEASUREMENT_BY_CODE.get(code)
    return known.landmarks if known else (f"{code}_a", f"{code}_b")


def _sr_block(report: SrReport) -> dict[str, Any]:
    """The ``sr`` entry of an SR's description: view, mm values, landmarks in source px."""
    landmarks: dict[str, list[float]] = {}
    for caliper in report.calipers:
        first, second = _landmark_names(caliper.code)
        landmarks.update({first: list(caliper.a), second: list(caliper.b)})
    return {
        "view": report.view,
        "measurements_mm": {caliper.code: caliper.value_mm for caliper in report.calipers},
        "landmarks": landmarks,
        "landmark_space": "source_px",
        "source_image": {
            "sop_class": _uid_dict(report.source_sop_class_uid),
            "sop_instance_uid": report.source_sop_instance_uid,
            "frame": report.source_frame,
        },
        "model_id": report.model_id,
    }


def describe_sr(path: Path, ds: Dataset, notes: Sequence[str] = ()) -> dict[str, Any]:
    """An abdus SR's description: ``sr`` holds what ``abdus.io.sr.read_sr_report`` reads."""
    return {
        "path": str(path),
        "format": "dicom",
        "modality": str(ds.get("Modality", "")).strip() or None,
        "sop_class": _uid_dict(ds.get("SOPClassUID")),
        "sr": _sr_block(sr_report_from_dataset(ds, path)),
        "warnings": list(notes),
    }


def describe_image(path: str | Path, *, spacing_mm: float | None = None) -> dict[str, Any]:
    """``describe_file`` for PNG / JPEG; decodes the last frame to check the file."""
    path = Path(path)
    with open_image(path) as image:
        frames = int(getattr(image, "n_frames", 1))
        mode, fmt, (cols, rows) = image.mode, str(image.format).lower(), image.size
    last = read_image(path, spacing_mm=spacing_mm, frames=[frames - 1])[0]
    return {
        "path": str(path),
        "format": fmt,
        "size": [rows, cols],
        "frames": frames,
        "photometric": last.photometric,
        "bits_stored": 16 if mode.startswith("I") else 8,
        "transfer_syntax": None,
        "modality": None,
        "sop_class": None,
        "regions": [],
        "tissue_regions": [],
        "chosen_region": None,
        "spacing_mm": None if last.spacing_mm is None else list(last.spacing_mm),
        "spacing_source": last.spacing_source,
        "warnings": list(last.warnings),
    }


def describe_file(path: str | Path, *, spacing_mm: float | None = None) -> dict[str, Any]:
    """What a DICOM / PNG / JPEG file holds, as a JSON-serialisable dict.

    Keys: path, format ('dicom' | 'png' | 'jpeg'), size [rows, cols] (source px), frames,
    photometric, bits_stored, transfer_syntax {uid, name} | None, modality, sop_class
    {uid, name} | None, regions (list of ``region_summary``), tissue_regions (indices),
    chosen_region (index used without region splitting), spacing_mm [row_mm, col_mm] | None,
    spacing_source, warnings. ``spacing_mm`` (mm/px) is used only if the file gives none.
    An abdus SR has path, format, modality, sop_class, warnings and ``sr``: view,
    measurements_mm {code: mm}, landmarks {name: [x, y]} in landmark_space 'source_px' (of the
    referenced frame), source_image {sop_class, sop_instance_uid, frame (0-based) | None},
    model_id. Raises AbdusInputError for a file that cannot be read.
    """
    spacing_mm = check_spacing_mm(spacing_mm)
    if sniff_format(path) == "dicom":
        return describe_dicom(path, spacing_mm=spacing_mm)
    return describe_image(path, spacing_mm=spacing_mm)


def _mm(spacing: Sequence[float] | None) -> str:
    return "none" if spacing is None else f"{spacing[0]:.4g} x {spacing[1]:.4g} mm"


def _region_line(region: dict[str, Any], chosen: int | None) -> str:
    x0, y0, x1, y1 = region["box"]
    kind = f"{region['spatial_format_name']} {region['data_type_name']}"
    if region["spacing_mm"] is not None:
        physical = f"spacing {_mm(region['spacing_mm'])}"
    else:
        physical = "units x: {}, y: {}".format(*region["units"])
    flips = [axis for axis in ("x", "y") if region[f"flipped_{axis}"]]
    text = f"    [{region['index']}] {kind:<30} box x [{x0}, {x1}) y [{y0}, {y1})  {physical}"
    if flips:
        text += f"  (physical {' and '.join(flips)} reversed)"
    return text + ("  <- used" if region["index"] == chosen else "")


def _kind(info: dict[str, Any]) -> str:
    kind = info["format"].upper()
    if info["sop_class"]:
        kind += f", {info['sop_class']['name']}"
    if info["modality"]:
        kind += f", modality {info['modality']}"
    return kind


def _xy(point: Sequence[float]) -> str:
    return f"({point[0]:.2f}, {point[1]:.2f})"


def format_sr(info: dict[str, Any]) -> str:
    """A readable multi-line block for the description of an abdus SR."""
    sr = info["sr"]
    image = sr["source_image"]
    source = image["sop_instance_uid"] or "none"
    if image["sop_class"]:
        source += f" ({image['sop_class']['name']})"
    if image["frame"] is not None:
        source += f", frame {image['frame']} (0-based)"
    lines = [info["path"], f"  format           {_kind(info)}"]
    lines.append(f"  view             {sr['view'] or 'none'}")
    lines.append(f"  source image     {source}")
    lines.append(f"  model            {sr['model_id'] or 'unknown'}")
    count = len(sr["measurements_mm"])
    lines.append(
        f"  measurements     {count} in mm; landmarks (x, y) in source px of the source image"
        if count
        else "  measurements     none"
    )
    for code, value in sr["measurements_mm"].items():
        ends = "  ".join(f"{name} {_xy(sr['landmarks'][name])}" for name in _landmark_names(code))
        lines.append(f"    {code:<8} {value:8.2f} mm   {ends}")
    lines += [f"  warning          {warning}" for warning in info["warnings"]]
    return "\n".join(lines)


def format_description(info: dict[str, Any]) -> str:
    """A readable multi-line block for one ``describe_file`` dict."""
    if "sr" in info:
        return format_sr(info)
    rows, cols = info["size"]
    lines = [info["path"]]
    lines.append(f"  format           {_kind(info)}")
    lines.append(f"  size             {rows} x {cols} px (rows x cols), {info['frames']} frame(s)")
    lines.append(f"  pixels           {info['photometric']}, {info['bits_stored']} bits")
    if info["transfer_syntax"]:
        syntax = info["transfer_syntax"]
        lines.append(f"  transfer syntax  {syntax['name']} ({syntax['uid']})")
    if info["format"] == "dicom":
        tissue = ", ".join(str(i) for i in info["tissue_regions"]) or "none"
        count = len(info["regions"])
        regions = (
            f"{count} (tissue: {tissue})" if count else "none (no SequenceOfUltrasoundRegions)"
        )
        lines.append(f"  regions          {regions}")
        lines += [_region_line(region, info["chosen_region"]) for region in info["regions"]]
    spacing = _mm(info["spacing_mm"])
    if info["spacing_mm"] is not None:
        spacing += "/px (row x col)"
    lines.append(f"  spacing          {spacing}, source: {info['spacing_source']}")
    lines += [f"  warning          {warning}" for warning in info["warnings"]]
    return "\n".join(lines)


def _problem(err: AbdusInputError) -> str:
    """The message of ``err`` without its leading 'path: '."""
    text = str(err)
    prefix = f"{err.path}: " if err.path else ""
    return text[len(prefix) :] if prefix and text.startswith(prefix) else text


def run_info(
    files: Sequence[str], *, as_json: bool = False, spacing_mm: float | None = None
) -> int:
    """Print what each file holds (text blocks, or one JSON list); 0 if all read, else 1.

    A file that cannot be read prints ``error: <path>: <problem>`` on stderr, and in JSON
    mode appears as ``{"path": ..., "error": ...}``; the other files still go through.
    """
    spacing_mm = check_spacing_mm(spacing_mm)
    results: list[dict[str, Any]] = []
    failed = 0
    for name in files:
        try:
            info = describe_file(name, spacing_mm=spacing_mm)
        except AbdusInputError as err:
            failed += 1
            print(f"error: {err.path or name}: {_problem(err)}", file=sys.stderr)
            results.append({"path": str(name), "error": _problem(err)})
            continue
        results.append(info)
        if not as_json:
            print(("\n" if len(results) > 1 else "") + format_description(info))
    if as_json:
        print(json.dumps(results, indent=2, allow_nan=False))
    return 1 if failed else 0
