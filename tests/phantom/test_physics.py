"""Imaging physics: speckle statistics, attenuation, shadows, painting and scan conversion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from abdus.phantom.physics import (
    BModeSettings,
    Layer,
    PointSpread,
    Tissue,
    TissueMaps,
    attenuation_amplitude,
    bmode_lines,
    paint_layers,
    sample_settings,
)
from abdus.phantom.render import homogeneous_envelope
from abdus.phantom.scan import PolarGrid, ProbeGeometry, circle, layout_screen, scan_convert

RAYLEIGH_SNR = math.sqrt(math.pi / (4.0 - math.pi))  # 1.913


@pytest.mark.parametrize(
    "psf", [{}, {"axial_samples": 0.8, "lateral_samples": 2.5}, {"axial_samples": 2.0}]
)
def test_fully_developed_speckle_is_rayleigh(psf: dict) -> None:
    env = homogeneous_envelope(np.random.default_rng(3), (256, 256), **psf)
    assert env.shape == (256, 256) and env.dtype == np.float32
    ratio = float(env.mean() / env.std())
    assert abs(ratio - 1.91) < 0.15
    assert abs(ratio - RAYLEIGH_SNR) < 0.15


def test_speckle_is_smoothed_by_the_psf() -> None:
    """Wider PSF -> longer speckle correlation along that axis."""

    def lag1(env: np.ndarray, axis: int) -> float:
        e = env - env.mean()
        return float((e * np.roll(e, 1, axis=axis)).mean() / e.var())

    narrow = homogeneous_envelope(np.random.default_rng(0), (256, 256), lateral_samples=0.7)
    wide = homogeneous_envelope(np.random.default_rng(0), (256, 256), lateral_samples=3.0)
    assert lag1(wide, 1) > lag1(narrow, 1) + 0.2


def test_point_spread_rejects_non_positive_width() -> None:
    with pytest.raises(ValueError):
        PointSpread(axial_samples=0.0)


@pytest.fixture
def grid() -> PolarGrid:
    return PolarGrid(ProbeGeometry(50.0, 70.0, 150.0), 300, 128)


def test_attenuation_enhancement_and_shadow(grid: PolarGrid) -> None:
    """Fluid behind the same depth lets more sound through; bone leaves only the leak floor."""
    atten = np.full((grid.n_depth, grid.n_lines), 0.5, np.float32)
    atten[100:150, 10:20] = 0.02  # fluid
    atten[100:105, 60:70] = 60.0  # bone
    amp = attenuation_amplitude(atten, grid, 3.5, leak_db=-30.0)
    ref = amp[200, 100]
    saved_db = 2.0 * (0.5 - 0.02) * 3.5 * (50 * grid.dr_mm / 10.0)  # two-way, dB
    assert 20 * math.log10(amp[200, 15] / ref) == pytest.approx(saved_db, abs=0.2)
    assert saved_db > 6.0  # visible posterior enhancement
    shadow_db = 20 * math.log10(amp[200, 65] / ref)
    assert shadow_db == pytest.approx(-30.0, abs=0.5)
    assert np.all(np.diff(amp[:, 100]) <= 0)  # amplitude only decreases with depth


def test_paint_layers_in_order_and_rim(grid: PolarGrid) -> None:
    x, z = grid.xz
    bright, dark = Tissue(10.0, 0.5, 0.0), Tissue(-30.0, 0.02, 0.0)
    layers = [Layer(circle(0.0, 130.0, 20.0), bright), Layer(circle(0.0, 130.0, 10.0), dark, 6.0)]
    maps = paint_layers(layers, grid, Tissue(-5.0))
    r = np.hypot(x, z - 130.0)
    assert np.all(maps.echo_db[r < 9.0] == -30.0)
    assert np.all(maps.echo_db[(r > 11.0) & (r < 19.0)] == 10.0)
    assert np.all(maps.echo_db[r > 21.0] == -5.0)
    ring = np.abs(r - 10.0) < 0.3
    assert maps.rim_power[ring].max() > 1.0 and maps.rim_power[r > 14.0].max() < 1e-3


def test_bmode_lines_show_contrast(grid: PolarGrid) -> None:
    """A hyperechoic disc is brighter than background; gas leaves a dark shadow behind it."""
    x, z = grid.xz
    layers = [
        Layer(circle(-30.0, 120.0, 12.0), Tissue(8.0, 0.5, 0.0)),
        Layer(circle(30.0, 100.0, 5.0), Tissue(12.0, 60.0, 0.0, gas=True)),
    ]
    maps = paint_layers(layers, grid, Tissue(0.0, 0.5, 0.0))
    settings = BModeSettings(
        frequency_mhz=3.5,
        gain_db=0.0,
        dynamic_range_db=60.0,
        psf=PointSpread(),
        tgc_error_db=np.zeros(grid.n_depth, np.float32),
    )
    lines = bmode_lines(maps, grid, settings, np.random.default_rng(0))
    assert lines.shape == (grid.n_depth, grid.n_lines)
    assert lines.min() >= 0.0 and lines.max() <= 1.0
    disc = np.hypot(x + 30.0, z - 120.0) < 10.0
    background = (np.abs(x) < 10.0) & (z > 100.0) & (z < 140.0)
    assert lines[disc].mean() > lines[background].mean() + 0.08
    behind_gas = (np.abs(np.arctan2(x, z) - math.atan2(30.0, 100.0)) < 0.01) & (z > 130.0)
    assert lines[behind_gas].mean() < lines[background].mean() - 0.1


def test_sample_settings_ranges_and_record() -> None:
    rng = np.random.default_rng(5)
    for depth in (120.0, 240.0):
        probe = ProbeGeometry(50.0, 70.0, depth)
        settings, grid, acq = sample_settings(rng, probe)
        assert 2.0 <= acq["frequency_mhz"] <= 5.0
        assert 45 <= acq["dynamic_range_db"] <= 70
        assert 0.3 <= acq["psf"]["axial_mm"] <= 0.6
        assert 0.35 <= acq["psf"]["lateral_deg"] <= 1.0
        assert settings.psf.axial_samples * grid.dr_mm == pytest.approx(acq["psf"]["axial_mm"])
        assert settings.tgc_error_db.shape == (grid.n_depth,)


def test_scan_conversion_maps_depth_to_the_right_pixels(grid: PolarGrid) -> None:
    probe = grid.probe
    layout = layout_screen(probe, 800, 600, (100, 40, 720, 580))
    depth_ramp = np.repeat((grid.r_mm - probe.radius_mm)[:, None], grid.n_lines, 1)
    screen = scan_convert(depth_ramp.astype(np.float32) / 150.0, grid, layout)
    assert screen.shape == (600, 800)
    x0, y0, x1, y1 = layout.region_box
    assert 0 <= x0 < x1 <= 800 and 0 <= y0 < y1 <= 600
    ys, xs = np.mgrid[0:600, 0:800]
    x_mm, z_mm = layout.to_mm(xs.astype(np.float64), ys.astype(np.float64))
    inside = probe.inside(x_mm, z_mm, margin_mm=2.0)
    expected = (np.hypot(x_mm, z_mm) - probe.radius_mm) / 150.0
    assert np.abs(screen[inside] - expected[inside]).max() < 1e-3
    outside = ~probe.inside(x_mm, z_mm, margin_mm=-layout.spacing_mm)
    assert np.all(screen[outside] == 0.0)
    assert not screen[:, :x0].any() and not screen[:, x1:].any()
    assert not screen[:y0].any() and not screen[y1:].any()


def test_tissue_maps_fill_only_the_mask() -> None:
    maps = TissueMaps.filled((4, 4), Tissue(0.0))
    inside = np.zeros((2, 2), bool)
    inside[0, 1] = True
    maps.fill((slice(1, 3), slice(1, 3)), inside, Tissue(5.0, 1.0, 0.0, gas=True))
    assert maps.echo_db[1, 2] == 5.0 and maps.gas[1, 2]
    assert maps.echo_db.sum() == 5.0 and maps.gas.sum() == 1
