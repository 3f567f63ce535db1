"""The landmark decoder: one FCN-style skip decoder for all 14 landmarks (paper section 2.2).

"We form a single decoder shared across the landmarks from all views instead of one branch per
view, and the decoder follows the skip-connection style in Fully Convolutional Network (FCN)
[8], where the output channel of each level is kept the same as the total number of
landmarks." Every skip (the stem output and the outputs of stages 1-4) is turned into a
14-channel score map, by a GCN + BR (``skip="gcn"``: MGCN, MGCN_R; Peng et al. 2017, Fig. 2)
or by a 1x1 convolution (``skip="conv1x1"``: the plain FCN of MFCN / SFCN). Coarse to fine,
the running map is upsampled x2 (bilinear) and the next skip's map is added; with GCN a BR
follows each sum and a last upsample + BR brings the map from H/2 to the input size. With
``last_refine="half"`` that last BR runs at H/2 before the upsample: the same parameters at a
quarter of the pixels (abdus's option for CPUs; the paper refines at the input size).

Shapes: B batch, H, W input size in model pixels (divisible by 32), L output channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from abdus.models.gcn import BoundaryRefinement, GlobalConvolution

SKIP_KINDS = ("gcn", "conv1x1")
LAST_REFINE_KINDS = ("full", "half")  # where the last BR runs: input size (paper), or H/2


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    """(B, L, h, w) -> (B, L, 2h, 2w), bilinear (a scale factor keeps ONNX shapes dynamic)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def _skip_module(kind: str, in_channels: int, out_channels: int, gcn_k: int) -> nn.Module:
    if kind == "gcn":
        return nn.Sequential(
            GlobalConvolution(in_channels, out_channels, gcn_k), BoundaryRefinement(out_channels)
        )
    return nn.Conv2d(in_channels, out_channels, kernel_size=1)


class LandmarkDecoder(nn.Module):
    """Skip decoder: encoder features (fine to coarse) -> (B, out_channels, H, W) heat maps.

    Args:
        skip_channels: channels of the features, finest first: stem (H/2), stage 1 (H/4), ...,
            stage 4 (H/32).
        out_channels: channels of every level and of the output (14 landmarks, or one task's).
        skip: "gcn" (GCN + BR on skips, BR after each sum) or "conv1x1" (plain FCN).
        gcn_k: GCN kernel size k (odd).
        last_refine: "full" (the paper: upsample to the input size, then the last BR) or
            "half" (the last BR at H/2, then upsample; the same parameters; the demo
            network's landmark step in about three quarters of the time on 2 AVX2-only CPU
            cores, docs/benchmarks.md).
    """

    def __init__(
        self,
        skip_channels: Sequence[int],
        out_channels: int,
        skip: str = "gcn",
        gcn_k: int = 15,
        last_refine: str = "full",
    ) -> None:
        super().__init__()
        if skip not in SKIP_KINDS:
            raise ValueError(f"unknown skip {skip!r}; valid: {', '.join(SKIP_KINDS)}")
        if last_refine not in LAST_REFINE_KINDS:
            raise ValueError(
                f"unknown last_refine {last_refine!r}; valid: {', '.join(LAST_REFINE_KINDS)}"
            )
        self.skips = nn.ModuleList(
            _skip_module(skip, c, out_channels, gcn_k) for c in skip_channels
        )
        # One refinement per sum (len - 1) and one after the last upsample to full size.
        self.refine = nn.ModuleList(
            BoundaryRefinement(out_channels) if skip == "gcn" else nn.Identity()
            for _ in skip_channels
        )
        self.out_channels, self.last_refine = out_channels, last_refine

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """features: [(B, C0, H/2, W/2), (B, C1, H/4, W/4), ...] -> (B, L, H, W) raw heat maps."""
        y = self.skips[-1](features[-1])  # (B, L, H/32, W/32) for 5 levels
        for level in range(len(features) - 2, -1, -1):
            y = _upsample2(y) + self.skips[level](features[level])  # (B, L, h*2, w*2)
            y = self.refine[level + 1](y)
        if self.last_refine == "half":
            y = _upsample2(self.refine[0](y))  # (B, L, H, W)
        else:
            y = self.refine[0](_upsample2(y))  # (B, L, H, W)
        # The heat maps leave in the standard (B, L, H, W) layout whatever the trunk's memory
        # format: the losses and the decoding meet them with targets in that layout, and on
        # the CPU channels-last against contiguous made those elementwise ops and the per-map
        # maxima several times slower (docs/benchmarks.md, "Landmark steps without layout
        # conversions"). A no-op when they are contiguous already.
        return y.contiguous()


__all__ = ["LAST_REFINE_KINDS", "SKIP_KINDS", "LandmarkDecoder"]
