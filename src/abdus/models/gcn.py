"""Global Convolutional Network and Boundary Refinement modules (Peng et al., CVPR 2017).

Paper section 2.2: "On each level of skip connection between encoder and decoder, we append
Global Convolutional Network (GCN) [9] and boundary refinement modules to capture larger
receptive fields." A GCN approximates a dense k x k kernel by two separable branches,
(k x 1 then 1 x k) + (1 x k then k x 1), with no non-linearity in between (Peng et al., Fig. 2),
at O(2k) instead of O(k^2) cost. Boundary Refinement (BR) is a small residual block
``x + conv3x3(relu(conv3x3(x)))`` that sharpens the score map near object boundaries.

Shapes: (B, C, h, w) in, (B, C_out, h, w) out; spatial size is preserved (``same`` padding).
"""

from __future__ import annotations

import torch
from torch import nn


class GlobalConvolution(nn.Module):
    """GCN block: (B, in_channels, h, w) -> (B, out_channels, h, w) with a k x k receptive field.

    ``k`` must be odd so that the padding keeps the size (Peng et al. use k = 15 by default).
    """

    def __init__(self, in_channels: int, out_channels: int, k: int = 15) -> None:
        super().__init__()
        if k < 1 or k % 2 == 0:
            raise ValueError(f"GCN kernel size k must be a positive odd number, got {k}")
        pad = k // 2
        self.left = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, (k, 1), padding=(pad, 0)),
            nn.Conv2d(out_channels, out_channels, (1, k), padding=(0, pad)),
        )
        self.right = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, (1, k), padding=(0, pad)),
            nn.Conv2d(out_channels, out_channels, (k, 1), padding=(pad, 0)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.left(x) + self.right(x)


class BoundaryRefinement(nn.Module):
    """BR block: ``x + conv3x3(relu(conv3x3(x)))``; (B, C, h, w) -> (B, C, h, w)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x)


__all__ = ["BoundaryRefinement", "GlobalConvolution"]
