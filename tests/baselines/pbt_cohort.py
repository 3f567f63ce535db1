"""A small synthetic cohort for the PBT tests: a bright-rimmed dark ellipse (an "organ") on
speckle, with its axis endpoints as landmarks, written as PNG files and a manifest.

Long views (``kidney_right_long``): ``kl_la_1`` is the left end of the long axis, ``kl_la_2`` the
right end. Transverse views (``kidney_right_trans``): the same long axis, and ``kt_sa_1`` /
``kt_sa_2`` the upper / lower ends of the short axis. Organ position, size, angle and the image
gain vary per image, so a fixed position is a poor guess and the detector has to look.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from abdus.io.manifest import ImageRecord, Manifest, Read, save_manifest

SHAPE = (120, 160)  # (H, W) source px
SPACING_MM = 1.0


def organ_image(
    rng: np.random.Generator, *, transverse: bool
) -> tuple[np.ndarray, dict[str, tuple[float, float]]]:
    """(H, W) uint8 image and its landmarks {name: (x, y) source px}."""
    H, W = SHAPE
    cx, cy = rng.uniform(55, 105), rng.uniform(45, 75)
    a, b = (rng.uniform(28, 36), rng.uniform(19, 25)) if transverse else (
        rng.uniform(34, 48), rng.uniform(13, 19)
    )  # fmt: skip
    theta = np.deg2rad(rng.uniform(-20, 20))
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    u = (xs - cx) * np.cos(theta) + (ys - cy) * np.sin(theta)  # along the long axis
    v = -(xs - cx) * np.sin(theta) + (ys - cy) * np.cos(theta)
    r = np.hypot(u / a, v / b)
    tissue = 70.0 + 25.0 * rng.standard_normal(SHAPE)
    tissue = np.where(r < 0.93, 30.0 + 10.0 * rng.standard_normal(SHAPE), tissue)  # dark organ
    tissue = np.where(np.abs(r - 1.0) < 0.07, 190.0 + 20.0 * rng.standard_normal(SHAPE), tissue)
    pixels = np.clip(tissue * rng.uniform(0.75, 1.25), 0, 255).astype(np.uint8)
    along, across = (
        np.array([np.cos(theta), np.sin(theta)]),
        np.array([-np.sin(theta), np.cos(theta)]),
    )
    centre = np.array([cx, cy])
    task, points = ("kt", {}) if transverse else ("kl", {})
    points[f"{task}_la_1"] = centre - a * along
    points[f"{task}_la_2"] = centre + a * along
    if transverse:
        points["kt_sa_1"] = centre - b * across
        points["kt_sa_2"] = centre + b * across
    return pixels, {k: (float(p[0]), float(p[1])) for k, p in points.items()}


def write_cohort(root: Path, patients: int, *, seed: int = 0, transverse: bool = True) -> Manifest:
    """Per patient one long view (and one transverse view), PNG + ``manifest.json`` in ``root``."""
    rng = np.random.default_rng(seed)
    records = []
    views = ("kidney_right_long", "kidney_right_trans") if transverse else ("kidney_right_long",)
    for p in range(patients):
        for view in views:
            pixels, landmarks = organ_image(rng, transverse=view.endswith("trans"))
            name = f"images/P{p:03d}_{view}.png"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / name)
            records.append(
                ImageRecord(
                    id=f"P{p:03d}_{view}",
                    file=name,
                    patient_id=f"P{p:03d}",
                    reference=Read(view, landmarks),
                    spacing_mm=(SPACING_MM, SPACING_MM),
                    size=SHAPE,
                )
            )
    manifest = Manifest(root, records, name="pbt-test")
    save_manifest(manifest, root)
    return manifest
