"""Losses of the multi-task network (paper section 2.2, Eqs. 1-4).

Term functions (``heatmap_l2_loss``, ``coordinate_loss``, ``generator_adversarial_loss``)
return a scalar tensor; the functions a trainer optimises (``view_loss``,
``discriminator_loss``, ``landmark_losses``, ``joint_losses``) return
``{"loss": weighted total, **unweighted parts}`` for logging.

Shapes: B batch, L = 14 landmark channels (taxonomy order), H, W model pixels. Coordinates
are ``(x, y)`` in model pixels. ``landmark_mask`` (B, L) is 1/True where the image has that
landmark (the subset L' of Eq. 2); absent landmarks contribute exactly zero loss and zero
gradient, and images without any landmark contribute zero. Batch means run over the images
that have at least one landmark, so the loss scale does not depend on how many landmark-free
images (e.g. "others" views) share the batch. ``channel_weight`` (L,), where given, weighs
each landmark's term (``training.datasets.landmark_channel_weights``: rarer landmarks count
more); None weighs them equally, as Eq. 2 does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import nn

from abdus.choices import Reduction, check_choice
from abdus.data.heatmaps import threshold_centroid
from abdus.models.discriminator import discriminator_input

_DISTANCE_EPS = 1e-6  # px^2 under the square root: finite gradient at zero distance


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms. Paper 2.2: "The regression, location, and adversarial losses
    are equally weighted"; the view loss is trained in its own stage, where ``view`` multiplies
    it (``joint_losses`` uses it to balance the tasks trained together). A weight of 0 removes
    the term (not computed)."""

    regression: float = 1.0
    location: float = 1.0
    adversarial: float = 1.0
    view: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(LossWeights):  # the weights only (``LossConfig`` adds settings)
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"loss weight {f.name} must be finite and >= 0, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        valid = [f.name for f in fields(cls)]
        if unknown := sorted(set(data) - set(valid)):
            raise ValueError(f"unknown loss setting(s) {unknown}; valid: {', '.join(valid)}")
        return cls(**data)


@dataclass(frozen=True)
class LossConfig(LossWeights):
    """The loss settings of a training run (``TrainConfig.loss``, the ``loss:`` section of a
    config): the term weights, the heat-map L2 ``reduction`` ("mean" = Eq. 2 as printed, or
    "sum", see ``heatmap_l2_loss``) and the view cross entropy's ``label_smoothing`` (0 = Eq. 1
    as printed, see ``view_loss``). It *is* a ``LossWeights``: pass it as ``weights``."""

    reduction: str = Reduction.MEAN.value
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "reduction", check_choice(Reduction, self.reduction).value)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


