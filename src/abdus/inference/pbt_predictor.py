"""The PBT baseline behind the same ``Predictor`` interface, so ``abdus predict`` runs it.

PBT detects landmarks only (no view classifier, paper Table 1), so it needs the view: a
reference view from the caller (``--view``). Outputs, units and files are those of the
networks: landmarks in source px, measurements in mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from abdus.baselines.pbt import load_pbt
from abdus.data.preprocess import PreprocessedImage, SourceToModel
from abdus.errors import AbdusInputError
from abdus.inference.predictor import BasePredictor, NetworkOutput
from abdus.modelfile import PBT_NAME, is_pbt_model
from abdus.taxonomy import LANDMARK_INDEX, NUM_LANDMARKS, task_of_view

PBT_MODEL_NAME = PBT_NAME  # older name


class PBTPredictor(BasePredictor):
    """The trained PBT detector behind the predictor interface: landmarks of the given view's
    task (it has no view classifier, so every image needs its view)."""

    name = "pbt"

    def __init__(self, path: str | Path) -> None:
        self.pbt = load_pbt(path)
        config = self.pbt.config.preprocess
        super().__init__(config, classifies=False, locates=True, model_id=f"pbt:{Path(path).name}")
        self.backend = self  # outputs name the backend: "pbt"
        # The detector works on the model canvas alone; its organ-length prior assumes the
        # canvas spacing (exact when the file has a spacing, nominal when it has none).
        size = tuple(config.size)
        self._canvas = SourceToModel((1.0, 1.0), (0.0, 0.0), size, size, config.spacing_mm)

    def run_network(
        self,
        images: torch.Tensor,
        class_images: torch.Tensor,
        regions: torch.Tensor | None = None,
        *,
        views: Sequence[str | None] | None = None,
        task_only: bool = False,
    ) -> list[NetworkOutput]:
        """PBT detection on each (1, H, W) model-canvas image for its given view's task (its
        coarse-to-fine search has its own shape priors; ``regions`` is not used)."""
        if views is None or any(v is None for v in views):
            raise AbdusInputError("the PBT baseline does not classify views: give the view")
        outputs = []
        for image, view in zip(images, views, strict=True):
            points = np.full((NUM_LANDMARKS, 2), np.nan)
            confidence = np.zeros(NUM_LANDMARKS)
            task = task_of_view(view)
            if task is not None:
                pixels = image[0].numpy()
                pre = PreprocessedImage(pixels, pixels, np.ones(pixels.shape, bool), self._canvas)
                found = self.pbt.detect_preprocessed(pre, task)  # (L, 2) model px
                channels = [LANDMARK_INDEX[name] for name in task.landmarks]
                points[channels], confidence[channels] = found, 1.0
            outputs.append(NetworkOutput(None, points, confidence))
        return outputs


__all__ = ["PBT_MODEL_NAME", "PBTPredictor", "is_pbt_model"]
