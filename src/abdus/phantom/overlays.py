"""Burned-in screen overlays: view text, body marker, depth ruler, settings text, colour bar.

Real scanner screens carry annotations that give the view away (the paper masks "view-
informative icons and texts" before training the classifier, section 2.1). We draw them as a
scanner does, outside the sector where possible, and return the box of every item so the
masking can be checked. The view text is right ~85% of the time, absent ~8% and wrong ~7% (a
neighbouring view's label), so a classifier that reads it is caught out.

Text uses Pillow's built-in default font (no font files); glyph masks are cached.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from abdus.phantom.scan import ScreenLayout
from abdus.taxonomy import VIEW_NAMES, view_by_name

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) screen px, exclusive max

P_LABEL_RIGHT, P_LABEL_ABSENT = 0.85, 0.08  # the rest (~7%) shows a neighbouring view's label

# Views a sonographer may mislabel a view as: same organ other plane, or other side / lobe.
NEIGHBOURS: dict[str, tuple[str, ...]] = {
    "others": ("liver_right_trans", "kidney_right_long", "spleen_long", "liver_left_long"),
    "liver_right_long": ("liver_right_trans", "kidney_right_long", "liver_left_long"),
    "liver_right_trans": ("liver_right_long", "liver_left_trans"),
    "liver_left_long": ("liver_left_trans", "liver_right_long"),
    "liver_left_trans": ("liver_left_long", "liver_right_trans"),
    "kidney_right_long": ("kidney_right_trans", "kidney_left_long", "liver_right_long"),
    "kidney_right_trans": ("kidney_right_long", "kidney_left_trans"),
    "kidney_left_long": ("kidney_left_trans", "kidney_right_long", "spleen_long"),
    "kidney_left_trans": ("kidney_left_long", "kidney_right_trans"),
    "spleen_long": ("spleen_trans", "kidney_left_long"),
    "spleen_trans": ("spleen_long", "kidney_left_trans"),
}

# Probe mark on the body pictogram: (x, y) in the torso box (patient's right on screen left),
# and the mark's angle in degrees (90 = longitudinal, 0 = transverse).
_MARKER: dict[str, tuple[float, float, float]] = {
    "liver_right_long": (0.33, 0.40, 90.0),
    "liver_right_trans": (0.35, 0.42, 15.0),
    "liver_left_long": (0.50, 0.34, 90.0),
    "liver_left_trans": (0.50, 0.36, 0.0),
    "kidney_right_long": (0.18, 0.52, 80.0),
    "kidney_right_trans": (0.18, 0.52, 5.0),
    "kidney_left_long": (0.82, 0.52, 100.0),
    "kidney_left_trans": (0.82, 0.52, -5.0),
    "spleen_long": (0.80, 0.40, 110.0),
    "spleen_trans": (0.80, 0.40, 20.0),
}

_PROBES = ("C5-1  ABD", "C1-5  Abdomen", "6C1  ABD GEN", "C5-2  ABD", "CA1-7  Abd")
_COLOURS = ((235, 235, 235), (255, 255, 255), (255, 250, 150), (190, 215, 255), (160, 250, 160))


@lru_cache(maxsize=512)
def _text_mask(text: str, size: int) -> np.ndarray:
    """(h, w) float32 coverage in [0, 1] of ``text`` in the default font at ``size`` px."""
    font = ImageFont.load_default(size=size)
    x0, y0, x1, y1 = font.getbbox(text)
    image = Image.new("L", (max(x1 - x0, 1), max(y1 - y0, 1)), 0)
    ImageDraw.Draw(image).text((-x0, -y0), text, font=font, fill=255)
    return np.asarray(image, dtype=np.float32) / 255.0


def _blend(screen: np.ndarray, x: int, y: int, alpha: np.ndarray, colour: tuple) -> Box | None:
    """Alpha-blend ``colour`` into the screen at (x, y); return the drawn box (clipped)."""
    h, w = alpha.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, screen.shape[1]), min(y + h, screen.shape[0])
    if x0 >= x1 or y0 >= y1:
        return None
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x, None]
    patch = screen[y0:y1, x0:x1].astype(np.float32)
    screen[y0:y1, x0:x1] = (patch * (1.0 - a) + np.asarray(colour, np.float32) * a + 0.5).astype(
        np.uint8
    )
    return x0, y0, x1, y1


def text(screen: np.ndarray, x: int, y: int, string: str, size: int, colour: tuple) -> Box | None:
    """Draw ``string`` with its top-left at screen px (x, y); return its box."""
    return _blend(screen, x, y, _text_mask(string, size), colour)


def _sector_free(layout: ScreenLayout, box: Box) -> bool:
    """True when no pixel of ``box`` lies inside the imaging sector."""
    xs = np.arange(box[0], box[2], dtype=np.float32)
    ys = np.arange(box[1], box[3], dtype=np.float32)
    x_mm, z_mm = layout.to_mm(xs[None, :], ys[:, None])
    return not bool(layout.probe.inside(x_mm, z_mm, margin_mm=-2.0 * layout.spacing_mm).any())


def choose_label(view: str, rng: np.random.Generator) -> str | None:
    """The view text a sonographer burned in: right, absent or a neighbouring view's label."""
    r = rng.random()
    if r < P_LABEL_RIGHT:
        return view_by_name(view).label
    if r < P_LABEL_RIGHT + P_LABEL_ABSENT:
        return None
    options = NEIGHBOURS[view]
    return view_by_name(options[int(rng.integers(len(options)))]).label


