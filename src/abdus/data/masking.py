"""The classification mask: hide view-revealing icons and burned-in text (paper section 2.1).

Paper 2.1: "For each image used for training the view classification, a mask was applied to block
view-informative icons and texts" -- on scanner screens the view is typed or drawn as an icon
next to the image, so a classifier that sees them learns to read labels, not anatomy. Only the
classification input is masked; the landmark input keeps every pixel.

The mask is in *source pixels*, (H, W) bool, True = kept. ``abdus.data.preprocess`` maps it to
model pixels. Rules (``classification_mask``):

* Manifest boxes given (``ImageRecord.overlay_boxes``, source px): everything inside them is
  masked. An empty box list counts as "not given" (the manifest default), so detection runs.
* Otherwise detection, vectorised:
  1. pixels outside the DICOM tissue region box (``image.region``) are masked;
  2. overlays: connected components of near-white (>= ``saturated_level``) or coloured
     (chroma >= ``chroma_level``, from ``image.saturation``) pixels that are small
     (<= ``max_overlay_fraction`` of the frame). White ones count only on a dark surround (text
     drawn on the black screen border), so bright speckle inside the tissue is not punched out;
     coloured ones always count (tissue is grayscale). Overlays are dilated by
     ``overlay_dilation_px``;
  3. the imaging sector: the largest connected textured area (local mean or local standard
     deviation above a floor, overlays removed, morphologically closed, holes filled); pixels
     outside it are masked. Dark parts of the sector that fall outside it change nothing: a
     masked black pixel stays black.

Speed (every inference image; ``scripts/bench_masking.py``: ~3 ms per 1000x750 screen on one
core, ~70 ms for the plain full-frame scipy pipeline kept in ``tests/data/test_masking.py``):
connected components come from horizontal runs (cost follows the runs, not the pixels); the
ring test and the sector steps run on boxes, not the frame; sliding max / min / sums are a few
shifted whole-array operations. Texture is decided from float32 box sums: a pixel exactly on a
threshold may go otherwise than with scipy's float64 running mean (it does not matter here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from abdus.io.types import Region, UltrasoundImage

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) source px, x1/y1 exclusive


@dataclass(frozen=True)
class MaskConfig:
    """Thresholds of the automatic overlay / sector detection (intensities on the 0-255 scale)."""

    saturated_level: float = 250.0  # near-white text and icons
    chroma_level: float = 40.0  # max(R, G, B) - min(R, G, B) of coloured overlays
    max_overlay_fraction: float = 0.02  # larger bright/coloured areas are not text or icons
    dark_level: float = 25.0  # screen background (black) is below this
    dark_ring_fraction: float = 0.8  # white text: this much of its ring is dark background
    overlay_dilation_px: int = 3  # margin around text/icons (anti-aliased edges, shadows)
    texture_window_px: int = 7  # window of the local mean / standard deviation
    texture_mean_level: float = 10.0  # local mean above this: tissue
    texture_std_level: float = 4.0  # or local standard deviation above this: tissue
    closing_radius_px: int = 5  # bridges dark speckle gaps inside the sector


def boxes_mask(shape: tuple[int, int], boxes: Sequence[Box]) -> np.ndarray:
    """(H, W) bool, True inside any ``(x0, y0, x1, y1)`` box (source px, clipped to the frame)."""
    inside = np.zeros(shape, dtype=bool)
    for box in boxes:
        x0, y0, x1, y1 = _clipped(box, shape)
        inside[y0:y1, x0:x1] = True
    return inside


def _clipped(box: Box, shape: tuple[int, int]) -> Box:
    """The ``(x0, y0, x1, y1)`` box (source px) clipped to the (H, W) frame (maybe empty)."""
    (y0, y1), (x0, x1) = np.clip([box[1], box[3]], 0, shape[0]), np.clip(box[::2], 0, shape[1])
    return int(x0), int(y0), int(x1), int(y1)


def region_mask(shape: tuple[int, int], region: Region | None) -> np.ndarray:
    """(H, W) bool, True inside the region's box (everywhere when there is no region)."""
    if region is None:
        return np.ones(shape, dtype=bool)
    return boxes_mask(shape, [region.box])


# -- sliding windows: log2(n) whole-array passes per axis, on contiguous memory ---------------


