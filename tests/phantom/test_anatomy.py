"""Virtual patients: published size ranges, consistency, and exact organ outline points."""

from __future__ import annotations

import math

import numpy as np
import pytest

from abdus.phantom.anatomy import sample_patient
from abdus.phantom.organs import Pose, kidney_long, kidney_trans, liver_right_long, spleen_section
from abdus.phantom.scan import Band, Star
from abdus.phantom.tissues import tissue_table


@pytest.fixture(scope="module")
def cohort() -> list:
    rng = np.random.default_rng(1234)
    return [sample_patient(rng, f"P{i:03d}") for i in range(300)]


def _column(cohort: list, getter) -> np.ndarray:
    return np.array([getter(p) for p in cohort])


def test_kidney_sizes_in_published_ranges(cohort: list) -> None:
    for side in ("kidney_right", "kidney_left"):
        length = _column(cohort, lambda p, s=side: getattr(p, s).length_mm)
        width = _column(cohort, lambda p, s=side: getattr(p, s).width_mm)
        depth = _column(cohort, lambda p, s=side: getattr(p, s).depth_mm)
        assert length.min() >= 90.0 and length.max() <= 125.0
        assert width.min() >= 45.0 and width.max() <= 65.0
        assert (depth < width).all() and depth.min() >= 30.0
        assert length.std() > 5.0  # a spread, not a constant
    diff = _column(cohort, lambda p: p.kidney_left.length_mm - p.kidney_right.length_mm)
    assert np.abs(diff).max() < 15.0
    assert 0.0 < diff.mean() < 6.0  # the left kidney is slightly longer on average


def test_spleen_and_liver_sizes(cohort: list) -> None:
    spleen = _column(cohort, lambda p: p.spleen.length_mm)
    assert spleen.min() >= 80.0 and spleen.max() <= 130.0
    liver = _column(cohort, lambda p: p.liver.length_mm)
    assert liver.min() >= 100.0 and liver.max() <= 190.0
    assert abs(liver.mean() - 140.0) < 4.0  # 14 +/- 1.7 cm (Kratzer 2003)
    assert 13.0 < liver.std() < 19.0
    fat = _column(cohort, lambda p: p.fat_mm)
    assert fat.min() >= 6.0 and fat.max() <= 45.0 and fat.std() > 4.0


def test_sample_patient_is_deterministic() -> None:
    a = sample_patient(np.random.default_rng(7), "X")
    b = sample_patient(np.random.default_rng(7), "X")
    c = sample_patient(np.random.default_rng(8), "X")
    assert a == b
    assert a != c


def test_kidney_rejects_unknown_side(cohort: list) -> None:
    with pytest.raises(ValueError, match="right, left"):
        cohort[0].kidney("middle")


def _assert_on_outline(outline, point: tuple[float, float], centre: tuple[float, float]) -> None:
    """The point is on the outline: sdf ~ 0, inside 1 mm towards the centre, outside beyond."""
    x, z = point
    f = float(outline.sdf(np.float32([x]), np.float32([z]))[0])
    assert abs(f) < 1e-3
    dx, dz = centre[0] - x, centre[1] - z
    n = math.hypot(dx, dz)
    inner = outline.sdf(np.float32([x + dx / n]), np.float32([z + dz / n]))[0]
    outer = outline.sdf(np.float32([x - dx / n]), np.float32([z - dz / n]))[0]
    assert inner < 0 < outer


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("angle", [-0.4, 0.0, 0.3])
def test_kidney_sections_have_exact_axes(cohort: list, side: str, angle: float) -> None:
    anatomy, tissues, rng = cohort[3], tissue_table(cohort[3]), np.random.default_rng(0)
    pose = Pose(10.0, 120.0, angle, flip=angle > 0)
    size = anatomy.kidney(side)
    organ = kidney_long(anatomy, side, pose, rng, tissues)
    p = organ.points
    assert math.dist(p["la_1"], p["la_2"]) == pytest.approx(size.length_mm, abs=1e-6)
    centre = organ.outline.point(0.0)
    for name in ("la_1", "la_2"):
        _assert_on_outline(organ.outline, p[name], (centre[0], centre[1]))
    organ = kidney_trans(anatomy, side, pose, rng, tissues)
    p = organ.points
    assert math.dist(p["la_1"], p["la_2"]) == pytest.approx(size.width_mm, abs=1e-6)
    assert math.dist(p["sa_1"], p["sa_2"]) == pytest.approx(size.depth_mm, abs=1e-6)
    la = np.subtract(p["la_2"], p["la_1"])
    sa = np.subtract(p["sa_2"], p["sa_1"])
    assert abs(float(la @ sa)) < 1e-6 * size.width_mm * size.depth_mm  # perpendicular axes
    for name in ("la_1", "la_2", "sa_1", "sa_2"):
        _assert_on_outline(organ.outline, p[name], (pose.x_mm, pose.z_mm))


@pytest.mark.parametrize("plane", ["long", "trans"])
def test_spleen_sections_have_exact_axes(cohort: list, plane: str) -> None:
    anatomy = cohort[5]
    pose = Pose(-5.0, 110.0, -0.2)
    organ = spleen_section(anatomy, plane, pose, np.random.default_rng(1), tissue_table(anatomy))
    p, out = organ.points, organ.outline
    assert isinstance(out, Band) and abs(out.bend) > 5.0  # a crescent, not an ellipse
    expected = anatomy.spleen.length_mm if plane == "long" else anatomy.spleen.width_mm
    assert math.dist(p["la_1"], p["la_2"]) == pytest.approx(expected, abs=1e-6)
    mid = out.point(0.0)
    for name in ("la_1", "la_2"):
        _assert_on_outline(out, p[name], mid)
    if plane == "trans":
        assert math.dist(p["sa_1"], p["sa_2"]) == pytest.approx(anatomy.spleen.depth_mm, abs=1e-6)
        for name in ("sa_1", "sa_2"):
            _assert_on_outline(out, p[name], mid)


def test_liver_long_section_spans_the_craniocaudal_length(cohort: list) -> None:
    anatomy = cohort[9]
    organ = liver_right_long(
        anatomy, Pose(0.0, 150.0, -0.6), np.random.default_rng(2), tissue_table(anatomy)
    )
    p = organ.points
    assert math.dist(p["la_1"], p["la_2"]) == pytest.approx(anatomy.liver.length_mm, abs=1e-6)
    out = organ.outline
    # The dome end is blunt (thick), the inferior tip sharp (thin).
    assert out.thickness(-0.8) > 2.0 * out.thickness(0.8)


def test_outline_shapes_are_perturbed_not_ellipses(cohort: list) -> None:
    """Fourier perturbations make outlines differ from the plain ellipse / band."""
    anatomy = cohort[0]
    organ = kidney_trans(
        anatomy, "right", Pose(0, 100, 0), np.random.default_rng(0), tissue_table(anatomy)
    )
    star = organ.outline
    assert isinstance(star, Star) and star.notch is not None
    theta = np.linspace(0, 2 * np.pi, 64)
    rho = star.rho(theta)
    assert rho.max() - rho.min() > 0.1  # the hilum notch and harmonics


def test_same_patient_same_shape_in_every_view(cohort: list) -> None:
    anatomy, tissues = cohort[4], tissue_table(cohort[4])
    a = kidney_long(anatomy, "left", Pose(0, 100, 0.1), np.random.default_rng(1), tissues)
    b = kidney_long(anatomy, "left", Pose(0, 100, 0.1), np.random.default_rng(99), tissues)
    assert a.outline == b.outline  # the outline is the patient's, the rng only varies the look
