"""Ultrasound regions and spacing of a DICOM file (PS3.3 C.8.5.5 "US Region Calibration").

Parses ``SequenceOfUltrasoundRegions`` into :class:`abdus.io.types.Region` entries, picks the
tissue region to measure in, and resolves the spacing in mm, in order of preference:
1. ``SequenceOfUltrasoundRegions``: the 2-D tissue regions (RegionSpatialFormat 1,
   RegionDataType 1) whose PhysicalUnitsX/YDirection are both cm (code 3): mm = |delta| * 10.
2. ``PixelSpacing`` (row, col) in mm (``ImagerPixelSpacing`` is deliberately not used).
3. the caller's ``spacing_mm`` (isotropic mm/px, from the manifest or the command line).
4. none: ``spacing_mm=None``, ``spacing_source="none"`` and a warning; never a guess.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from abdus.errors import AbdusInputError
from abdus.io.images import caller_spacing
from abdus.io.types import Region

# PS3.3 C.8.5.5.1: codes of PhysicalUnitsX/YDirection, RegionSpatialFormat, RegionDataType.
UNIT_NAMES = {0: "none", 1: "percent", 2: "dB", 3: "cm", 4: "seconds", 5: "hertz",
              6: "dB/seconds", 7: "cm/sec", 8: "cm2", 9: "cm2/sec", 10: "cm3",
              11: "cm3/sec", 12: "degrees"}  # fmt: skip
UNIT_CM = 3
_BOX_KEYWORDS = (
    "RegionLocationMinX0",
    "RegionLocationMinY0",
    "RegionLocationMaxX1",
    "RegionLocationMaxY1",
)


@dataclass(frozen=True)
class RegionEntry:
    """One ``SequenceOfUltrasoundRegions`` item: the ``Region`` plus what only reports need."""

    index: int  # position in the sequence
    region: Region
    flags: int | None
    units: tuple[int | None, int | None]  # (PhysicalUnitsXDirection, ...YDirection) codes


def _int_or_none(item: Dataset, keyword: str) -> int | None:
    """An integer element's value; None when absent, empty or not a single integer."""
    value = item.get(keyword)
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _region_box(
    item: Dataset, index: int, rows: int, cols: int, path: Path, warnings: list[str]
) -> tuple[int, int, int, int]:
    """DICOM's inclusive (MinX0, MinY0, MaxX1, MaxY1) -> exclusive source-pixel box.

    A box one pixel past the edge (a common off-by-one) is clipped with a warning; anything
    else outside the image is an error.
    """
    x0, y0, x1, y1 = (int(item.get(keyword)) for keyword in _BOX_KEYWORDS)
    box = (x0, y0, x1 + 1, y1 + 1)
    clipped = (x0, y0, min(x1 + 1, cols), min(y1 + 1, rows))
    inside = 0 <= x0 < clipped[2] and 0 <= y0 < clipped[3]
    if not inside or x1 + 1 > cols + 1 or y1 + 1 > rows + 1:
        raise AbdusInputError(
            f"ultrasound region {index} box x {x0}..{x1}, y {y0}..{y1} lies outside "
            f"the {cols} x {rows} image",
            path,
        )
    if clipped != box:
        warnings.append(f"ultrasound region {index} box ends 1 px past the image; clipped")
    return clipped


def _region_spacing(
    item: Dataset, index: int, units: tuple[int | None, int | None], warnings: list[str]
) -> tuple[tuple[float, float] | None, bool, bool]:
    """((row_mm, col_mm) or None, flipped_x, flipped_y) from PhysicalDeltaX/Y in cm."""
    delta_x, delta_y = (float(item.get(k) or 0.0) for k in ("PhysicalDeltaX", "PhysicalDeltaY"))
    flipped = (delta_x < 0, delta_y < 0)
    if units != (UNIT_CM, UNIT_CM):
        return None, *flipped
    if not all(math.isfinite(d) and d != 0 for d in (delta_x, delta_y)):
        warnings.append(f"ultrasound region {index} has a zero physical delta; no spacing")
        return None, *flipped
    # Negative deltas: the physical axis runs against the pixel axis; lengths use |delta|.
    return (abs(delta_y) * 10.0, abs(delta_x) * 10.0), *flipped  # cm -> mm


