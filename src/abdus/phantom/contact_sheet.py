"""A contact sheet: one example screen per view in a grid, the view name under each.

It is for a person to look at a generated cohort at a glance (``contact_sheet.png`` in the
cohort folder). The truth landmarks are drawn as small rings (red: long axis, green: short axis,
the colours of the paper's Fig. 1), so a wrong caliper position shows at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from abdus.io.atomic import atomic_path

TILE_WIDTH, TILE_HEIGHT = 320, 240  # px of the box each screen is fitted into
_LABEL_HEIGHT = 24  # px under each tile for the view name
_LONG_AXIS, _SHORT_AXIS = (255, 60, 60), (60, 230, 60)  # paper Fig. 1: red long, green short


@dataclass(frozen=True)
class Tile:
    """One thumbnail: (h, w, 3) uint8 RGB pixels and the caption under it."""

    caption: str
    pixels: np.ndarray


def make_tile(
    screen: np.ndarray,
    caption: str,
    landmarks: Mapping[str, tuple[float, float]] | None = None,
    box: tuple[int, int] = (TILE_WIDTH, TILE_HEIGHT),
) -> Tile:
    """Shrink an (H, W, 3) uint8 screen to fit ``box`` (width, height) px and ring landmarks.

    ``landmarks``: {name: (x, y)} screen px of the full-size screen.
    """
    height, width = screen.shape[:2]
    scale = min(box[0] / width, box[1] / height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray(np.ascontiguousarray(screen, dtype=np.uint8)).convert("RGB")
    image = image.resize(size, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for name, (x, y) in (landmarks or {}).items():
        colour = _SHORT_AXIS if "_sa_" in name else _LONG_AXIS
        cx, cy, r = x * scale, y * scale, 4
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=2)
    return Tile(caption=caption, pixels=np.asarray(image))


def _caption_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=15)  # Pillow's built-in font, scalable with FreeType
    except (TypeError, ImportError):  # older Pillow or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_contact_sheet(tiles: Sequence[Tile], columns: int = 4) -> np.ndarray:
    """Lay tiles out in a grid, each centred in its box with its caption right under it.

    Returns the (H, W, 3) uint8 sheet: ``columns`` cells of (max tile width + 8) px across.
    """
    if not tiles:
        raise ValueError("a contact sheet needs at least one tile")
    cell_w = max(t.pixels.shape[1] for t in tiles) + 8
    box_h = max(t.pixels.shape[0] for t in tiles)
    cell_h = box_h + _LABEL_HEIGHT + 8
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    font = _caption_font()
    for i, tile in enumerate(tiles):
        left, top = (i % columns) * cell_w, (i // columns) * cell_h
        h, w = tile.pixels.shape[:2]
        sheet.paste(Image.fromarray(tile.pixels), (left + (cell_w - w) // 2, top + box_h - h + 4))
        draw.text((left + 8, top + box_h + 8), tile.caption, fill=(240, 240, 240), font=font)
    return np.asarray(sheet)


def write_contact_sheet(path: str | Path, tiles: Sequence[Tile], columns: int = 4) -> None:
    """Write the contact sheet of ``tiles`` as a PNG at ``path`` (atomically)."""
    sheet = render_contact_sheet(tiles, columns)
    with atomic_path(path) as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")
