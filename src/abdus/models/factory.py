"""The networks of the paper's comparison (Table 1, Fig. 3) and ``build_model``.

Variants (paper section 2.3; "FCN and GCN are both based on ResNet50 except that the latter
embeds large kernels and boundary refinement in skip connection"):

=========  ==========================================================================
``stl``    single-task ResNet view classifier (GAP + FC); ImageNet weights loadable
``sfcn``   single-task FCN, one network per landmark task (5), 1x1 skips
``mfcn``   multi-task: one encoder, one shared FCN decoder (1x1 skips), no classifier
``mgcn``   ``mfcn`` with GCN + boundary refinement on the skips
``mgcn_r`` ``mgcn`` + the view classifier on a second copy of stages 3-4 (the proposed
           system; trained with the coordinate and adversarial losses, the latter with the
           separate ``build_discriminator``)
=========  ==========================================================================

Every model takes ``x`` (B, 1, H, W) with H, W divisible by 32 and returns a dict with
``logits`` (B, 11) where it classifies views and ``heatmaps`` (B, 14, H, W) (model pixels,
taxonomy channel order, raw regression output) where it detects landmarks. Each model carries
``variant``, ``config`` (``ModelConfig``) and ``output_names``. ``forward(x, only="heatmaps")``
(or "logits") computes just that output, e.g. for a DDP-wrapped model in one training stage
(unused branches would otherwise break DDP's gradient reduction). Each model splits its
parameters for the two-stage training (paper 2.2 "Implementation"): ``shared_parameters()``
(stem + stages 1-2), ``landmark_parameters()`` (landmark stages 3-4 + decoder),
``classifier_parameters()`` (view stages 3-4 + head); the ``*_modules()`` methods give the
modules (to put frozen BN in eval mode).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from abdus.choices import NETWORK_MODELS
from abdus.models.decoder import LAST_REFINE_KINDS, LandmarkDecoder
from abdus.models.encoder import ResNetEncoder, ResNetTail, resnet_spec
from abdus.models.heads import MultiLevelViewHead, SingleLevelViewHead
from abdus.taxonomy import NUM_LANDMARKS, TASK_BY_NAME, TASKS

VARIANTS = NETWORK_MODELS  # abdus.choices.Model, less the PBT baseline
RESNET_TOP_MODULES = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture settings, saved in checkpoints (``to_dict`` / ``from_dict``).

    depth: "resnet18" | "resnet34" | "resnet50" (paper: resnet50). widths: base channels of
    stages 1-4 (ResNet: 64, 128, 256, 512; tiny presets e.g. 8, 16, 32, 64). gcn_k: GCN kernel
    size (odd; Peng et al. 15). classifier_hidden / classifier_dropout: the width of the
    multi-level view head's first FC layer and the dropout after it, before the last one (the
    paper gives neither). task: ``sfcn`` only, build just this
    landmark task's network (None = all five). last_refine: where the decoder's last boundary
    refinement runs, "full" (the input size, the paper) or "half" (H/2, then upsampled).
    """

    depth: str = "resnet50"
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    gcn_k: int = 15
    classifier_hidden: int = 512
    classifier_dropout: float = 0.5
    task: str | None = None
    last_refine: str = "full"

    def __post_init__(self) -> None:
        resnet_spec(self.depth)  # ValueError naming the valid depths
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise ValueError(f"widths must be 4 positive integers, got {self.widths}")
        if self.gcn_k < 1 or self.gcn_k % 2 == 0:
            raise ValueError(f"gcn_k must be a positive odd number, got {self.gcn_k}")
        if self.classifier_hidden < 1:
            raise ValueError(f"classifier_hidden must be >= 1, got {self.classifier_hidden}")
        if not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1), got {self.classifier_dropout}")
        if self.last_refine not in LAST_REFINE_KINDS:
            raise ValueError(
                f"last_refine must be one of {', '.join(LAST_REFINE_KINDS)}, "
                f"got {self.last_refine!r}"
            )
        if self.task is not None and self.task not in TASK_BY_NAME:
            raise ValueError(f"unknown task {self.task!r}; valid tasks: {', '.join(TASK_BY_NAME)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready dict (widths as a list)."""
        data = asdict(self)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of ``to_dict``; unknown keys raise ValueError naming the valid ones."""
        valid = [f.name for f in fields(cls)]
        if unknown := sorted(set(data) - set(valid)):
            raise ValueError(f"unknown model option(s) {unknown}; valid: {', '.join(valid)}")
        return cls(**{**data, "widths": tuple(data.get("widths", cls.widths))})


def check_input(x: torch.Tensor) -> None:
    """ValueError unless ``x`` is (B, 1, H, W) with H and W divisible by 32 (five stride-2
    steps). Skipped while tracing/compiling so exported graphs keep dynamic sizes."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] % 32 or x.shape[3] % 32:
        raise ValueError(
            f"input must be (B, 1, H, W) with H, W divisible by 32, got {tuple(x.shape)}"
        )


def _check_only(model: nn.Module, only: str | None) -> None:
    """``only`` ("heatmaps" | "logits") must be one of the model's outputs."""
    if only is not None and only not in model.output_names:
        raise ValueError(f"{model.variant} has no output {only!r}; it has: {model.output_names}")


def _parameters_of(modules: list[nn.Module]) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


class _TwoStageModel(nn.Module):
    """Parameter groups for the two training stages (paper 2.2 "Implementation")."""

    variant: str
    config: ModelConfig
    output_names: tuple[str, ...]  # keys of forward's dict

    def shared_modules(self) -> list[nn.Module]:
        return []

    def landmark_modules(self) -> list[nn.Module]:
        return []

    def classifier_modules(self) -> list[nn.Module]:
        return []

    def shared_parameters(self) -> list[nn.Parameter]:
        """Stem + stages 1-2 (frozen in the view stage)."""
        return _parameters_of(self.shared_modules())

    def landmark_parameters(self) -> list[nn.Parameter]:
        """Landmark stages 3-4 + decoder (frozen in the view stage)."""
        return _parameters_of(self.landmark_modules())

    def classifier_parameters(self) -> list[nn.Parameter]:
        """View stages 3-4 + classification head (trained in the view stage)."""
        return _parameters_of(self.classifier_modules())


class MultiTaskNet(_TwoStageModel):
    """MFCN / MGCN / MGCN_R: shared stem + stages 1-2, landmark stages 3-4 + decoder, and (with
    ``classify``) a second copy of stages 3-4 + the multi-level view head (paper Fig. 2)."""

    def __init__(self, variant: str, config: ModelConfig, skip: str, classify: bool) -> None:
        super().__init__()
        self.variant, self.config, self.classify = variant, config, classify
        self.output_names = ("heatmaps", "logits") if classify else ("heatmaps",)
        self.shared = ResNetEncoder(config.depth, config.widths, num_stages=2)
        self.landmark_stages = ResNetTail(config.depth, config.widths)
        skips = self.shared.out_channels + self.landmark_stages.out_channels
        self.decoder = LandmarkDecoder(skips, NUM_LANDMARKS, skip, config.gcn_k, config.last_refine)
        if classify:
            self.view_stages = ResNetTail(config.depth, config.widths)
            levels = self.shared.out_channels[1:] + self.view_stages.out_channels  # stages 1-4
            self.view_head = MultiLevelViewHead(
                levels, config.classifier_hidden, config.classifier_dropout
            )

    def forward_shared(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 1, H, W) -> [stem (H/2), stage 1 (H/4), stage 2 (H/8)] features."""
        check_input(x)
        return self.shared(x)

    def forward_landmarks(
        self, x: torch.Tensor, shared: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """(B, 1, H, W) -> (B, 14, H, W) heat maps (``shared``: precomputed trunk features)."""
        shared = self.forward_shared(x) if shared is None else shared
        return self.decoder([*shared, *self.landmark_stages(shared[-1])])

    def forward_view(
        self, x: torch.Tensor, shared: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """(B, 1, H, W) -> (B, 11) view logits."""
        if not self.classify:
            raise RuntimeError(f"the {self.variant} model has no view classifier")
        shared = self.forward_shared(x) if shared is None else shared
        return self.view_head([*shared[1:], *self.view_stages(shared[-1])])

    def forward(self, x: torch.Tensor, only: str | None = None) -> dict[str, torch.Tensor]:
        _check_only(self, only)
        shared = self.forward_shared(x)  # one trunk pass serves both tasks ("one shot")
        out = {}
        if only in (None, "heatmaps"):
            out["heatmaps"] = self.forward_landmarks(x, shared)
        if self.classify and only in (None, "logits"):
            out["logits"] = self.forward_view(x, shared)
        return out

    def shared_modules(self) -> list[nn.Module]:
        return [self.shared]

    def landmark_modules(self) -> list[nn.Module]:
        return [self.landmark_stages, self.decoder]

    def classifier_modules(self) -> list[nn.Module]:
        return [self.view_stages, self.view_head] if self.classify else []

    def imagenet_prefixes(self) -> dict[str, tuple[str, ...]]:
        """torchvision module -> module paths here (stages 3-4 fill every copy)."""
        tails = ("landmark_stages", "view_stages") if self.classify else ("landmark_stages",)
        prefixes = {name: (f"shared.{name}",) for name in RESNET_TOP_MODULES[:4]}
        prefixes |= {name: tuple(f"{t}.{name}" for t in tails) for name in ("layer3", "layer4")}
        return prefixes


class ViewClassifierNet(_TwoStageModel):
    """STL: a plain ResNet classifier with a 1-channel stem (paper: "default ResNet50")."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.variant, self.config, self.output_names = "stl", config, ("logits",)
        self.encoder = ResNetEncoder(config.depth, config.widths, num_stages=4)
        self.head = SingleLevelViewHead(self.encoder.out_channels[-1])

    def forward_view(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> (B, 11) view logits."""
        check_input(x)
        return self.head(self.encoder(x)[-1])

    def forward(self, x: torch.Tensor, only: str | None = None) -> dict[str, torch.Tensor]:
        _check_only(self, only)
        return {"logits": self.forward_view(x)}

    def classifier_modules(self) -> list[nn.Module]:
        return [self.encoder, self.head]  # single task: everything trains in the view stage

    def imagenet_prefixes(self) -> dict[str, tuple[str, ...]]:
        return {name: (f"encoder.{name}",) for name in RESNET_TOP_MODULES}


class SingleTaskFCN(nn.Module):
    """One task's FCN: ResNet encoder + 1x1-skip decoder -> (B, len(task landmarks), H, W)."""

    def __init__(self, config: ModelConfig, task: str) -> None:
        super().__init__()
        self.task = task
        self.encoder = ResNetEncoder(config.depth, config.widths, num_stages=4)
        channels = len(TASK_BY_NAME[task].landmarks)
        self.decoder = LandmarkDecoder(self.encoder.out_channels, channels, "conv1x1")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class SingleTaskFCNSet(_TwoStageModel):
    """SFCN: one FCN per landmark task; ``forward`` places each task's channels at its place in
    the 14-channel output (taxonomy order). Channels of tasks not built (``config.task``) are 0."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.variant, self.config, self.output_names = "sfcn", config, ("heatmaps",)
        tasks = [config.task] if config.task else [t.name for t in TASKS]
        self.nets = nn.ModuleDict({task: SingleTaskFCN(config, task) for task in tasks})

    def forward_task(self, x: torch.Tensor, task: str) -> torch.Tensor:
        """(B, 1, H, W) -> (B, len(task landmarks), H, W) heat maps of one built task."""
        check_input(x)
        if task not in self.nets:
            raise ValueError(f"task {task!r} not built; built: {', '.join(self.nets)}")
        return self.nets[task](x)

    def forward_landmarks(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> (B, 14, H, W): all built networks, channels in taxonomy order."""
        B, _, H, W = x.shape
        parts = [
            self.forward_task(x, t.name)
            if t.name in self.nets
            else x.new_zeros(B, len(t.landmarks), H, W)
            for t in TASKS
        ]
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor, only: str | None = None) -> dict[str, torch.Tensor]:
        _check_only(self, only)
        return {"heatmaps": self.forward_landmarks(x)}

    def shared_modules(self) -> list[nn.Module]:
        return [m for net in self.nets.values() for m in _stem_and_stages(net.encoder, (1, 2))]

    def landmark_modules(self) -> list[nn.Module]:
        late = [m for net in self.nets.values() for m in _stem_and_stages(net.encoder, (3, 4))]
        return late + [net.decoder for net in self.nets.values()]

    def imagenet_prefixes(self) -> dict[str, tuple[str, ...]]:
        return {n: tuple(f"nets.{t}.encoder.{n}" for t in self.nets) for n in RESNET_TOP_MODULES}


def _stem_and_stages(encoder: ResNetEncoder, stages: tuple[int, ...]) -> list[nn.Module]:
    """The stem (when stage 1 is asked) and the given residual stages of a 4-stage encoder."""
    stem = [encoder.conv1, encoder.bn1] if 1 in stages else []
    return stem + [getattr(encoder, f"layer{s}") for s in stages]


def build_model(name: str, config: ModelConfig | None = None, **options: Any) -> nn.Module:
    """Build a variant by name ("mgcn_r", "mgcn", "mfcn", "sfcn", "stl").

    ``options`` are ``ModelConfig`` fields and override ``config`` (default ``ModelConfig()``,
    the paper's ResNet50). Unknown name -> ValueError; unknown option -> TypeError; invalid
    values -> ValueError; ``task`` is only valid for ``sfcn``.
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(VARIANTS)}")
    valid = [f.name for f in fields(ModelConfig)]
    if unknown := sorted(set(options) - set(valid)):
        raise TypeError(f"unknown model option(s) {unknown}; valid options: {', '.join(valid)}")
    config = replace(config or ModelConfig(), **options)
    if config.task is not None and name != "sfcn":
        raise ValueError(f"option task is only valid for sfcn, not {name}")
    if name == "stl":
        return ViewClassifierNet(config)
    if name == "sfcn":
        return SingleTaskFCNSet(config)
    skip = "conv1x1" if name == "mfcn" else "gcn"
    return MultiTaskNet(name, config, skip=skip, classify=name == "mgcn_r")


def model_descriptor(model: nn.Module) -> dict[str, Any]:
    """``{"variant": ..., "config": {...}}``: what a checkpoint stores to rebuild ``model``."""
    return {"variant": model.variant, "config": model.config.to_dict()}


def build_model_from_descriptor(descriptor: dict[str, Any]) -> nn.Module:
    """Inverse of ``model_descriptor`` (weights not included)."""
    return build_model(descriptor["variant"], ModelConfig.from_dict(descriptor["config"]))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (buffers such as BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_size_mb(model: nn.Module) -> float:
    """Size of the parameters stored as fp32: 4 bytes x count / 2**20 (MiB)."""
    return count_parameters(model) * 4 / 2**20


__all__ = [
    "VARIANTS",
    "ModelConfig",
    "MultiTaskNet",
    "SingleTaskFCN",
    "SingleTaskFCNSet",
    "ViewClassifierNet",
    "build_model",
    "build_model_from_descriptor",
    "check_input",
    "count_parameters",
    "model_descriptor",
    "model_size_mb",
]