def parse_regions(
    ds: Dataset, rows: int, cols: int, path: Path
) -> tuple[list[RegionEntry], list[str]]:
    """All ``SequenceOfUltrasoundRegions`` items of ``ds`` (PS3.3 C.8.5.5) and warnings."""
    entries: list[RegionEntry] = []
    warnings: list[str] = []
    for index, item in enumerate(ds.get("SequenceOfUltrasoundRegions") or []):
        if any(item.get(keyword) is None for keyword in _BOX_KEYWORDS):
            warnings.append(f"ultrasound region {index} has no location; ignored")
            continue
        units = (_int_or_none(item, "PhysicalUnitsXDirection"),
                 _int_or_none(item, "PhysicalUnitsYDirection"))  # fmt: skip
        flags = _int_or_none(item, "RegionFlags")
        box = _region_box(item, index, rows, cols, path, warnings)
        try:
            spacing, flipped_x, flipped_y = _region_spacing(item, index, units, warnings)
            formats = (_int_or_none(item, "RegionSpatialFormat"),
                       _int_or_none(item, "RegionDataType"))  # fmt: skip
        except (TypeError, ValueError) as err:
            warnings.append(f"ultrasound region {index} is malformed ({err}); ignored")
            continue
        region = Region(box, spacing, *formats, flipped_x=flipped_x, flipped_y=flipped_y)
        if region.is_tissue_2d and spacing is None:
            names = tuple(UNIT_NAMES.get(u, str(u)) for u in units)
            warnings.append(
                f"tissue region {index} gives no length spacing (units x: {names[0]}, "
                f"y: {names[1]})"
            )
        entries.append(RegionEntry(index, region, flags, units))
    return entries, warnings


def _area(region: Region) -> int:
    x0, y0, x1, y1 = region.box
    return (x1 - x0) * (y1 - y0)


def choose_tissue_region(entries: Sequence[RegionEntry]) -> tuple[Region | None, str | None]:
    """The largest 2-D tissue region (first on ties) and a note when others differ in spacing."""
    tissue = [entry.region for entry in entries if entry.region.is_tissue_2d]
    if not tissue:
        return None, None
    chosen = max(tissue, key=_area)  # max keeps the first of equal areas
    spacings = {region.spacing_mm for region in tissue}
    if len(spacings) == 1:
        return chosen, None
    index = next(entry.index for entry in entries if entry.region is chosen)
    return chosen, (
        f"{len(tissue)} tissue regions with different spacing; using the largest "
        f"(region {index}); read with split_regions=True to measure each"
    )


def pixel_spacing_of(ds: Dataset, warnings: list[str]) -> tuple[float, float] | None:
    """``PixelSpacing`` (row_mm, col_mm) if present and valid, else None (with a warning)."""
    value = ds.get("PixelSpacing")
    if value is None:
        return None
    try:
        row_mm, col_mm = (float(v) for v in value)
    except (TypeError, ValueError):
        warnings.append(f"PixelSpacing {value!r} is not two numbers; ignored")
        return None
    if not all(math.isfinite(v) and v > 0 for v in (row_mm, col_mm)):
        warnings.append(f"PixelSpacing {row_mm}, {col_mm} is not positive; ignored")
        return None
    return row_mm, col_mm


def resolve_spacing(
    region: Region | None,
    pixel_spacing: tuple[float, float] | None,
    spacing_mm: float | None,
    spacing_source: str,
) -> tuple[tuple[float, float] | None, str, list[str]]:
    """The (row_mm, col_mm) spacing for an image of ``region``, its source and warnings.

    ``pixel_spacing``: the file's valid ``PixelSpacing`` (``pixel_spacing_of``) or None;
    ``spacing_mm``: the caller's isotropic mm/px, used only when the file gives none.
    """
    if region is not None and region.spacing_mm is not None:
        spacing, source = region.spacing_mm, "ultrasound_region"
    elif pixel_spacing is not None:
        spacing, source = pixel_spacing, "pixel_spacing"
    else:
        why = "the file has no ultrasound tissue region in cm and no PixelSpacing"
        return caller_spacing(spacing_mm, spacing_source, why)
    warnings = []
    if spacing_mm is not None and max(abs(s - spacing_mm) / s for s in spacing) > 0.01:
        warnings.append(
            f"spacing_mm={spacing_mm} was given but the file's {source} says "
            f"{spacing[0]:.4g} x {spacing[1]:.4g} mm (row x col); the file's is used"
        )
    return spacing, source, warnings