def _check_mask(mask: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
    if tuple(mask.shape) != shape:
        raise ValueError(f"landmark_mask shape {tuple(mask.shape)} does not match {what} {shape}")
    return mask.bool()


def _mean_over_images(per_image: torch.Tensor, has_any: torch.Tensor) -> torch.Tensor:
    """(B,) per-image losses (0 where ``has_any`` is False) -> mean over images with landmarks."""
    return per_image.sum() / has_any.sum().clamp_min(1)


def _weighted(per_channel: torch.Tensor, channel_weight: torch.Tensor | None) -> torch.Tensor:
    """(B, L) per-landmark terms times ``channel_weight`` (L,) where given."""
    if channel_weight is None:
        return per_channel
    if tuple(channel_weight.shape) != (per_channel.shape[1],):
        raise ValueError(
            f"channel_weight shape {tuple(channel_weight.shape)} does not match the "
            f"{per_channel.shape[1]} landmark channels"
        )
    return per_channel * channel_weight.to(per_channel.device, torch.float32)[None, :]


def heatmap_l2_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    landmark_mask: torch.Tensor,
    reduction: str = "mean",
    channel_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """L2 between predicted and target heat maps over the landmarks each image has (Eq. 2).

    Args:
        pred, target: (B, L, H, W) heat maps (target values of absent channels must be finite;
            they are ignored).
        landmark_mask: (B, L) 1/True where the image has the landmark.
        reduction: "mean": the paper's 1 / (N_I * N_L') per image (N_I = H * W pixels, N_L'
            present landmarks); "sum": the squared error summed over pixels and present channels
            / N_L' per image (pixel sum as Caffe/pix2pix-era Euclidean losses; the convention
            under which the paper's SGD learning rate of 1e-6 moves the weights).
            Either way the per-image values are averaged over images with landmarks.
        channel_weight: (L,) weight of each landmark's squared error (None: 1 each).

    Returns:
        Scalar loss (float32).
    """
    check_choice(Reduction, reduction)
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    mask = _check_mask(landmark_mask, tuple(pred.shape[:2]), "heat maps")
    squared = (pred.float() - target.float()).square()
    # Absent channels: exactly 0. Weighing each channel's sum rather than each pixel gives the
    # same values and gradients, and spares two passes over (B, L, H, W).
    per_channel = squared.sum(dim=(2, 3)) * mask.to(torch.float32)
    per_image = _weighted(per_channel, channel_weight).sum(dim=1)  # (B,)
    present = mask.sum(dim=1)  # (B,) N_L'
    scale = present * (pred.shape[2] * pred.shape[3] if reduction == Reduction.MEAN else 1)
    per_image = per_image / scale.clamp_min(1)
    return _mean_over_images(per_image, present > 0)


def coordinate_loss(
    heatmaps: torch.Tensor,
    landmarks: torch.Tensor,
    landmark_mask: torch.Tensor,
    threshold: float = 0.75,
    channel_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean Euclidean distance (model px) between true and heat-map landmarks (Eq. 3).

    The predicted landmark is the weighted mean of the pixels above ``threshold`` x the
    channel's peak (``threshold_centroid``; paper k = 0.75), which keeps training end to end.

    Args:
        heatmaps: (B, L, H, W) predictions. landmarks: (B, L, 2) true (x, y) model px (values
            of absent landmarks are ignored, NaN allowed). landmark_mask: (B, L).
        channel_weight: (L,) weight of each landmark's distance (None: 1 each).

    Returns:
        Scalar: per image the (weighted) mean over present landmarks, then the mean over images with
        landmarks. sqrt(d^2 + 1e-6) keeps the gradient finite at zero distance.
    """
    mask = _check_mask(landmark_mask, tuple(heatmaps.shape[:2]), "heat maps")
    predicted = threshold_centroid(heatmaps, threshold)  # (B, L, 2) float32
    truth = torch.where(mask[..., None], landmarks.float(), torch.zeros_like(predicted))
    distance = ((predicted - truth).square().sum(dim=-1) + _DISTANCE_EPS).sqrt()  # (B, L)
    distance = torch.where(mask, distance, torch.zeros_like(distance))
    present = mask.sum(dim=1)
    per_image = _weighted(distance, channel_weight).sum(dim=1)
    return _mean_over_images(per_image / present.clamp_min(1), present > 0)


def _bce_to(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Eq. 4: binary cross entropy of every patch logit against real (1) or fake (0)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def _with_landmarks(*tensors: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Keep only the images that have at least one landmark (the others are all-zero to D).
    The tensors themselves when every image has one, as in the landmark stage, whose batches
    hold only such images: indexing would copy them, and its backward scatter the gradient."""
    keep = mask.bool().any(dim=1)
    if bool(keep.all()):
        return tensors
    return tuple(t[keep] for t in tensors)


def discriminator_loss(
    discriminator: nn.Module,
    image: torch.Tensor,
    real_heatmaps: torch.Tensor,
    fake_heatmaps: torch.Tensor,
    landmark_mask: torch.Tensor,
    amplitude: float = 1.0,
) -> dict[str, torch.Tensor]:
    """PatchGAN loss of D (Eq. 4, pix2pix): real pairs -> 1, detached fake pairs -> 0.

    Args:
        image: (B, 1, H, W) network input. real_heatmaps: (B, L, H, W) targets.
        fake_heatmaps: (B, L, H, W) predictions (detached here). landmark_mask: (B, L); absent
            channels are zeroed in both inputs and images with no landmark are left out.
        amplitude: the targets' peak (``HeatmapCodec.amplitude``); D sees both heat maps
            divided by it, so its input keeps the scale of the image (0-1).

    Returns:
        ``{"loss": (real + fake) / 2 (pix2pix halves D's objective), "real": ..., "fake": ...}``;
        all 0 (still attached to D) when no image has a landmark.
    """
    _check_mask(landmark_mask, tuple(real_heatmaps.shape[:2]), "heat maps")
    image, real, fake, mask = _with_landmarks(
        image, real_heatmaps / amplitude, fake_heatmaps.detach() / amplitude, landmark_mask,
        mask=landmark_mask,
    )  # fmt: skip
    if image.shape[0] == 0:
        zero = sum(p.sum() for p in discriminator.parameters()) * 0.0
        return {"loss": zero, "real": zero, "fake": zero}
    real_loss = _bce_to(discriminator(discriminator_input(image, real, mask)), real=True)
    fake_loss = _bce_to(discriminator(discriminator_input(image, fake, mask)), real=False)
    return {"loss": 0.5 * (real_loss + fake_loss), "real": real_loss, "fake": fake_loss}


def generator_adversarial_loss(
    discriminator: nn.Module,
    image: torch.Tensor,
    fake_heatmaps: torch.Tensor,
    landmark_mask: torch.Tensor,
    amplitude: float = 1.0,
) -> torch.Tensor:
    """The network's adversarial term (Eq. 4): D should call its heat maps real (-> 1).

    Shapes and ``amplitude`` as ``discriminator_loss``. Gradients also reach D's parameters:
    the trainer steps only the network's optimiser here (or sets D's ``requires_grad`` False,
    as pix2pix does).
    Returns a scalar, 0 (attached to the predictions) when no image has a landmark.
    """
    _check_mask(landmark_mask, tuple(fake_heatmaps.shape[:2]), "heat maps")
    image, fake, mask = _with_landmarks(
        image, fake_heatmaps / amplitude, landmark_mask, mask=landmark_mask
    )
    if image.shape[0] == 0:
        return fake_heatmaps.float().sum() * 0.0
    return _bce_to(discriminator(discriminator_input(image, fake, mask)), real=True)


def view_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    has_view: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Cross entropy of the view classifier (Eq. 1).

    Args:
        logits: (B, 11). target: (B,) int64 view index. has_view: (B,) bool, False for images
            without a view label (ignored); None = all labelled.
        label_smoothing: share of the target's probability spread over all views (Szegedy et
            al. 2016; 0 = Eq. 1 as printed). The reference reader itself names a view
            differently from a second reader in about one image in five, so a hard one-hot
            target overstates what the label knows.

    Returns:
        ``{"loss": ce, "view": ce}``, the mean over labelled images (0 if none).
    """
    if has_view is not None:
        keep = has_view.bool()
        logits, target = logits[keep], target[keep]
    if logits.shape[0] == 0:
        zero = logits.float().sum() * 0.0
        return {"loss": zero, "view": zero}
    ce = F.cross_entropy(logits.float(), target.long(), label_smoothing=label_smoothing)
    return {"loss": ce, "view": ce}


def landmark_losses(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    weights: LossWeights | None = None,
    discriminator: nn.Module | None = None,
    *,
    reduction: str = "mean",
    threshold: float = 0.75,
    amplitude: float = 1.0,
    channel_weight: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The landmark stage's objective: weighted regression (Eq. 2) + location (Eq. 3) +
    adversarial (Eq. 4) terms; terms with weight 0 are neither computed nor returned.

    Args:
        outputs: the model's dict with ``heatmaps`` (B, L, H, W).
        batch: ``heatmaps`` (B, L, H, W) targets, ``landmark_mask`` (B, L), ``landmarks``
            (B, L, 2) model px (for location), ``image`` (B, 1, H, W) (for adversarial).
        weights: term weights (default ``LossWeights()``); ``weights.view`` is not used here
            (see ``joint_losses``).
        discriminator: the PatchGAN, required when ``weights.adversarial`` > 0.
        reduction: of the regression term, see ``heatmap_l2_loss``.
        threshold: k of the location term.
        amplitude: the targets' peak (``HeatmapCodec.amplitude``), for the adversarial term.
        channel_weight: (L,) per-landmark weights of the regression and location terms (None:
            equal, the paper); the adversarial term judges whole maps and is not weighted.

    Returns:
        ``{"loss": weighted sum, "regression"?, "location"?, "adversarial"?}`` (parts
        unweighted).
    """
    weights = weights or LossWeights()
    pred, mask = outputs["heatmaps"], batch["landmark_mask"]
    parts: dict[str, torch.Tensor] = {}
    if weights.regression > 0:
        parts["regression"] = heatmap_l2_loss(
            pred, batch["heatmaps"], mask, reduction, channel_weight
        )
    if weights.location > 0:
        parts["location"] = coordinate_loss(
            pred, batch["landmarks"], mask, threshold, channel_weight
        )
    if weights.adversarial > 0:
        if discriminator is None:
            raise ValueError("weights.adversarial > 0 needs a discriminator (or set it to 0)")
        parts["adversarial"] = generator_adversarial_loss(
            discriminator, batch["image"], pred, mask, amplitude
        )
    return {"loss": _weighted_total(parts, weights, pred), **parts}


def joint_losses(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    weights: LossWeights | None = None,
    discriminator: nn.Module | None = None,
    **landmark_options: Any,
) -> dict[str, torch.Tensor]:
    """``landmark_losses`` plus ``weights.view`` x the view cross entropy on ``outputs["logits"]``
    (``batch["view"]``, ``batch["has_view"]``): for training both tasks at once, an option
    beside the paper's two-stage schedule. ``landmark_options``: as ``landmark_losses``
    (``reduction``, ``threshold``, ``amplitude``). Returns ``{"loss", ..., "view"?}``."""
    result = landmark_losses(outputs, batch, weights, discriminator, **landmark_options)
    weights = weights or LossWeights()
    if weights.view > 0 and "logits" in outputs:
        view = view_loss(outputs["logits"], batch["view"], batch.get("has_view"))["loss"]
        result["view"] = view
        result["loss"] = result["loss"] + weights.view * view
    return result


def _weighted_total(
    parts: Mapping[str, torch.Tensor], weights: LossWeights, like: torch.Tensor
) -> torch.Tensor:
    if not parts:  # every weight is 0: a zero still attached to the graph
        return like.float().sum() * 0.0
    return sum(getattr(weights, name) * value for name, value in parts.items())  # type: ignore[return-value]


__all__ = [
    "LossConfig",
    "LossWeights",
    "coordinate_loss",
    "discriminator_loss",
    "generator_adversarial_loss",
    "heatmap_l2_loss",
    "joint_losses",
    "landmark_losses",
    "view_loss",
]