def _window_reduce(a: np.ndarray, n: int, op: Callable) -> np.ndarray:
    """``op`` (max or min: overlap is harmless) over ``a[i : i + n]`` along axis 0."""
    k = 1
    while 2 * k <= n:
        a = op(a[:-k], a[k:])
        k *= 2
    return op(a[: a.shape[0] - (n - k)], a[n - k :]) if k < n else a


def _window_sum(a: np.ndarray, n: int, out: np.ndarray | None = None) -> np.ndarray:
    """Sum of ``a[i : i + n]`` along axis 0 (length L - n + 1): one power-of-two block (built
    by shifted adds) per binary digit of n."""
    length, offset, k, block, parts = a.shape[0] - n + 1, 0, 1, a, []
    while k <= n:
        if n & k:
            parts.append(block[offset : offset + length])
            offset += k
        block, k = (block[:-k] + block[k:] if 2 * k <= n else block), 2 * k
    out = np.add(parts[0], parts[1] if len(parts) > 1 else 0, out=out)
    for part in parts[2:]:
        out += part
    return out


def _square_filter(a: np.ndarray, radius: int, op: Callable, neutral: object) -> np.ndarray:
    """(h, w) max or min over the (2r+1)^2 square around each pixel, clipped to the frame, as
    scipy's ``maximum_filter`` / ``minimum_filter`` (mode 'reflect' only repeats values already
    in the clipped window). Along x it runs on the flattened rows: windows that straddle two rows
    land in the padding columns, which are dropped."""
    h, w = a.shape
    n, wide = 2 * radius + 1, w + 2 * radius
    flat = np.full((h + 2 * radius) * wide + 2 * radius, neutral, dtype=a.dtype)
    flat[: (h + 2 * radius) * wide].reshape(-1, wide)[radius : radius + h, radius : radius + w] = a
    along_x = _window_reduce(flat, n, op).reshape(-1, wide)
    return _window_reduce(along_x, n, op)[:, :w]


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2r+1)^2 square."""
    return _square_filter(mask, radius, np.logical_or, False)


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion by a (2r+1)^2 square (the frame border does not erode)."""
    return _square_filter(mask, radius, np.logical_and, True)


# -- connected components from horizontal runs (cost grows with the runs, not the pixels) -----


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of True in each row of a (h, w) bool mask, in raster order: (row, start, stop),
    each (N,), columns in px, stop exclusive."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=bool)
    padded[:, 1:-1] = mask
    flat = padded.ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # first pixel of a run / after a run
    row = edges[0::2] // (w + 2)
    return row, edges[0::2] - row * (w + 2) - 1, edges[1::2] - row * (w + 2) - 1


def _run_labels(
    row: np.ndarray, start: np.ndarray, stop: np.ndarray, width: int, diagonal: bool
) -> tuple[np.ndarray, int]:
    """Component label (N,) of each run and the count: the labels ``ndimage.label`` gives (4-
    or, with ``diagonal``, 8-connected), numbered in raster order of their first pixel."""
    if row.size == 0:
        return np.zeros(0, dtype=np.intp), 0
    reach, stride = int(diagonal), width + 2
    below = (row + 1) * stride
    # Runs of the next row that touch run i form the index range [first_i, last_i).
    first = np.searchsorted(row * stride + stop, below + start - reach, side="right")
    last = np.searchsorted(row * stride + start, below + stop + reach, side="left")
    touching = np.maximum(last - first, 0)
    ends = np.cumsum(touching)
    if ends[-1] == 0:  # no run touches another: each is a component
        return np.arange(1, row.size + 1), row.size
    lower = np.arange(ends[-1]) + np.repeat(first - (ends - touching), touching)
    graph = sparse.csr_matrix((np.ones(lower.size), lower, np.r_[0, ends]), shape=(row.size,) * 2)
    count, component = csgraph.connected_components(graph, directed=True, connection="weak")
    newest = np.maximum.accumulate(component)
    if component[0] == 0 and np.all(newest[1:] - newest[:-1] <= 1):
        return component + 1, count  # already numbered by first run
    _, first_run = np.unique(component, return_index=True)
    number = np.empty(count, dtype=np.intp)
    number[np.argsort(first_run)] = np.arange(1, count + 1)
    return number[component], count