def _view_of_label(label: str) -> str:
    return next(name for name in VIEW_NAMES if view_by_name(name).label == label)


def body_marker(
    screen: np.ndarray,
    x: int,
    y: int,
    size: int,
    view: str,
    rng: np.random.Generator,
    colour: tuple,
) -> Box | None:
    """Torso pictogram with the probe mark of ``view`` (others: anywhere)."""
    if view in _MARKER:
        mx, my, angle = _MARKER[view]
    else:
        mx, my, angle = rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.8), rng.uniform(0, 180)
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    w = max(1, size // 28)
    draw.ellipse((size * 0.38, 0, size * 0.62, size * 0.2), outline=200, width=w)  # head
    draw.rounded_rectangle(
        (size * 0.12, size * 0.22, size * 0.88, size * 0.98), radius=size // 6, outline=200, width=w
    )
    cx, cy = size * (0.12 + 0.76 * mx), size * (0.22 + 0.76 * my)
    dx, dy = (
        0.16 * size * math.cos(math.radians(angle)),
        -0.16 * size * math.sin(math.radians(angle)),
    )
    draw.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=255, width=max(2, size // 12))
    draw.ellipse((cx - dx - 2, cy - dy - 2, cx - dx + 2, cy - dy + 2), fill=255)  # orientation dot
    return _blend(screen, x, y, np.asarray(image, np.float32) / 255.0, colour)


def depth_ruler(
    screen: np.ndarray, layout: ScreenLayout, x: int, size: int, focus_mm: float, colour: tuple
) -> Box | None:
    """Vertical depth scale from the skin to the full depth: ticks each cm, numbers each
    5 cm, a focus marker; drawn at screen column ``x``."""
    probe, s = layout.probe, layout.spacing_mm
    y_skin = layout.apex_px[1] + probe.radius_mm / s
    depth = probe.depth_mm
    h = math.ceil(depth / s) + size + 2
    alpha = np.zeros((h, 6 * size), np.float32)
    top = size // 2
    alpha[top : top + int(depth / s) + 1, 0] = 1.0
    for cm in range(int(depth // 10) + 1):
        yy = top + round(cm * 10.0 / s)
        major = cm % 5 == 0
        alpha[yy, : (size // 2 if major else size // 4) + 1] = 1.0
        if major and cm:
            label = _text_mask(str(cm), size)
            y0 = yy - label.shape[0] // 2
            alpha[y0 : y0 + label.shape[0], size : size + label.shape[1]] = label
    yf = top + round(focus_mm / s)
    for i in range(size // 3):  # focus triangle pointing at the scale
        alpha[yf - i : yf + i + 1, size // 2 + 2 + i] = 1.0
    return _blend(screen, x, round(y_skin) - top, alpha, colour)


def colour_bar(screen: np.ndarray, x: int, y: int, w: int, h: int) -> Box:
    """Grayscale display map: black at the bottom to white at the top, with a frame."""
    ramp = np.linspace(255, 0, h)[:, None].repeat(w, 1)
    ramp[[0, -1], :] = 180
    ramp[:, [0, -1]] = 180
    screen[y : y + h, x : x + w] = ramp[:, :, None].astype(np.uint8)
    return x, y, x + w, y + h


def _view_text(
    screen: np.ndarray,
    layout: ScreenLayout,
    label: str,
    size: int,
    colour: tuple,
    rng: np.random.Generator,
) -> Box | None:
    """The view label: at the top-left corner of the region box (outside the fan) or of the
    screen."""
    mask = _text_mask(label, size + int(rng.integers(0, 5)))
    x0, y0 = layout.region_box[0] + 4, layout.region_box[1] + 3
    corner = (x0, y0, x0 + mask.shape[1], y0 + mask.shape[0])
    if rng.random() < 0.5 or not _sector_free(layout, corner):
        x0, y0 = 6, 4
    return _blend(screen, x0, y0, mask, colour)


def _settings_text(
    screen: np.ndarray,
    layout: ScreenLayout,
    acq: dict[str, Any],
    size: int,
    colour: tuple,
    rng: np.random.Generator,
) -> list[Box | None]:
    """Probe / safety indices top right; mode, frequency, gain, range, depth, frame rate in
    the left panel, with the grayscale colour bar under them."""
    width, height = screen.shape[1], screen.shape[0]
    probe = _PROBES[int(rng.integers(len(_PROBES)))]
    top = f"{probe}  MI {rng.uniform(0.6, 1.4):.1f}  TIS {rng.uniform(0.2, 0.9):.1f}"
    boxes = [text(screen, width - 8 - _text_mask(top, size).shape[1], 4, top, size, colour)]
    lines = [
        "B",
        f"{acq['frequency_mhz']:.1f}MHz",
        f"G {50 + acq['gain_db']:.0f}",
        f"DR {acq['dynamic_range_db']:.0f}",
        f"D {acq['depth_mm'] / 10:.1f}cm",
        f"FR {int(rng.integers(12, 40))}",
    ]
    y = layout.region_box[1] + 4 * size
    for line in lines:
        boxes.append(text(screen, 6, y, line, size, colour))
        y += size + 4
    boxes.append(colour_bar(screen, 8, y + size, max(6, size // 2), int(0.16 * height)))
    return boxes


def draw_overlays(
    screen: np.ndarray,
    layout: ScreenLayout,
    view: str,
    acq: dict[str, Any],
    rng: np.random.Generator,
) -> tuple[list[Box], str | None]:
    """Burn every overlay into ``screen`` (H, W, 3) uint8 in place.

    Returns the overlay boxes (screen px, exclusive max) and the displayed view label. The
    body marker follows the displayed label (the sonographer picks both together).
    """
    height, width = screen.shape[:2]
    size = int(np.clip(round(height / 38), 11, 20))
    colour = _COLOURS[int(rng.integers(len(_COLOURS)))]
    label = choose_label(view, rng)
    boxes = [_view_text(screen, layout, label, size, colour, rng)] if label is not None else []
    boxes += _settings_text(screen, layout, acq, size, colour, rng)
    x0, _, x1, _ = layout.region_box
    ruler_x = x1 + 3 if x1 + 3 * size < width else x0 - 3 * size
    boxes.append(depth_ruler(screen, layout, ruler_x, size, acq["focus_mm"], colour))
    if label is not None or rng.random() < 0.5:
        msize = int(np.clip(round(height / 11), 40, 72))
        corners = [8, width - msize - 8] if rng.random() < 0.6 else [width - msize - 8, 8]
        for mx in corners:  # a bottom corner clear of the sector
            box = (mx, height - msize - 6, mx + msize, height - 6)
            if _sector_free(layout, box):
                marker_view = _view_of_label(label) if label is not None else view
                boxes.append(body_marker(screen, *box[:2], msize, marker_view, rng, colour))
                break
    return [b for b in boxes if b is not None], label
