"""Acoustic shadows for augmentation: a dark band behind a rib, along the scan lines.

A rib (or gas) near the probe reflects almost all of the sound, so the image behind it is dark
along the scan lines that cross it. On the model canvas (model px, x right, y down, the probe at
the top) a shadow here starts at ``start`` (x, y), runs away from the probe at ``angle``
radians from straight down, is ``width`` px wide and keeps ``transmission`` of the echo inside.
Its edges are one pixel soft. The generator keeps every landmark's own scan line clear of
shadows, and so does the augmentation: a shadow that would cover a landmark is not applied
(``shadow_spares``), so the network learns to find an organ's end beyond a shadow, not to guess
one inside it.

Shapes: B images, H, W model px, C landmarks; all tensors on one device.
"""

from __future__ import annotations

import torch

# A landmark closer than this to a shadow's band counts as covered (model px).
CLEARANCE_PX = 2.0
# Where a drawn shadow starts, as fractions of the canvas width and height (ribs lie near the
# probe), and how far its direction turns from straight down either way (a sector's scan lines).
START_X_FRACTION, START_Y_FRACTION, MAX_TURN_DEG = (0.1, 0.9), (0.05, 0.35), 25.0


def _frame(start: torch.Tensor, angle: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    """(across, along): distance of (x, y) from each shadow's centre line and position along it
    from its start (> 0 away from the probe). x, y broadcast against (B, 1, 1)."""
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    dx, dy = x - start[:, 0, None, None], y - start[:, 1, None, None]
    return (dx * cos - dy * sin).abs(), dx * sin + dy * cos


def shadow_factor(
    size: tuple[int, int],
    start: torch.Tensor,
    angle: torch.Tensor,
    width: torch.Tensor,
    transmission: torch.Tensor,
) -> torch.Tensor:
    """(B, 1, H, W) float32 multiplier of the pixels: ``transmission`` inside each image's
    shadow, 1 outside. ``start`` (B, 2) model px (x, y); ``angle``, ``width`` (px) and
    ``transmission`` (B,)."""
    H, W = size
    y = torch.arange(H, dtype=torch.float32, device=start.device)[:, None]
    x = torch.arange(W, dtype=torch.float32, device=start.device)[None, :]
    across, along = _frame(start.float(), angle.float(), x, y)
    band = (width.float()[:, None, None] / 2 - across + 0.5).clamp(0.0, 1.0)
    inside = band * (along + 0.5).clamp(0.0, 1.0)
    darkening = (1.0 - transmission.float())[:, None, None] * inside
    return (1.0 - darkening)[:, None]


def shadow_spares(
    points: torch.Tensor, start: torch.Tensor, angle: torch.Tensor, width: torch.Tensor
) -> torch.Tensor:
    """(B,) bool: True where no landmark of ``points`` (B, C, 2) model px, NaN where absent,
    lies within ``CLEARANCE_PX`` of the image's shadow."""
    x, y = points[..., 0].float()[:, :, None], points[..., 1].float()[:, :, None]
    across, along = _frame(start.float(), angle.float(), x, y)  # (B, C, 1)
    near = (across <= width.float()[:, None, None] / 2 + CLEARANCE_PX) & (along >= -CLEARANCE_PX)
    return ~near.squeeze(-1).any(dim=1)  # NaN compares False: an absent landmark is spared


__all__ = [
    "CLEARANCE_PX",
    "MAX_TURN_DEG",
    "START_X_FRACTION",
    "START_Y_FRACTION",
    "shadow_factor",
    "shadow_spares",
]
