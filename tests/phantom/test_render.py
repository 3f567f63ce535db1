"""The public scanner API: every view, exact truth, determinism and overlay boxes."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from abdus.phantom.overlays import NEIGHBOURS, choose_label
from abdus.phantom.render import Scan, build_scene, sample_patient, scan_view
from abdus.phantom.scan import ProbeGeometry
from abdus.taxonomy import (
    MEASUREMENT_BY_CODE,
    VIEW_NAMES,
    landmarks_of_view,
    measurements_of_view,
    view_by_name,
)

TASK_VIEWS = [v for v in VIEW_NAMES if landmarks_of_view(v)]


def _expected_size(anatomy, view: str, code: str) -> float:
    side = "left" if "left" in view else "right"
    kidney = anatomy.kidney(side)
    return {
        "KL_LA": kidney.length_mm,
        "KT_LA": kidney.width_mm,
        "KT_SA": kidney.depth_mm,
        "LL_LA": anatomy.liver.length_mm,
        "SL_LA": anatomy.spleen.length_mm,
        "ST_LA": anatomy.spleen.width_mm,
        "ST_SA": anatomy.spleen.depth_mm,
    }[code]


@pytest.fixture(scope="module")
def rendered() -> list[tuple[object, Scan]]:
    """Three patients scanned in every view (plus extra 'others')."""
    rng = np.random.default_rng(2024)
    out = []
    for i in range(3):
        anatomy = sample_patient(rng, f"P{i}")
        for view in (*VIEW_NAMES, "others", "others"):
            out.append((anatomy, scan_view(anatomy, view, rng)))
    return out


def _probe(scan: Scan) -> ProbeGeometry:
    acq = scan.acquisition
    return ProbeGeometry(acq["probe_radius_mm"], acq["sector_deg"], acq["depth_mm"])


def _to_mm(scan: Scan, x: np.ndarray | float, y: np.ndarray | float) -> tuple:
    ox, oy = scan.depth_origin
    return (np.asarray(x) - ox) * scan.spacing_mm, (np.asarray(y) - oy) * scan.spacing_mm


def test_every_view_renders_with_its_landmarks(rendered: list) -> None:
    seen = set()
    for _, scan in rendered:
        seen.add(scan.view)
        assert set(scan.truth_landmarks) == set(landmarks_of_view(scan.view))
        assert set(scan.truth_measurements_mm) == {m.code for m in measurements_of_view(scan.view)}
        h, w, c = scan.screen.shape
        assert c == 3 and scan.screen.dtype == np.uint8
        assert 600 <= w <= 1024 and 450 <= h <= 768
    assert seen == set(VIEW_NAMES)


def test_measurements_are_exact(rendered: list) -> None:
    for anatomy, scan in rendered:
        for code, mm in scan.truth_measurements_mm.items():
            a, b = MEASUREMENT_BY_CODE[code].landmarks
            (x1, y1), (x2, y2) = scan.truth_landmarks[a], scan.truth_landmarks[b]
            assert math.hypot(x2 - x1, y2 - y1) * scan.spacing_mm == pytest.approx(mm, abs=1e-6)
            assert mm == pytest.approx(_expected_size(anatomy, scan.view, code), abs=1e-6)


def test_landmarks_inside_sector_and_region(rendered: list) -> None:
    for _, scan in rendered:
        x0, y0, x1, y1 = scan.region_box
        probe = _probe(scan)
        for name, (x, y) in scan.truth_landmarks.items():
            assert x0 <= x < x1 and y0 <= y < y1, name
            xm, zm = _to_mm(scan, x, y)
            assert probe.inside(xm, zm, margin_mm=5.0), (scan.view, name)
        if scan.truth_landmarks:  # ordering convention: la_1 left of la_2, sa_1 above sa_2
            prefix = next(iter(scan.truth_landmarks)).split("_")[0]
            lm = scan.truth_landmarks
            assert lm[f"{prefix}_la_1"][0] <= lm[f"{prefix}_la_2"][0]
            if f"{prefix}_sa_1" in lm:
                assert lm[f"{prefix}_sa_1"][1] <= lm[f"{prefix}_sa_2"][1]


@pytest.mark.parametrize("view", TASK_VIEWS)
def test_landmarks_lie_on_the_organ_outline(view: str) -> None:
    rng = np.random.default_rng(view_by_name(view).index)
    for i in range(4):
        anatomy = sample_patient(rng, f"Q{i}")
        scene = build_scene(anatomy, view, float(rng.uniform(40, 60)), 70.0, rng)
        pts = np.array(list(scene.landmarks.values()), dtype=np.float32)
        f = scene.target.sdf(pts[:, 0], pts[:, 1])
        assert np.abs(f).max() < 1e-3
        centre = pts.mean(axis=0)
        step = (centre - pts) / np.linalg.norm(centre - pts, axis=1, keepdims=True)
        inner = scene.target.sdf(*(pts + 1.5 * step).T)
        outer = scene.target.sdf(*(pts - 1.5 * step).T)
        assert (inner < 0).all() and (outer > 0).all()


def test_same_seed_same_bytes() -> None:
    anatomy = sample_patient(np.random.default_rng(1), "D")
    for view in ("kidney_left_trans", "others", "liver_right_long"):
        a = scan_view(anatomy, view, np.random.default_rng(99))
        b = scan_view(anatomy, view, np.random.default_rng(99))
        c = scan_view(anatomy, view, np.random.default_rng(100))
        assert a.screen.tobytes() == b.screen.tobytes()
        assert a.truth_landmarks == b.truth_landmarks and a.acquisition == b.acquisition
        assert a.overlay_boxes == b.overlay_boxes and a.displayed_label == b.displayed_label
        assert a.screen.tobytes() != c.screen.tobytes()


def test_overlays_inside_screen_outside_sector_and_complete(rendered: list) -> None:
    for _, scan in rendered:
        h, w = scan.screen.shape[:2]
        probe = _probe(scan)
        covered = np.zeros((h, w), bool)
        assert len(scan.overlay_boxes) >= 8  # text lines, ruler, colour bar (+ label, marker)
        for x0, y0, x1, y1 in scan.overlay_boxes:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            ys, xs = np.mgrid[y0:y1, x0:x1]
            xm, zm = _to_mm(scan, xs, ys)
            assert not probe.inside(xm, zm, margin_mm=-scan.spacing_mm).any()
            covered[y0:y1, x0:x1] = True
        rx0, ry0, rx1, ry1 = scan.region_box
        covered[ry0:ry1, rx0:rx1] = True
        # Every burned-in pixel lies in the sector's box or in a reported overlay box.
        assert not scan.screen[~covered].any()


def test_region_box_holds_the_sector(rendered: list) -> None:
    for _, scan in rendered:
        x0, y0, x1, y1 = scan.region_box
        h, w = scan.screen.shape[:2]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        gray = scan.screen[y0:y1, x0:x1].astype(float).mean(axis=2)
        assert gray.mean() > 10.0  # an image, not an empty box
        assert 0.15 <= scan.spacing_mm <= 0.75
        # The apex lies above the region, centred on it.
        ox, oy = scan.depth_origin
        assert oy < y0 and abs(ox - (x0 + x1 - 1) / 2) < 2.0


def test_acquisition_is_json_and_complete(rendered: list) -> None:
    for _, scan in rendered:
        acq = json.loads(json.dumps(scan.acquisition))
        for key in (
            "frequency_mhz",
            "depth_mm",
            "gain_db",
            "dynamic_range_db",
            "probe_radius_mm",
            "sector_deg",
            "psf",
            "tgc_db",
            "jpeg_quality",
        ):
            assert key in acq
        assert 2.0 <= acq["frequency_mhz"] <= 5.0 and 120.0 <= acq["depth_mm"] + 20 <= 260.0
        assert 40.0 <= acq["probe_radius_mm"] <= 60.0 and 60.0 <= acq["sector_deg"] <= 75.0
        assert 45 <= acq["dynamic_range_db"] <= 70 and 70 <= acq["jpeg_quality"] <= 95


def test_view_text_right_absent_or_neighbour() -> None:
    rng = np.random.default_rng(0)
    n = 6000
    counts = Counter()
    for i in range(n):
        view = VIEW_NAMES[i % len(VIEW_NAMES)]
        label = choose_label(view, rng)
        if label is None:
            counts["absent"] += 1
        elif label == view_by_name(view).label:
            counts["right"] += 1
        else:
            counts["wrong"] += 1
            assert label in {view_by_name(v).label for v in NEIGHBOURS[view]}
    assert abs(counts["right"] / n - 0.85) < 0.02
    assert abs(counts["absent"] / n - 0.08) < 0.015
    assert abs(counts["wrong"] / n - 0.07) < 0.015


def test_displayed_label_matches_taxonomy(rendered: list) -> None:
    labels = {view_by_name(v).label for v in VIEW_NAMES}
    for _, scan in rendered:
        assert scan.displayed_label is None or scan.displayed_label in labels


def test_others_are_unmeasured_and_varied() -> None:
    rng = np.random.default_rng(11)
    anatomy = sample_patient(rng, "O")
    scenes = set()
    for _ in range(24):
        scene = build_scene(anatomy, "others", 50.0, 70.0, rng)
        assert scene.landmarks == {} and scene.target is None
        scenes.add(scene.name.split("_")[1])
    assert {"partial"} < scenes  # partial organs and other anatomy both occur


def test_unknown_view_is_rejected() -> None:
    anatomy = sample_patient(np.random.default_rng(0), "U")
    with pytest.raises(ValueError, match="valid views"):
        scan_view(anatomy, "heart_long", np.random.default_rng(0))