def _run_pixels(
    row: np.ndarray, start: np.ndarray, stop: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) index arrays of every pixel of the runs, run by run."""
    length = stop - start
    offset = np.repeat(start - (np.cumsum(length) - length), length)
    return np.repeat(row, length), np.arange(int(length.sum())) + offset


# -- overlays ---------------------------------------------------------------------------------


def overlay_mask(
    pixels: np.ndarray, saturation: np.ndarray | None, config: MaskConfig = MaskConfig()
) -> np.ndarray:
    """(H, W) bool, True on detected text and icons (dilated). ``pixels`` (H, W) in [0, 255]."""
    white = pixels >= config.saturated_level
    coloured = None if saturation is None else saturation >= config.chroma_level
    candidates = white if coloured is None else white | coloured
    overlays = np.zeros(candidates.shape, dtype=bool)
    runs = _runs(candidates)
    run_label, count = _run_labels(*runs, candidates.shape[1], diagonal=True)
    length = runs[2] - runs[1]
    area = np.bincount(run_label, weights=length, minlength=count + 1)[1:]
    small = area <= config.max_overlay_fraction * pixels.size
    if not small.any():
        return overlays
    is_overlay = np.zeros(count, dtype=bool)
    if coloured is not None:  # a small coloured component is an overlay (tissue is grayscale)
        label = np.repeat(run_label, length)
        is_overlay = np.bincount(label[coloured[_run_pixels(*runs)]], minlength=count + 1)[1:] > 0
    white_only = small & ~is_overlay  # judged by its surround
    if white_only.any():
        is_overlay |= white_only & _on_dark(pixels, runs, run_label, white_only, config)
    kept = (small & is_overlay)[run_label - 1]
    if kept.any():
        row, start, stop = (part[kept] for part in runs)
        overlays[_run_pixels(row, start, stop)] = True
        radius = config.overlay_dilation_px
        if radius > 0:  # the dilation reaches radius px past the overlays' bounding box
            crop = _crop((row, start, stop), radius, overlays.shape)
            overlays[crop] = _dilate(overlays[crop], radius)
    return overlays


def _crop(runs: tuple[np.ndarray, ...], margin: int, shape: tuple[int, int]) -> tuple:
    """Slices of the box around the (row, start, stop) runs grown by ``margin`` px, clipped."""
    row, start, stop = runs
    return (
        slice(max(int(row.min()) - margin, 0), min(int(row.max()) + 1 + margin, shape[0])),
        slice(max(int(start.min()) - margin, 0), min(int(stop.max()) + margin, shape[1])),
    )


def _on_dark(
    pixels: np.ndarray, runs: tuple, run_label: np.ndarray, judged: np.ndarray, config: MaskConfig
) -> np.ndarray:
    """(count,) bool, valid where ``judged`` (count,), for the components of the (row, start,
    stop) ``runs`` labelled ``run_label``: the component's ring, 2-3 px away (its anti-aliased
    edge excluded), is nearly all dark background. Where rings overlap, the higher label takes
    the pixel (grey dilation of the label image). Computed on the judged components' bounding
    box grown by 6 px, which holds their rings and every label those can see."""
    row, start, stop = runs
    mine = judged[run_label - 1]
    crop = _crop((row[mine], start[mine], stop[mine]), 6, pixels.shape)
    (y0, y1), (x0, x1) = (crop[0].start, crop[0].stop), (crop[1].start, crop[1].stop)
    seen = (row >= y0) & (row < y1) & (stop > x0) & (start < x1)
    cut_start, cut_stop = np.maximum(start[seen], x0) - x0, np.minimum(stop[seen], x1) - x0
    count = judged.size
    labels = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8 if count < 2**8 else np.int32)
    labels[_run_pixels(row[seen] - y0, cut_start, cut_stop)] = np.repeat(
        run_label[seen], cut_stop - cut_start
    )
    near = _square_filter(labels, 1, np.maximum, 0)
    reach = _square_filter(near, 2, np.maximum, 0)  # 7x7 grey dilation
    ring = (near == 0) & (reach > 0)
    ring_label = reach[ring]
    ring_count = np.bincount(ring_label, minlength=count + 1)[1:]
    dark = pixels[crop][ring] < config.dark_level
    ring_dark = np.bincount(ring_label[dark], minlength=count + 1)[1:]
    # Text on the screen border: nearly all of its ring is dark. Speckle inside (or at the edge
    # of) the sector has tissue around it; a ring too small to judge does not count as dark.
    return (ring_count >= 8) & (ring_dark >= config.dark_ring_fraction * ring_count)


# -- texture: local mean and variance from float32 box sums ---------------------------------


def _textured(
    image: np.ndarray, box: Box, keep: np.ndarray | None, config: MaskConfig
) -> np.ndarray:
    """(h, w) bool over ``box`` of the (H, W) float32 ``image``, False where ``keep`` (h, w) is:
    mean > level or variance > std^2 over the s x s window ``[i - s // 2, i + s - s // 2 - 1]``,
    as ``ndimage.uniform_filter`` (mode 'reflect'). Sums of 0-255 integers are exact
    in float32 (49 * 255^2 < 2^24)."""
    (H, W), s = image.shape, config.texture_window_px
    x0, y0, x1, y1 = box
    before, after = s // 2, s - s // 2 - 1
    halo = image[max(y0 - before, 0) : y1 + after, max(x0 - before, 0) : x1 + after]
    pad = (
        (max(before - y0, 0), max(y1 + after - H, 0)),
        (max(before - x0, 0), max(x1 + after - W, 0)),
    )
    if any(map(any, pad)):  # past the frame edge: mirrored (edge pixel repeated)
        halo = np.pad(halo, pad, mode="symmetric")
    n = np.float32(s * s)
    mean = _box_sum(halo, s) / n
    variance = _box_sum(halo * halo, s) / n - mean * mean
    textured = (mean > config.texture_mean_level) | (variance > config.texture_std_level**2)
    return textured if keep is None else textured & keep


def _box_sum(a: np.ndarray, s: int) -> np.ndarray:
    """(h, w) float32 sums over the s x s windows of the (h + s - 1, w + s - 1) ``a``. Along x
    it sums the flattened rows; windows that straddle two rows land in the dropped columns."""
    h, wide = a.shape[0] - s + 1, a.shape[1]
    flat = np.empty(h * wide + s - 1, dtype=np.float32)
    flat[h * wide :] = 0.0
    _window_sum(a, s, out=flat[: h * wide].reshape(h, wide))  # along y
    return _window_sum(flat, s).reshape(h, wide)[:, : wide - s + 1]


# -- sector -----------------------------------------------------------------------------------


def _closing_in_frame(
    textured: np.ndarray, box: Box, shape: tuple[int, int], radius: int
) -> np.ndarray:
    """(h, w) closing of the (H, W) frame mask that is ``textured`` (h, w) inside ``box`` and
    False elsewhere. The frame is first padded by ``radius`` (edge mode) so the closing does not
    eat into a sector that touches the frame edge; the closing never reaches past the box."""
    H, W = shape
    x0, y0, x1, y1 = box
    edge = ((radius * (y0 == 0), radius * (y1 == H)), (radius * (x0 == 0), radius * (x1 == W)))
    # Beyond an inner box side the frame is False; the erosion inside the box reads the
    # dilation up to radius px out, which only sees the box: a False margin of radius suffices.
    empty = ((radius * (y0 > 0), radius * (y1 < H)), (radius * (x0 > 0), radius * (x1 < W)))
    padded = np.pad(np.pad(textured, edge, mode="edge"), empty)
    closed = _erode(_dilate(padded, radius), radius)
    top, left = edge[0][0] + empty[0][0], edge[1][0] + empty[1][0]
    return closed[top : top + textured.shape[0], left : left + textured.shape[1]]


def _largest_filled(mask: np.ndarray) -> np.ndarray | None:
    """(h, w) bool: the largest 4-connected component of ``mask`` with its holes filled (ties:
    the first in raster order, as ``ndimage.label`` numbers them), or None if ``mask`` is
    empty. Same as ``binary_fill_holes(labels == argmax(area))``."""
    row, start, stop = _runs(mask)
    run_label, count = _run_labels(row, start, stop, mask.shape[1], diagonal=False)
    if count == 0:
        return None
    area = np.bincount(run_label, weights=stop - start, minlength=count + 1)
    area[0] = 0
    mine = run_label == int(area.argmax())
    component = np.array(mask, dtype=bool)  # a copy
    component[_run_pixels(row[~mine], start[~mine], stop[~mine])] = False
    row, start, stop = row[mine], start[mine], stop[mine]
    if np.any(row[1:] == row[:-1]):  # holes need a row with a gap between two runs
        component[_run_pixels(*_holes(row, start, stop, mask.shape[1]))] = True
    return component


def _holes(
    row: np.ndarray, start: np.ndarray, stop: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of the holes of one 4-connected component given by its runs: the background runs
    of its bounding box that are not 4-connected to the box edge (background on the box edge
    reaches the frame edge through the empty outside)."""
    x0, x1 = int(start.min()), int(stop.max())
    first = np.r_[True, row[1:] != row[:-1]]
    last = np.r_[row[1:] != row[:-1], True]
    gap_row = np.concatenate((row, row[last]))  # the gap before each run, after each row's last
    gap_start = np.concatenate((np.where(first, x0, np.r_[x0, stop[:-1]]), stop[last]))
    gap_stop = np.concatenate((start, np.full(int(last.sum()), x1)))
    order = np.lexsort((gap_start, gap_row))
    nonempty = gap_start[order] < gap_stop[order]
    order = order[nonempty]
    gap_row, gap_start, gap_stop = gap_row[order], gap_start[order], gap_stop[order]
    gap_label, count = _run_labels(gap_row, gap_start, gap_stop, width, diagonal=False)
    edge = (gap_start == x0) | (gap_stop == x1) | (gap_row == row[0]) | (gap_row == row[-1])
    open_ = np.zeros(count + 1, dtype=bool)
    open_[gap_label[edge]] = True
    hole = ~open_[gap_label]
    return gap_row[hole], gap_start[hole], gap_stop[hole]


def _sector_in_box(
    pixels: np.ndarray, box: Box, keep: np.ndarray | None, config: MaskConfig
) -> np.ndarray | None:
    """(h, w) sector inside ``box`` of the (H, W) frame when nothing outside the box, nor where
    ``keep`` (h, w) is False, can be tissue; None when nothing is textured."""
    image = pixels.astype(np.float32, copy=False)
    textured = _textured(image, box, keep, config)
    if config.closing_radius_px > 0:
        textured = _closing_in_frame(textured, box, image.shape, config.closing_radius_px)
    return _largest_filled(textured)


def sector_mask(
    pixels: np.ndarray, exclude: np.ndarray | None = None, config: MaskConfig = MaskConfig()
) -> np.ndarray:
    """(H, W) bool, True inside the imaging sector: the largest connected textured area.

    ``exclude`` (H, W) bool marks pixels that cannot be tissue (overlays, outside the region).
    An image with no textured pixel at all gives an all-True mask (there is nothing to hide).
    """
    H, W = pixels.shape
    sector = _sector_in_box(pixels, (0, 0, W, H), None if exclude is None else ~exclude, config)
    return np.ones((H, W), dtype=bool) if sector is None else sector


def landmark_region(mask: np.ndarray) -> np.ndarray:
    """(..., H, W) bool: where a landmark may lie, from the classification mask (True = kept).

    The kept area with its holes filled: the ultrasound region, with the text and icons that
    lie inside it (e.g. calipers burned into the image, which sit on the very landmarks) counted
    back in; the zero padding of the model canvas and the screen around the region stay out.
    An image with nothing kept gives all True. Used by ``HeatmapCodec.decode(valid=...)``.
    """
    mask = np.asarray(mask, dtype=bool)
    flat = mask.reshape(-1, *mask.shape[-2:])
    region = np.stack([ndimage.binary_fill_holes(m) if m.any() else ~m for m in flat])
    return region.reshape(mask.shape)


def classification_mask(
    image: UltrasoundImage,
    overlay_boxes: Sequence[Box] | None = None,
    *,
    config: MaskConfig = MaskConfig(),
) -> np.ndarray:
    """(H, W) bool in source pixels, True = kept in the classification input (see module doc).

    ``overlay_boxes``: manifest boxes ``(x0, y0, x1, y1)`` in source px; when non-empty they
    replace the automatic detection (the region box still applies).
    """
    (H, W), region = image.shape, image.region
    if overlay_boxes:
        return region_mask((H, W), region) & ~boxes_mask((H, W), overlay_boxes)
    overlays = overlay_mask(image.pixels, image.saturation, config)
    kept = np.zeros((H, W), dtype=bool)
    x0, y0, x1, y1 = box = _clipped((0, 0, W, H) if region is None else region.box, (H, W))
    if x1 > x0 and y1 > y0:  # the sector steps run on the region box, not the frame
        visible = ~overlays[y0:y1, x0:x1]
        sector = _sector_in_box(image.pixels, box, visible, config)
        kept[y0:y1, x0:x1] = visible if sector is None else sector & visible
    return kept
