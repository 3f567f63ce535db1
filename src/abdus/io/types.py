"""What the readers return: one grayscale image per frame (and per tissue region), with spacing.

Coordinate spaces
-----------------
*source pixels*: ``(x, y)`` = (column, row) in the full frame as stored in the file, pixel
centres at integer coordinates, origin at the top-left pixel centre. Landmarks in manifests
are in source pixels. Spacing is ``(row_mm, col_mm)``: millimetres per pixel along y and x.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Where the spacing used for measurements came from, in order of preference.
SPACING_SOURCES = ("ultrasound_region", "pixel_spacing", "manifest", "user", "none")


@dataclass(frozen=True)
class Region:
    """One entry of a DICOM ``SequenceOfUltrasoundRegions`` (or the whole image).

    ``box`` is ``(x0, y0, x1, y1)`` in source pixels, inclusive of x0/y0, exclusive of x1/y1.
    ``spacing_mm`` is ``(row_mm, col_mm)``, always positive; a negative physical delta in the
    file is recorded in ``flipped_x`` / ``flipped_y`` (physical axis runs against pixel axis).
    """

    box: tuple[int, int, int, int]
    spacing_mm: tuple[float, float] | None
    spatial_format: int | None = None  # RegionSpatialFormat: 1 = 2-D tissue/flow
    data_type: int | None = None  # RegionDataType: 1 = tissue
    flipped_x: bool = False
    flipped_y: bool = False

    @property
    def is_tissue_2d(self) -> bool:
        """True for a 2-D tissue region (RegionSpatialFormat 1, RegionDataType 1)."""
        return self.spatial_format == 1 and self.data_type == 1


@dataclass
class UltrasoundImage:
    """One grayscale frame ready for preprocessing.

    ``pixels``: (H, W) float32 in [0, 255], the full frame in source pixels.
    ``spacing_mm``: (row_mm, col_mm) used for measurements, or None when nothing gives it
    (then measurements are null; the image can still be classified).
    ``region``: the tissue region this image stands for (its box may be the whole frame).
    """

    pixels: np.ndarray
    spacing_mm: tuple[float, float] | None
    spacing_source: str
    source: str
    frame: int = 0
    region: Region | None = None
    regions: tuple[Region, ...] = ()
    photometric: str | None = None
    # (H, W) float32 colour saturation in [0, 255] (max - min of R, G, B) for colour sources,
    # None for grayscale ones. Lets the classification mask find coloured overlays.
    saturation: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) in source pixels."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])
