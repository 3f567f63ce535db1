"""Time the automatic classification mask against the plain scipy implementation it replaced.

    .venv/bin/python scripts/bench_masking.py [--repeats 21]

For every view of ``abdus.taxonomy.VIEW_NAMES``: a phantom scanner DICOM (RGB screen with text
and icons, an ultrasound region), as ``abdus.inference.benchmark.generated_dicom`` writes it.
Prints the median wall time per image (ms, one core) of ``classification_mask(image)`` and of the
reference (``tests/data/test_masking.py``, the implementation before the speed-up, verbatim),
their per-step breakdown, the load average, and how many pixels of the two masks differ (the
texture test may decide a pixel exactly on a threshold either way).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from abdus.data import masking
from abdus.inference.benchmark import generated_dicom
from abdus.io.reader import read_any
from abdus.taxonomy import VIEW_NAMES

ROOT = Path(__file__).resolve().parents[1]


def _reference() -> object:
    """The reference functions kept in the masking tests."""
    spec = importlib.util.spec_from_file_location(
        "test_masking", ROOT / "tests/data/test_masking.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["test_masking"] = module
    spec.loader.exec_module(module)
    return module


def _median_ms(step: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def old_steps(ref: object, image: object, config: masking.MaskConfig) -> dict[str, Callable]:
    """The reference pipeline cut into its steps (inputs of each step precomputed)."""
    pixels = image.pixels.astype(np.float32)
    inside = masking.region_mask(image.shape, image.region)
    overlays = ref._reference_overlay_mask(image.pixels, image.saturation, config)
    mean = ndimage.uniform_filter(pixels, 7)
    textured = (
        (mean > 10.0) | (ndimage.uniform_filter(pixels * pixels, 7) - mean * mean > 16.0)
    ) & ~(overlays | ~inside)
    padded = np.pad(textured, 5, mode="edge")
    closed = ref._ref_erode(ref._ref_dilate(padded, 5), 5)[5:-5, 5:-5]
    labels, count = ndimage.label(closed)
    area = np.bincount(labels.ravel(), minlength=count + 1)
    area[0] = 0
    largest = labels == int(area.argmax())

    def texture() -> object:
        m = ndimage.uniform_filter(pixels, 7)
        v = ndimage.uniform_filter(pixels * pixels, 7) - m * m
        return ((m > 10.0) | (v > 16.0)) & ~(overlays | ~inside)

    return {
        "overlay": lambda: ref._reference_overlay_mask(image.pixels, image.saturation, config),
        "texture": texture,
        "closing": lambda: ref._ref_erode(ref._ref_dilate(np.pad(textured, 5, mode="edge"), 5), 5),
        "label": lambda: ndimage.label(closed),
        "fill": lambda: ndimage.binary_fill_holes(largest),
        "total": lambda: ref._reference_classification_mask(image, config=config),
    }


def new_steps(image: object, config: masking.MaskConfig) -> dict[str, Callable]:
    """The current pipeline cut into its steps (inputs of each step precomputed)."""
    pixels = image.pixels.astype(np.float32)
    H, W = image.shape
    x0, y0, x1, y1 = image.region.box if image.region is not None else (0, 0, W, H)
    box, crop = (x0, y0, x1, y1), (slice(y0, y1), slice(x0, x1))
    overlays = masking.overlay_mask(image.pixels, image.saturation, config)
    keep = ~overlays[crop]
    textured = masking._textured(pixels, box, keep, config)
    closed = masking._closing_in_frame(textured, box, image.shape, config.closing_radius_px)
    return {
        "overlay": lambda: masking.overlay_mask(image.pixels, image.saturation, config),
        "texture": lambda: masking._textured(pixels, box, keep, config),
        "closing": lambda: masking._closing_in_frame(textured, box, image.shape, 5),
        "label+fill": lambda: masking._largest_filled(closed),
        "total": lambda: masking.classification_mask(image, config=config),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    ref, config = _reference(), masking.MaskConfig()
    folder = Path(tempfile.mkdtemp(prefix="bench_masking_"))
    images = [read_any(generated_dicom(folder, v, seed=k))[0] for k, v in enumerate(VIEW_NAMES)]
    print(f"cores {os.cpu_count()}, load average before {os.getloadavg()}")
    rows = {"old": [], "new": []}
    for view, image in zip(VIEW_NAMES, images, strict=True):
        differing = np.count_nonzero(
            masking.classification_mask(image) != ref._reference_classification_mask(image)
        )
        old = {k: _median_ms(f, args.repeats) for k, f in old_steps(ref, image, config).items()}
        new = {k: _median_ms(f, args.repeats) for k, f in new_steps(image, config).items()}
        rows["old"].append(old)
        rows["new"].append(new)
        print(
            f"{view:20s} {image.shape[1]}x{image.shape[0]}  old {old['total']:6.2f} ms"
            f"  new {new['total']:5.2f} ms  x{old['total'] / new['total']:4.1f}"
            f"  differing px {differing}"
        )
    for name, table in rows.items():
        steps = "  ".join(
            f"{k} {np.median([r[k] for r in table]):.2f}" for k in table[0] if k != "total"
        )
        total = np.median([r["total"] for r in table])
        print(f"median over {len(table)} views, {name}: total {total:.2f} ms  ({steps})")
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
