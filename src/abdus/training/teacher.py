"""Knowledge distillation: a trained abdus network (the teacher) teaches a smaller one.

``abdus distill`` (``abdus.training.distill``) trains a student with a narrower or shallower
encoder on the same patients as the teacher. In each step the frozen teacher sees the same
(augmented) batch:

* landmark stage: the student's heat-map targets are ``(1 - alpha) * labels + alpha *
  teacher heat maps`` (the teacher was trained to the same amplitude), so every loss of the
  stage (L2, location, adversarial) keeps its meaning; the location loss still uses the
  labelled coordinates;
* view stage: ``(1 - alpha) * cross entropy(labels) + alpha * T^2 * KL(teacher || student)``
  on the logits softened by the temperature ``T`` (Hinton et al. 2015).

``alpha`` and ``T`` are ``TrainConfig.distill_alpha`` / ``distill_temperature``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from abdus.errors import AbdusInputError
from abdus.modelfile import open_network
from abdus.training.config import TrainConfig
from abdus.training.runtime import autocast


@dataclass
class Teacher:
    """A frozen teacher network (eval mode, on the training device) and how it teaches."""

    model: nn.Module  # an abdus network with forward_landmarks / forward_view
    alpha: float = 0.5
    temperature: float = 2.0

    def __post_init__(self) -> None:
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def heatmap_targets(
        self, batch: dict[str, torch.Tensor], amp_dtype: torch.dtype | None
    ) -> dict[str, torch.Tensor]:
        """``batch`` with its heat maps blended with the teacher's (B, 14, H, W)."""
        with autocast(batch["image"].device, amp_dtype):
            taught = self.model.forward_landmarks(batch["image"]).float()
        return {**batch, "heatmaps": torch.lerp(batch["heatmaps"].float(), taught, self.alpha)}

    def view_loss(
        self,
        logits: torch.Tensor,
        class_image: torch.Tensor,
        label_loss: torch.Tensor,
        amp_dtype: torch.dtype | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the blended view loss, the distillation term alone) for the student's ``logits``
        (B, 11) on ``class_image``; ``label_loss``: the cross entropy with the labels."""
        with torch.no_grad(), autocast(class_image.device, amp_dtype):
            taught = self.model.forward_view(class_image).float()
        t = self.temperature
        term = F.kl_div(
            F.log_softmax(logits.float() / t, dim=1),
            F.log_softmax(taught / t, dim=1),
            reduction="batchmean",
            log_target=True,
        ) * (t * t)
        return (1.0 - self.alpha) * label_loss + self.alpha * term, term


def load_teacher(config: TrainConfig, device: torch.device) -> Teacher | None:
    """The ``Teacher`` of ``config.teacher`` on ``device`` (None without one). AbdusInputError
    when its input (mm per pixel, canvas) or heat-map amplitude differ from the student's."""
    if not config.teacher:
        return None
    loaded = open_network(config.teacher)
    if loaded.config.preprocess != config.preprocess:
        raise AbdusInputError(
            f"the teacher's input ({loaded.config.preprocess}) differs from the student's "
            f"({config.preprocess})",
            config.teacher,
        )
    if loaded.config.heatmap_amplitude != config.heatmap_amplitude:
        raise AbdusInputError("the teacher's heat-map amplitude differs from the student's")
    model = loaded.model.to(device)
    return Teacher(model, config.distill_alpha, config.distill_temperature)


__all__ = ["Teacher", "load_teacher"]
