"""ResNet encoder pieces with a 1-channel stem (paper section 2.2).

The encoder "follows ResNet50 [7]. The first convolutional layer is modified to take a single
channel input. While the first two residual blocks are shared across all tasks ..., two copies
of the 3rd and 4th residual blocks are used, one for view classification, and the other for
landmark detection." ``ResNetEncoder`` is the stem plus the first ``num_stages`` residual
stages (2 for the shared trunk, 4 for a single-path network); ``ResNetTail`` is one copy of
stages 3-4. The residual blocks are MONAI's 2-D ``ResNetBlock`` / ``ResNetBottleneck``.

Attribute names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1`` ... ``layer4``, and
inside a block ``conv1``, ``bn1``, ``downsample.0`` ...), so ImageNet weights in torchvision's
key layout map onto these modules by prefix (``load_imagenet_weights``).

Shapes: B batch, H, W model pixels (both divisible by 32). Feature strides: stem 2, stage 1: 4,
stage 2: 8, stage 3: 16, stage 4: 32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck
from torch import nn
from torch.nn import functional as F

from abdus.errors import AbdusInputError


@dataclass(frozen=True)
class ResNetSpec:
    """Block type and blocks per stage of a ResNet depth (He et al. 2016, Table 1)."""

    block: type[ResNetBlock] | type[ResNetBottleneck]
    layers: tuple[int, int, int, int]


RESNET_SPECS: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec(ResNetBlock, (2, 2, 2, 2)),
    "resnet34": ResNetSpec(ResNetBlock, (3, 4, 6, 3)),
    "resnet50": ResNetSpec(ResNetBottleneck, (3, 4, 6, 3)),
}

STAGE_STRIDES = (1, 2, 2, 2)  # stage 1 follows the stride-2 max-pool, so it keeps resolution


def resnet_spec(depth: str) -> ResNetSpec:
    """The spec of ``depth``; ValueError naming the valid depths otherwise."""
    if depth not in RESNET_SPECS:
        raise ValueError(f"unknown depth {depth!r}; valid depths: {', '.join(RESNET_SPECS)}")
    return RESNET_SPECS[depth]


def stage_channels(depth: str, widths: Sequence[int]) -> tuple[int, int, int, int]:
    """Output channels of stages 1-4: ``widths[i] * expansion`` (4 for bottleneck blocks)."""
    expansion = resnet_spec(depth).block.expansion
    return tuple(w * expansion for w in widths)  # type: ignore[return-value]


class StridedPointwiseConv(nn.Conv2d):
    """The 1x1 stride-s projection of a ResNet shortcut (no bias), with a way around a
    PyTorch bug: on a CPU, the backward pass of a 1x1 stride-2 convolution in the
    channels-last format corrupted memory (``double free or corruption``, segmentation fault)
    at some odd batch sizes (3, 5, 7, 9, 15 at 8 -> 16 channels, 16 x 16; PyTorch 2.13), which
    kept CPU training out of channels-last. A channels-last input on the CPU is therefore
    subsampled first (every s-th pixel) and then convolved with stride 1: the same function.
    Every other input (NCHW, or on a GPU) takes the plain strided convolution, so NCHW
    training, GPU training and every model trained before are unchanged bit for bit. The
    parameter is ``weight`` as in ``nn.Conv2d``: model files and torchvision's key layout load
    unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = self.stride[0]
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        if step == 1 or not channels_last or not x.is_cpu:
            return super().forward(x)
        return F.conv2d(x[:, :, ::step, ::step], self.weight)


def make_stage(depth: str, in_channels: int, width: int, stage: int) -> nn.Sequential:
    """Residual stage ``stage`` (1-4): (B, in_channels, h, w) -> (B, width*exp, h/s, w/s).

    The first block downsamples (stride ``STAGE_STRIDES[stage-1]``) with a 1x1 conv + BN
    projection shortcut when the shape changes, as torchvision/He et al. (option B).
    """
    spec = resnet_spec(depth)
    block, stride = spec.block, STAGE_STRIDES[stage - 1]
    out_channels = width * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            StridedPointwiseConv(in_channels, out_channels, stride=stride),
            nn.BatchNorm2d(out_channels),
        )
    blocks = [block(in_channels, width, spatial_dims=2, stride=stride, downsample=downsample)]
    blocks += [
        block(out_channels, width, spatial_dims=2) for _ in range(spec.layers[stage - 1] - 1)
    ]
    return nn.Sequential(*blocks)


