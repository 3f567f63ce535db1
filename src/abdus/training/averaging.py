"""Weight averaging within a stage: an exponential moving average (EMA) of the weights.

With ``StageConfig.ema_decay`` = d > 0 the stage keeps, beside the weights it trains, their
running average, updated after every optimizer step: ``average += (1 - d_t) * (weights -
average)``, d_t = min(d, (1 + t) / (10 + t)) at the t-th update (a short warm-up, so the
average does not hold on to the stage's first weights; Tarvainen & Valpola 2017, the EMA of
timm and of mmengine's ``EMAHook``, which mmpose uses). BatchNorm running statistics are
averaged the same way; integer buffers (the batch counters) are copied. The average, not the
last step's weights, is what the stage validates and keeps in ``best.pt``, so the stage's
outcome depends less on where its last steps happened to land.

Parts a stage does not train stay bit-identical: ``lerp`` moves an average by exactly 0 where
the weights did not move.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """The EMA of ``model``'s state (its ``state_dict``: parameters and buffers), starting from
    its state now.

    Args:
        model: the (unwrapped) module whose weights are averaged.
        decay: d in (0, 1): the weight of the running average at each update.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.model, self.decay, self.updates = model, float(decay), 0
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        """d_t of the next update (the warm-up's (1 + t) / (10 + t), at most ``decay``)."""
        t = self.updates + 1
        return min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the model's current weights (after an optimizer step)."""
        weight = 1.0 - self.current_decay()
        for name, value in self.model.state_dict().items():
            average = self.average[name]
            if average.is_floating_point():
                average.lerp_(value, weight)  # state_dict values are detached already
            else:
                average.copy_(value)
        self.updates += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own after it."""
        own = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.average)
        try:
            yield
        finally:
            self.model.load_state_dict(own)

    def load_into_model(self) -> None:
        """Replace the model's weights by the average (a stage that was never validated)."""
        self.model.load_state_dict(self.average)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values (a checkpoint loads it with ``weights_only``)."""
        return {"decay": self.decay, "updates": self.updates, "average": self.average}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict`` (a resumed stage)."""
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        for name, value in state["average"].items():
            self.average[name].copy_(value)


__all__ = ["WeightAverage"]
