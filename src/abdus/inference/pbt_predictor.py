"""The PBT baseline behind the same ``Predictor`` interface, so ``abdus predict`` runs it.

PBT detects landmarks only (no view classifier, paper Table 1), so it needs the view: a
reference view from the caller (``--view``). Outputs, units and files are those of the
networks: landmarks in source px, measurements in mm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from abdus.baselines.pbt import load_pbt
from abdus.data.preprocess import PreprocessedImage, SourceToModel
from abdus.errors import AbdusInputError
from abdus.inference.predictor import BasePredictor, NetworkOutput, Prediction
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

    def predict_image(self, image, *, overlay_boxes=None, view=None) -> Prediction:
        """``BasePredictor.predict_image``; AbdusInputError when the view is missing or its task
        was not trained (too few of its landmarks in the training set)."""
        if view is None:
            raise AbdusInputError("the PBT baseline does not classify views: give the view")
        task = task_of_view(view)
        if task is not None and task.name not in self.pbt.trained_tasks:
            self.pbt.task_trees(task)  # AbdusInputError naming the trained tasks
        return super().predict_image(image, overlay_boxes=overlay_boxes, view=view)

    def run_network(
        self, images: torch.Tensor, class_images: torch.Tensor, regions=None, **options: Any
    ) -> list[NetworkOutput]:
        """PBT detection on each (1, H, W) model-canvas image for its given view's task
        (``views``, required: PBT does not classify). The scanner's gain is normalised over
        ``regions`` (the ultrasound region; the whole canvas when None). Tasks the model was
        not trained for give NaN landmarks with confidence 0."""
        views = options.get("views")
        if views is None or any(v is None for v in views):
            raise AbdusInputError("the PBT baseline does not classify views: give the view")
        trained = set(self.pbt.trained_tasks)
        outputs = []
        for i, (image, view) in enumerate(zip(images, views, strict=True)):
            points = np.full((NUM_LANDMARKS, 2), np.nan)
            confidence = np.zeros(NUM_LANDMARKS)
            task = task_of_view(view)
            if task is not None and task.name in trained:
                pixels = image[0].numpy()
                tissue = np.ones(pixels.shape, bool) if regions is None else _mask(regions[i])
                pre = PreprocessedImage(pixels, pixels, tissue, self._canvas)
                found = self.pbt.detect_preprocessed(pre, task)  # (L, 2) model px
                channels = [LANDMARK_INDEX[name] for name in task.landmarks]
                points[channels], confidence[channels] = found, 1.0
            outputs.append(NetworkOutput(None, points, confidence))
        return outputs


def _mask(region: torch.Tensor | np.ndarray) -> np.ndarray:
    """(1, H, W) or (H, W) region as an (H, W) bool array."""
    return np.asarray(torch.as_tensor(region).cpu().numpy(), dtype=bool).reshape(region.shape[-2:])


__all__ = ["PBT_MODEL_NAME", "PBTPredictor", "is_pbt_model"]
