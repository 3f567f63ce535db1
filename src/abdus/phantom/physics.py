"""Imaging physics: tissue maps -> speckle -> attenuation, TGC -> log-compressed B-mode lines.

The convolution model of ultrasound speckle (Bamber & Dickinson 1980; Meunier & Bertrand
1995): complex Gaussian scatterers whose variance is the local tissue backscatter, convolved
with a depth-invariant point-spread function, give the complex (IQ, baseband) echo field; its
magnitude is the envelope, Rayleigh distributed in fully developed speckle (mean/std = 1.913).
Everything is computed on the *polar grid* of the convex probe: ``(n_depth, n_lines)`` arrays,
axis 0 = depth samples along a beam, axis 1 = beam lines (left to right on screen).

Attenuation (~0.5 dB/cm/MHz in soft tissue, Wells 1975) accumulates along each line, two-way,
so fluid gives posterior enhancement and gas or bone give acoustic shadows; a time-gain
compensation curve with random error restores the mean level imperfectly, as on real scanners.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from abdus.phantom.scan import PolarGrid, ProbeGeometry


@dataclass(frozen=True)
class PointSpread:
    """Separable Gaussian PSF of the baseband echo, in polar *grid samples*.

    ``axial_samples``: Gaussian sigma along depth; ``lateral_samples``: sigma across lines.
    """

    axial_samples: float = 1.3
    lateral_samples: float = 1.3

    def __post_init__(self) -> None:
        if self.axial_samples <= 0 or self.lateral_samples <= 0:
            raise ValueError("PSF widths must be positive (grid samples)")


@dataclass(frozen=True)
class Tissue:
    """Acoustic properties of one tissue class.

    ``echo_db``: mean backscatter in dB relative to normal liver; ``atten``: attenuation in
    dB/cm/MHz; ``texture_db``: std (dB) of a smooth isotropic echo modulation (parenchymal
    texture); ``streak_db``: std (dB) of a modulation elongated parallel to the skin (muscle
    fibres, fat septa); ``gas``: a gas interface (total reflection with reverberation).
    """

    echo_db: float
    atten: float = 0.5
    texture_db: float = 1.5
    streak_db: float = 0.0
    gas: bool = False


@dataclass
class TissueMaps:
    """Per-sample tissue properties on the polar grid, all (n_depth, n_lines) float32 / bool."""

    echo_db: np.ndarray
    atten: np.ndarray
    texture_db: np.ndarray
    streak_db: np.ndarray
    rim_power: np.ndarray  # specular boundary echoes, linear power added after texture
    gas: np.ndarray

    @classmethod
    def filled(cls, shape: tuple[int, int], tissue: Tissue) -> TissueMaps:
        """Maps with every sample set to ``tissue``."""

        def full(value: float) -> np.ndarray:
            return np.full(shape, value, dtype=np.float32)

        return cls(
            full(tissue.echo_db),
            full(tissue.atten),
            full(tissue.texture_db),
            full(tissue.streak_db),
            full(0.0),
            np.full(shape, tissue.gas, dtype=bool),
        )

    def fill(self, block: tuple[slice, slice], inside: np.ndarray, tissue: Tissue) -> None:
        """Set ``tissue`` where ``inside`` (a boolean array of the block's shape) is True."""
        for arr, value in (
            (self.echo_db, tissue.echo_db),
            (self.atten, tissue.atten),
            (self.texture_db, tissue.texture_db),
            (self.streak_db, tissue.streak_db),
        ):
            arr[block][inside] = value
        self.gas[block][inside] = tissue.gas


@dataclass(frozen=True)
class Layer:
    """One painted structure: a shape (``sdf(x, z)`` in plane mm, negative inside, and
    ``bounds()``) filled with ``tissue`` and/or outlined by a specular rim of ``rim_db`` dB and
    ``rim_mm`` mm width (capsules, vessel walls, the diaphragm)."""

    shape: Any
    tissue: Tissue | None = None
    rim_db: float | None = None
    rim_mm: float = 0.5


def paint_layers(layers: list[Layer], grid: PolarGrid, base: Tissue) -> TissueMaps:
    """Rasterise ``layers`` in order (later ones cover earlier ones) on the polar grid.

    Each layer is evaluated only on the grid block covering its bounds. Rims are specular:
    brightest where the boundary faces the beam (Snell reflection), weak where it runs along it.
    """
    maps = TissueMaps.filled((grid.n_depth, grid.n_lines), base)
    x_all, z_all = grid.xz
    for layer in layers:
        block = grid.block(layer.shape.bounds(), pad_mm=3.0 * layer.rim_mm)
        if block is None:
            continue
        f = layer.shape.sdf(x_all[block], z_all[block])
        inside = f < 0
        if layer.tissue is not None:
            maps.fill(block, inside, layer.tissue)
            maps.rim_power[block][inside] = 0.0
        if layer.rim_db is not None and min(f.shape) > 1:
            maps.rim_power[block] += _rim(f, grid, block, layer.rim_db, layer.rim_mm)
    return maps


def _rim(
    f: np.ndarray, grid: PolarGrid, block: tuple[slice, slice], rim_db: float, rim_mm: float
) -> np.ndarray:
    """Specular boundary power on a block: Gaussian across the outline, weighted by how
    squarely the outline faces the beam (|d f / d r| / |grad f|)."""
    g_r, g_l = np.gradient(f)
    g_r = g_r / np.float32(grid.dr_mm)
    g_l = g_l / (grid.r_mm[block[0], None] * np.float32(grid.dphi))
    facing = g_r * g_r / (g_r * g_r + g_l * g_l + np.float32(1e-12))
    profile = np.exp(-((f / np.float32(rim_mm)) ** 2))
    return np.float32(10.0 ** (rim_db / 10.0)) * profile * (0.12 + 0.88 * facing * facing)


@dataclass(frozen=True)
class BModeSettings:
    """Scanner settings of one acquisition.

    ``frequency_mhz``: centre frequency; ``gain_db``: overall gain added before display;
    ``dynamic_range_db``: displayed log range (45-70 dB); ``tgc_error_db``: (n_depth,) error of
    the TGC curve against the typical attenuation of the view (dB, one value per depth
    sample: the sonographer's sliders are never perfect); ``noise_db``: electronic noise
    level relative to liver at the skin; ``smoothing``: speckle-reduction Gaussian sigma
    (grid samples) applied after log compression; ``gamma``: display post-processing curve.
    """

    frequency_mhz: float
    gain_db: float
    dynamic_range_db: float
    psf: PointSpread
    tgc_error_db: np.ndarray
    noise_db: float = -62.0
    smoothing: float = 0.0
    gamma: float = 1.0


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float]
) -> np.ndarray:
    """Zero-mean, unit-std smooth Gaussian random field (float32); ``sigma`` in grid samples."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    field = ndimage.gaussian_filter(noise, sigma, mode="wrap", truncate=3.0)
    std = float(field.std())
    return field / std if std > 0 else field


def speckle_envelope(power: np.ndarray, psf: PointSpread, rng: np.random.Generator) -> np.ndarray:
    """Envelope of complex Gaussian scatterers of variance ``power`` convolved with ``psf``.

    ``power``: (n_depth, n_lines) linear backscatter power. Returns the envelope
    (n_depth, n_lines) float32 (before log compression).
    """
    amplitude = np.sqrt(power * 0.5, dtype=np.float32)
    iq = rng.standard_normal((2, *power.shape), dtype=np.float32)
    iq *= amplitude
    # Separable, depth-invariant PSF: baseband Gaussian pulse axially, Gaussian beam laterally.
    iq = ndimage.gaussian_filter1d(iq, psf.axial_samples, axis=1, truncate=3.0)
    iq = ndimage.gaussian_filter1d(iq, psf.lateral_samples, axis=2, truncate=3.0)
    return np.hypot(iq[0], iq[1])


def two_way_loss_db(atten: np.ndarray, grid: PolarGrid, frequency_mhz: float) -> np.ndarray:
    """Round-trip attenuation (dB) reaching each sample: (n_depth, n_lines) float32."""
    db_per_sample = atten * np.float32(frequency_mhz * grid.dr_mm / 10.0)  # dB/cm/MHz -> dB
    return 2.0 * np.cumsum(db_per_sample, axis=0, dtype=np.float32)


def attenuation_amplitude(
    atten: np.ndarray, grid: PolarGrid, frequency_mhz: float, leak_db: float = -30.0
) -> np.ndarray:
    """Two-way amplitude factor (n_depth, n_lines) from the cumulative attenuation along lines.

    Side lobes of the beam see past a reflector, so no shadow is darker than ``leak_db``
    below the level of plain soft tissue (0.5 dB/cm/MHz) at the same depth.
    """
    loss_db = two_way_loss_db(atten, grid, frequency_mhz)
    return _amplitude(loss_db, grid, frequency_mhz, leak_db)


def _amplitude(
    loss_db: np.ndarray, grid: PolarGrid, frequency_mhz: float, leak_db: float
) -> np.ndarray:
    depth_cm = np.arange(grid.n_depth, dtype=np.float32)[:, None] * np.float32(grid.dr_mm / 10)
    floor_db = 2.0 * 0.5 * frequency_mhz * depth_cm - leak_db
    return np.power(np.float32(10.0), -np.minimum(loss_db, floor_db) / np.float32(20.0))


def reverberation_power(maps: TissueMaps, grid: PolarGrid, amplitude: np.ndarray) -> np.ndarray:
    """Dirty shadow behind gas: decaying repeated echoes below each line's first gas sample.

    Returns (n_depth, n_lines) linear power, already scaled by the attenuation reaching the gas.
    """
    power = np.zeros(maps.gas.shape, dtype=np.float32)
    cols = np.flatnonzero(maps.gas.any(axis=0))
    if cols.size == 0:
        return power
    first = np.argmax(maps.gas[:, cols], axis=0)  # (n_gas_lines,)
    depth = np.arange(grid.n_depth, dtype=np.float32)[:, None]
    below_mm = (depth - first[None, :]) * np.float32(grid.dr_mm)
    period_mm = 4.0  # reverberation between gas and probe-side interfaces, a few mm apart
    comb = 0.15 + 0.85 * np.cos(np.float32(2.0 * np.pi / period_mm) * below_mm) ** 8
    decay = np.exp(-np.maximum(below_mm, 0.0) / np.float32(18.0))
    level = amplitude[first, cols] ** 2 * np.float32(10**-0.8)  # ~8 dB under the tissue
    power[:, cols] = np.where(below_mm > 1.0, comb * decay * level[None, :], 0.0)
    return power


def tissue_power(maps: TissueMaps, rng: np.random.Generator) -> np.ndarray:
    """Linear backscatter power (n_depth, n_lines) with parenchymal texture and streaks."""
    shape = maps.echo_db.shape
    texture = smooth_field(rng, shape, (5.0, 3.0))  # mottling of a few mm
    streaks = smooth_field(rng, shape, (0.8, 6.0))
    echo_db = maps.echo_db + maps.texture_db * texture + maps.streak_db * streaks
    return np.power(np.float32(10.0), echo_db / np.float32(10.0)) + maps.rim_power


def tgc_gain_db(loss_db: np.ndarray, dr_mm: float, settings: BModeSettings) -> np.ndarray:
    """TGC gain (n_depth,) in dB. A sonographer sets the sliders so the typical tissue of the
    view looks even with depth: the gain follows the median loss over the lines (shadows and
    enhancement stay visible), smoothed like 8 sliders, plus the random slider error."""
    typical = np.median(loss_db[:, ::4], axis=1)
    # ... but no slider goes beyond ~10 dB over plain soft tissue (behind the spine, lung).
    depth_cm = np.arange(loss_db.shape[0], dtype=np.float32) * np.float32(dr_mm / 10.0)
    typical = np.minimum(typical, 2.0 * 0.5 * settings.frequency_mhz * depth_cm + 10.0)
    smooth = ndimage.gaussian_filter1d(typical, max(1.0, loss_db.shape[0] / 16.0), mode="nearest")
    return smooth + settings.tgc_error_db


def bmode_lines(
    maps: TissueMaps, grid: PolarGrid, settings: BModeSettings, rng: np.random.Generator
) -> np.ndarray:
    """Full chain on the polar grid; returns display brightness (n_depth, n_lines) in [0, 1]."""
    power = tissue_power(maps, rng)
    loss_db = two_way_loss_db(maps.atten, grid, settings.frequency_mhz)
    amplitude = _amplitude(loss_db, grid, settings.frequency_mhz, leak_db=-30.0)
    received = power * amplitude**2 + reverberation_power(maps, grid, amplitude)
    # Element directivity: echoes weaken towards the sector edges.
    edge = np.abs(np.linspace(-1.0, 1.0, grid.n_lines, dtype=np.float32))
    received *= 1.0 - 0.35 * edge**6
    # Electronic noise is white, added before the TGC amplifies it with depth.
    received += np.float32(10.0 ** (settings.noise_db / 10.0))
    envelope = speckle_envelope(received, settings.psf, rng)
    gain_db = tgc_gain_db(loss_db, grid.dr_mm, settings) + settings.gain_db
    level_db = 20.0 * np.log10(envelope + np.float32(1e-12)) + gain_db[:, None]
    # Log compression: 0 dB (liver, mean speckle) sits ~68% up the displayed range.
    shown = (level_db + 0.68 * settings.dynamic_range_db) / settings.dynamic_range_db
    if settings.smoothing > 0.05:
        shown = ndimage.gaussian_filter(shown, settings.smoothing, truncate=2.5)
    shown = np.clip(shown, 0.0, 1.0)
    return np.power(shown, np.float32(settings.gamma), dtype=np.float32)


def uniform(rng: np.random.Generator, lo: float, hi: float, digits: int = 2) -> float:
    """A uniform draw rounded to ``digits`` (scanner settings are shown rounded)."""
    return round(float(rng.uniform(lo, hi)), digits)


def _tgc_error(rng: np.random.Generator, n_depth: int, slope_db: float) -> np.ndarray:
    """Imperfect TGC: 8 slider offsets (dB) interpolated over depth plus a slope error."""
    sliders = rng.normal(0.0, 2.0, 8)
    depth = np.linspace(0.0, 1.0, n_depth, dtype=np.float32)
    curve = np.interp(depth, np.linspace(0.0, 1.0, 8), sliders)
    return (curve + slope_db * depth).astype(np.float32)


def sample_settings(
    rng: np.random.Generator, probe: ProbeGeometry
) -> tuple[BModeSettings, PolarGrid, dict]:
    """Random scanner settings for ``probe`` and the polar grid they need.

    The PSF is drawn in mm / degrees (axial sigma 0.3-0.6 mm, lateral 0.5 deg widened
    x0.7-2) and converted to grid samples; the grid samples the PSF at ~1.25 samples per
    sigma. Returns the settings, the grid and a JSON-serialisable record of the choices.
    """
    # Deeper settings need lower frequencies to keep the round-trip loss within ~60 dB.
    f_max = min(5.0, 62.0 / (probe.depth_mm / 10.0))
    freq = uniform(rng, min(2.0, f_max - 0.3), f_max, 1)
    axial_mm = uniform(rng, 0.3, 0.6, 3)  # Gaussian sigma of the pulse envelope
    lateral_deg = 0.5 * uniform(rng, 0.7, 2.0, 3)  # beam width, widened x0.7-2
    n_depth = int(np.clip(round(probe.depth_mm * 1.25 / axial_mm), 300, 560))
    n_lines = int(np.clip(round(probe.sector_deg * 1.25 / lateral_deg), 96, 224))
    grid = PolarGrid(probe, n_depth, n_lines)
    psf = PointSpread(axial_mm / grid.dr_mm, math.radians(lateral_deg) / grid.dphi)
    settings = BModeSettings(
        frequency_mhz=freq,
        gain_db=uniform(rng, -5.0, 5.0, 1),
        dynamic_range_db=float(rng.integers(45, 71)),
        psf=psf,
        tgc_error_db=_tgc_error(rng, n_depth, float(rng.normal(0.0, 3.0))),
        noise_db=uniform(rng, -84.0, -72.0, 1),
        smoothing=uniform(rng, 0.0, 1.0),
        gamma=uniform(rng, 0.8, 1.25),
    )
    acq = {
        "frequency_mhz": freq,
        "gain_db": settings.gain_db,
        "dynamic_range_db": settings.dynamic_range_db,
        "psf": {"axial_mm": axial_mm, "lateral_deg": round(lateral_deg, 4)},
        "tgc_db": [
            round(float(v), 2)
            for v in np.interp(
                np.linspace(0, 1, 8), np.linspace(0, 1, n_depth), settings.tgc_error_db
            )
        ],
        "noise_db": settings.noise_db,
        "speckle_smoothing": settings.smoothing,
        "gamma": settings.gamma,
        "grid": [n_depth, n_lines],
    }
    return settings, grid, acq