def init_resnet_weights(module: nn.Module) -> None:
    """He (fan-out) init for convolutions, BN weight 1 / bias 0, as torchvision's ResNet."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNetEncoder(nn.Module):
    """Stem (7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max-pool) + residual stages 1..n.

    ``forward(x: (B, in_channels, H, W))`` returns the list of features
    ``[stem (B, widths[0], H/2, W/2), stage1 (H/4), ..., stage n (H/2^(n+1))]``; the stem
    feature is taken after the ReLU, before the max-pool (the decoder's finest skip).
    ``out_channels`` lists their channels.
    """

    def __init__(
        self, depth: str, widths: Sequence[int], in_channels: int = 1, num_stages: int = 4
    ) -> None:
        super().__init__()
        if not 1 <= num_stages <= 4:
            raise ValueError(f"num_stages must be 1-4, got {num_stages}")
        channels = stage_channels(depth, widths)
        self.conv1 = nn.Conv2d(
            in_channels, widths[0], kernel_size=7, stride=2, padding=3, bias=False
        )
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        previous = widths[0]
        for stage in range(1, num_stages + 1):
            self.add_module(f"layer{stage}", make_stage(depth, previous, widths[stage - 1], stage))
            previous = channels[stage - 1]
        self.num_stages = num_stages
        self.out_channels: tuple[int, ...] = (widths[0], *channels[:num_stages])
        init_resnet_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))  # (B, w0, H/2, W/2)
        features = [stem]
        y = self.maxpool(stem)  # (B, w0, H/4, W/4)
        for stage in range(1, self.num_stages + 1):
            y = getattr(self, f"layer{stage}")(y)
            features.append(y)
        return features


class ResNetTail(nn.Module):
    """One copy of residual stages 3 and 4 (``layer3``, ``layer4``) after a shared trunk.

    ``forward(x: (B, C2, H/8, W/8))`` -> ``[stage3 (B, C3, H/16, W/16), stage4 (B, C4, H/32,
    W/32)]``.
    """

    def __init__(self, depth: str, widths: Sequence[int]) -> None:
        super().__init__()
        channels = stage_channels(depth, widths)
        self.layer3 = make_stage(depth, channels[1], widths[2], 3)
        self.layer4 = make_stage(depth, channels[2], widths[3], 4)
        self.out_channels: tuple[int, ...] = (channels[2], channels[3])
        init_resnet_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s3 = self.layer3(x)
        return [s3, self.layer4(s3)]


# ------------------------------------------------------------------------- ImageNet weights
def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A torchvision-layout state dict from a local file (optionally wrapped / DDP-prefixed)."""
    if not path.is_file():
        raise AbdusInputError("ImageNet weights file not found", path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise AbdusInputError(
            f"not a readable PyTorch state dict ({exc.__class__.__name__})", path
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise AbdusInputError("expected a mapping of parameter names to tensors", path)
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_imagenet_weights(model: nn.Module, path: str | Path) -> dict[str, int]:
    """Copy torchvision-layout ResNet weights from the local file ``path`` into ``model``.

    ``model.imagenet_prefixes()`` maps each torchvision top-level module (``conv1``, ``bn1``,
    ``layer1`` ... ``layer4``) to the model's module paths that receive it (stages 3-4 go into
    both copies of a dual-path network). The RGB ``conv1`` kernel (64, 3, 7, 7) is summed over
    its input channels to (64, 1, 7, 7), which gives a grey image the response of an RGB image
    with R = G = B. ``fc.*`` (1000 ImageNet classes) is skipped. Nothing is downloaded.

    Returns counts ``{"loaded": tensors copied, "skipped": source tensors not used}``. A missing
    target or a shape mismatch (e.g. other widths or depth) raises AbdusInputError naming the
    file.
    """
    path = Path(path)
    source = _read_state_dict(path)
    prefixes: Mapping[str, Sequence[str]] = model.imagenet_prefixes()  # type: ignore[operator]
    target = model.state_dict()
    updates: dict[str, torch.Tensor] = {}
    skipped = 0
    for key, value in source.items():
        top, _, rest = key.partition(".")
        if top not in prefixes:
            skipped += 1
            continue
        if key == "conv1.weight" and value.shape[1] != 1:
            value = value.sum(dim=1, keepdim=True)  # RGB -> grey (paper 2.2: 1-channel input)
        for prefix in prefixes[top]:
            name = f"{prefix}.{rest}"
            if name not in target:
                raise AbdusInputError(f"weight {key!r} has no place in the model ({name})", path)
            if target[name].shape != value.shape:
                raise AbdusInputError(
                    f"weight {key!r} has shape {tuple(value.shape)}, the model expects "
                    f"{tuple(target[name].shape)} (other depth or widths?)",
                    path,
                )
            updates[name] = value.to(target[name].dtype)
    roots = tuple(f"{p}." for paths in prefixes.values() for p in paths)
    expected = {n for n in target if n.startswith(roots) and "num_batches_tracked" not in n}
    if missing := sorted(expected - set(updates)):
        raise AbdusInputError(f"{len(missing)} encoder weights missing, e.g. {missing[0]!r}", path)
    model.load_state_dict(updates, strict=False)
    return {"loaded": len(updates), "skipped": skipped}


__all__ = [
    "RESNET_SPECS",
    "ResNetEncoder",
    "ResNetSpec",
    "ResNetTail",
    "load_imagenet_weights",
    "make_stage",
    "resnet_spec",
    "stage_channels",
]
