"""Batched augmentation on the training device: the changes of ``UltrasoundDataset._augment``
(zoom, rotation, shift about the canvas centre; gamma, gain; acoustic shadows), drawn per image
by a torch generator and applied to a whole batch in one ``affine_grid`` / ``grid_sample``.

The geometry is the CPU augmentation's: model px ``p' = centre + A (p - centre) + shift`` with
``A = zoom x rotation``, the image resampled at the inverse map (bilinear, ``align_corners``),
the landmarks moved by the forward map, so a landmark's heat map follows its image. The draws
come from another random stream than the CPU's (numpy, per image), so the two paths do not give
the same images bit for bit; their distributions are the same.

Shapes: B batch, H, W model px, C = 14 landmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from abdus.data.dataset import AugmentConfig
from abdus.data.shadows import (
    MAX_TURN_DEG,
    START_X_FRACTION,
    START_Y_FRACTION,
    shadow_factor,
    shadow_spares,
)


@dataclass(frozen=True)
class ShadowDraw:
    """One batch's acoustic shadows (``abdus.data.shadows``), each (B,) on the device:
    ``drawn`` bool (the image gets one, if it spares the landmarks), ``start`` (B, 2) model px
    (x, y), ``angle`` radians, ``width`` model px, ``transmission``."""

    drawn: torch.Tensor
    start: torch.Tensor
    angle: torch.Tensor
    width: torch.Tensor
    transmission: torch.Tensor


@dataclass(frozen=True)
class AugmentDraw:
    """One batch's random changes, each (B,) float64 on the device (``shift`` (B, 2) model px
    as (x, y); ``angle`` radians); ``shadow`` None when the config draws none."""

    zoom: torch.Tensor
    shift: torch.Tensor
    angle: torch.Tensor
    gamma: torch.Tensor
    gain: torch.Tensor
    shadow: ShadowDraw | None = None


def draw_augmentation(
    config: AugmentConfig, batch: int, size: tuple[int, int], generator: torch.Generator
) -> AugmentDraw:
    """Draw ``batch`` images' changes from ``generator`` (on its device), ranges of ``config``;
    ``size`` (H, W) model px sets the shift in px."""
    H, W = size

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        u = torch.rand(batch, *shape, generator=generator, device=generator.device)
        return low + (high - low) * u.double()

    t = config.translate_fraction
    shift = uniform(-t, t, 2) * torch.tensor([W, H], dtype=torch.float64, device=generator.device)
    log_gamma = uniform(math.log(config.gamma_range[0]), math.log(config.gamma_range[1]))
    turn = math.radians(config.rotation_deg)
    geometry = {
        "zoom": uniform(*config.scale_range),
        "shift": shift,
        "angle": uniform(-turn, turn),
        "gamma": torch.exp(log_gamma),
        "gain": uniform(*config.gain_range),
    }
    if config.shadow_probability <= 0:  # no draws: the stream of runs without shadows stays
        return AugmentDraw(**geometry)
    shadow_turn = math.radians(MAX_TURN_DEG)
    start = torch.stack((uniform(*START_X_FRACTION) * W, uniform(*START_Y_FRACTION) * H), -1)
    shadow = ShadowDraw(
        drawn=uniform(0.0, 1.0) < config.shadow_probability,
        start=start,
        angle=uniform(-shadow_turn, shadow_turn),
        width=uniform(*config.shadow_width_fraction) * W,
        transmission=uniform(*config.shadow_transmission),
    )
    return AugmentDraw(**geometry, shadow=shadow)


def forward_matrix(draw: AugmentDraw) -> torch.Tensor:
    """(B, 2, 2) float64 ``A = zoom x rotation`` acting on (x, y) model px offsets."""
    cos, sin = torch.cos(draw.angle), torch.sin(draw.angle)
    rotation = torch.stack((torch.stack((cos, -sin), -1), torch.stack((sin, cos), -1)), -2)
    return draw.zoom[:, None, None] * rotation


def move_points(points: torch.Tensor, draw: AugmentDraw, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, 2) model px -> the same points after the draw's forward map (NaN stays NaN)."""
    H, W = size
    centre = points.new_tensor([(W - 1) / 2, (H - 1) / 2])
    forward = forward_matrix(draw).to(points.dtype)
    moved = (points - centre) @ forward.transpose(1, 2)  # (B, C, 2) @ (B, 2, 2)
    return centre + moved + draw.shift[:, None, :].to(points.dtype)


def sampling_grid(draw: AugmentDraw, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, 2) ``grid_sample`` grid of the inverse map: output pixel q samples the input at
    ``centre + A^-1 (q - centre - shift)``; with ``align_corners`` the normalised coordinate is
    ``u = S (q - centre)``, S = diag(2 / (W - 1), 2 / (H - 1))."""
    H, W = size
    inverse = torch.linalg.inv(forward_matrix(draw))  # (B, 2, 2)
    to_unit = torch.tensor([2.0 / (W - 1), 2.0 / (H - 1)], dtype=torch.float64)
    to_unit = to_unit.to(inverse.device)
    matrix = to_unit[None, :, None] * inverse / to_unit[None, None, :]  # S A^-1 S^-1
    offset = -(to_unit[None, :] * (inverse @ draw.shift[:, :, None])[:, :, 0])  # -S A^-1 shift
    theta = torch.cat((matrix, offset[:, :, None]), dim=2).float()  # (B, 2, 3)
    return F.affine_grid(theta, [theta.shape[0], 1, H, W], align_corners=True)


def augment_batch(
    image: torch.Tensor, kept: torch.Tensor, points: torch.Tensor, draw: AugmentDraw
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply ``draw`` to a batch.

    Args:
        image: (B, 1, H, W) float32 in [0, 1]. kept: (B, 1, H, W) float32 0/1 (the kept mask).
        points: (B, C, 2) float64 model px, NaN where absent.

    Returns:
        (image, kept, points): the image resampled then ``clamp(0, 1) ** gamma``, times
        ``gain`` and clipped, then darkened by its shadow where it has one that spares its
        landmarks; the mask resampled (bilinear, as the CPU path; threshold 0.5 later); the
        points moved by the forward map.
    """
    H, W = image.shape[-2:]
    grid = sampling_grid(draw, (H, W))
    warped = F.grid_sample(
        torch.cat((image, kept), dim=1), grid, mode="bilinear", align_corners=True
    )  # (B, 2, H, W)
    gamma = draw.gamma.float()[:, None, None, None]
    gain = draw.gain.float()[:, None, None, None]
    pixels = warped[:, :1].clamp(0.0, 1.0).pow(gamma).mul(gain).clamp(0.0, 1.0)
    moved = move_points(points, draw, (H, W))
    shadow = draw.shadow
    if shadow is not None:
        applied = shadow.drawn & shadow_spares(moved, shadow.start, shadow.angle, shadow.width)
        transmission = torch.where(applied, shadow.transmission, torch.ones_like(shadow.width))
        factor = shadow_factor((H, W), shadow.start, shadow.angle, shadow.width, transmission)
        pixels = pixels * factor.to(pixels.dtype)
    return pixels, warped[:, 1:], moved
