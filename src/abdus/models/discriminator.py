"""The PatchGAN discriminator of the adversarial loss (paper section 2.2, Eq. 4).

"Following PatchGAN [10], an adversarial network D : R^{N_I x (N_L+1)} -> R^{N_M x 1} is
defined; it takes both the input image and the output prediction from the base network to
identify the real and fake outputs on the basis of N_M patches." This is pix2pix's 70x70
``NLayerDiscriminator`` (Isola et al. 2017): C64-C128-C256-C512 4x4 convolutions with strides
2, 2, 2, 1, LeakyReLU 0.2, normalisation on every layer but the first, and a final 4x4
convolution to one logit per patch. For a 256 x 256 input the logit map is 30 x 30.

Shapes: B batch, H, W model pixels; input (B, 1 + 14, H, W) = image and 14 heat maps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from abdus.taxonomy import NUM_LANDMARKS

NORMS = ("batch", "instance")


@dataclass(frozen=True)
class DiscriminatorConfig:
    """PatchGAN settings. ``width``: channels of the first layer (64); ``n_layers``: strided
    layers (3 gives the 70x70 receptive field); ``norm``: "batch" or "instance";
    ``downsample``: D sees the image and heat maps average-pooled by this factor (1: at the
    network's input size, pix2pix; 2: at half of it, a quarter of the pixels, so each patch
    covers twice the span in mm)."""

    width: int = 64
    n_layers: int = 3
    norm: str = "batch"
    in_channels: int = 1 + NUM_LANDMARKS
    downsample: int = 1

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; valid: {', '.join(NORMS)}")
        for name in ("width", "n_layers", "in_channels", "downsample"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiscriminatorConfig:
        valid = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - valid):
            raise ValueError(
                f"unknown discriminator option(s) {unknown}; valid: {', '.join(sorted(valid))}"
            )
        return cls(**data)


class PatchDiscriminator(nn.Module):
    """(B, in_channels, H, W) -> (B, 1, h, w) real/fake logits, one per (overlapping) patch."""

    def __init__(self, config: DiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DiscriminatorConfig()
        norm_layer = nn.BatchNorm2d if config.norm == "batch" else nn.InstanceNorm2d
        use_bias = config.norm == "instance"  # pix2pix: BN has its own shift
        factor = int(config.downsample)
        pool: list[nn.Module] = [nn.AvgPool2d(factor)] if factor > 1 else []
        layers: list[nn.Module] = [
            *pool,
            nn.Conv2d(config.in_channels, config.width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = config.width
        for n in range(1, config.n_layers + 1):
            stride = 2 if n < config.n_layers else 1  # strides 2, 2, ..., 1
            out = config.width * min(2**n, 8)
            layers += [
                nn.Conv2d(channels, out, 4, stride=stride, padding=1, bias=use_bias),
                norm_layer(out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        self._first_conv_index = len(pool)
        _init_pix2pix(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The input takes the memory format of the first convolution's weights (channels-last
        when the trainer made the network so): on the CPU the pooling that ``downsample`` puts
        first ran about 5x slower on a contiguous input (docs/benchmarks.md, "Landmark steps
        without layout conversions")."""
        first_conv = self.model[self._first_conv_index]
        if first_conv.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)


def _init_pix2pix(module: nn.Module) -> None:
    """pix2pix's "normal" init: conv weights N(0, 0.02), norm weights N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def receptive_field(n_layers: int = 3) -> int:
    """Receptive field (px) of one output logit of a PatchGAN with ``n_layers`` (70 for 3).

    Walks back from one output pixel through the 4x4 convolutions: r <- (r - 1) * stride + 4.
    """
    strides = [2] * n_layers + [1, 1]  # first conv + n-1 strided convs, one stride-1, final
    field = 1
    for stride in reversed(strides):
        field = (field - 1) * stride + 4
    return field


def build_discriminator(**options: Any) -> PatchDiscriminator:
    """A PatchGAN for the adversarial loss; options are ``DiscriminatorConfig`` fields."""
    return PatchDiscriminator(DiscriminatorConfig.from_dict(options))


def mask_absent(heatmaps: torch.Tensor, landmark_mask: torch.Tensor) -> torch.Tensor:
    """Zero the channels of landmarks an image does not have.

    Args:
        heatmaps: (B, L, H, W). landmark_mask: (B, L), 1/True where the landmark exists.

    Returns:
        (B, L, H, W): real and fake inputs of D look alike on absent channels, so D judges only
        the landmarks that the image's view carries.
    """
    if landmark_mask.shape != heatmaps.shape[:2]:
        raise ValueError(
            f"landmark_mask shape {tuple(landmark_mask.shape)} does not match heat maps "
            f"{tuple(heatmaps.shape[:2])}"
        )
    return heatmaps * landmark_mask.to(heatmaps.dtype)[:, :, None, None]


def discriminator_input(
    image: torch.Tensor, heatmaps: torch.Tensor, landmark_mask: torch.Tensor
) -> torch.Tensor:
    """(B, 1, H, W) image + (B, L, H, W) heat maps -> (B, 1 + L, H, W), absent channels zero."""
    return torch.cat([image.to(heatmaps.dtype), mask_absent(heatmaps, landmark_mask)], dim=1)


__all__ = [
    "DiscriminatorConfig",
    "PatchDiscriminator",
    "build_discriminator",
    "discriminator_input",
    "mask_absent",
    "receptive_field",
]
