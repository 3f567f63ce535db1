"""One image in, view + calipers + measurements (mm) out: the end-to-end inference path.

Data flow (architecture.md): UltrasoundImage -> preprocess (model px, with the source<->model
transform) -> one network pass (the shared trunk runs once on the landmark and the masked
classification input together) -> view probabilities + heat maps -> codec decode (model px)
-> keep the landmarks of the predicted view's task -> source px -> measurements in mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from abdus.data.heatmaps import HeatmapCodec
from abdus.data.preprocess import PreprocessConfig, PreprocessedImage, preprocess_image
from abdus.io.types import UltrasoundImage
from abdus.measurements import measurements_from_array
from abdus.taxonomy import (
    LANDMARKS,
    NUM_LANDMARKS,
    VIEW_NAMES,
    landmark_channels_of_view,
    measurements_of_view,
    view_by_name,
)

# Below these, a view or a landmark is flagged as low confidence (not hidden).
LOW_VIEW_PROBABILITY = 0.5
LOW_LANDMARK_CONFIDENCE = 0.3


@dataclass
class Prediction:
    """What abdus says about one image. Landmarks are in *source pixels* ``(x, y)``."""

    view: str
    view_probabilities: dict[str, float] | None
    landmarks: dict[str, dict[str, float]]  # name -> {"x", "y", "confidence"} (source px)
    measurements_mm: dict[str, float | None]
    measurement_notes: dict[str, str]  # code -> why it is null
    spacing_mm: tuple[float, float] | None
    spacing_source: str
    warnings: list[str] = field(default_factory=list)
    view_source: str = "model"  # "model" or "given" (a reference view supplied by the caller)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (the predict command's per-image file adds source and model id)."""
        return {
            "view": self.view,
            "view_source": self.view_source,
            "view_probabilities": self.view_probabilities,
            "landmarks": self.landmarks,
            "measurements_mm": self.measurements_mm,
            "measurement_notes": self.measurement_notes,
            "spacing_mm": list(self.spacing_mm) if self.spacing_mm else None,
            "spacing_source": self.spacing_source,
            "warnings": self.warnings,
        }


@dataclass
class NetworkOutput:
    """Raw per-image network output on the model canvas: probabilities (11,) or None,
    landmarks (14, 2) model px and their confidences (14,)."""

    probabilities: np.ndarray | None
    points_model: np.ndarray
    confidence: np.ndarray


class Predictor:
    """Runs a trained abdus model on images.

    ``model`` is any variant from ``abdus.models.build_model`` (a model without a view
    classifier needs the view from the caller); ``preprocess`` and ``codec`` must be the ones
    it was trained with (``abdus.training.checkpoint.load_model_from_run`` returns all three).
    """

    def __init__(
        self,
        model: nn.Module,
        preprocess: PreprocessConfig,
        codec: HeatmapCodec,
        *,
        device: str | torch.device = "cpu",
        bf16: bool = False,
        model_id: str = "",
    ) -> None:
        self.model = model.eval().to(device)
        self.preprocess, self.codec = preprocess, codec
        self.device, self.bf16, self.model_id = torch.device(device), bf16, model_id
        self.classifies = "logits" in getattr(model, "output_names", ("logits",))
        self.locates = "heatmaps" in getattr(model, "output_names", ("heatmaps",))

    @classmethod
    def from_run(cls, run_or_model: str | Path, **options: Any) -> Predictor:
        """A predictor for a run folder or a ``model.pt`` file."""
        from abdus.training.checkpoint import load_model_file, load_model_from_run

        path = Path(run_or_model)
        loaded = load_model_from_run(path) if path.is_dir() else load_model_file(path)
        model, config, codec = loaded
        options.setdefault("model_id", f"{config.model}:{path.resolve().name}")
        return cls(model, config.preprocess, codec, **options)

    @torch.inference_mode()
    def run_network(self, images: torch.Tensor, class_images: torch.Tensor) -> list[NetworkOutput]:
        """Network on a batch: (B, 1, H, W) landmark and masked classification inputs."""
        images, class_images = images.to(self.device), class_images.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits, heatmaps = self._forward(images, class_images)
        b = images.shape[0]
        probs = None if logits is None else torch.softmax(logits.float(), dim=1).cpu().numpy()
        if heatmaps is None:
            points = np.full((b, NUM_LANDMARKS, 2), np.nan)
            conf = np.zeros((b, NUM_LANDMARKS))
        else:
            points_t, conf_t = self.codec.decode(heatmaps.float())
            points, conf = points_t.cpu().numpy(), conf_t.cpu().numpy()
        return [
            NetworkOutput(None if probs is None else probs[i], points[i], conf[i]) for i in range(b)
        ]

    def _forward(
        self, images: torch.Tensor, class_images: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        model = self.model
        if self.classifies and self.locates and hasattr(model, "forward_shared"):
            # One trunk pass over both inputs, then each task's own stages (paper: "one shot").
            b = images.shape[0]
            shared = model.forward_shared(torch.cat([images, class_images]))
            heatmaps = model.forward_landmarks(images, [f[:b] for f in shared])
            logits = model.forward_view(class_images, [f[b:] for f in shared])
            return logits, heatmaps
        logits = model(class_images)["logits"] if self.classifies else None
        heatmaps = model(images)["heatmaps"] if self.locates else None
        return logits, heatmaps

    def predict_image(
        self,
        image: UltrasoundImage,
        *,
        overlay_boxes: Sequence[tuple[int, int, int, int]] | None = None,
        view: str | None = None,
    ) -> Prediction:
        """Predict one image. ``view`` (a view name) overrides the classifier."""
        pre = preprocess_image(image, self.preprocess, overlay_boxes=overlay_boxes)
        out = self.run_network(*_as_batch([pre]))[0]
        return self.interpret(out, pre, image, view=view)

    def interpret(
        self,
        out: NetworkOutput,
        pre: PreprocessedImage,
        image: UltrasoundImage,
        *,
        view: str | None = None,
    ) -> Prediction:
        """Turn network output into a Prediction in source px and mm."""
        warnings = list(image.warnings)
        if view is None and out.probabilities is None:
            raise ValueError("this model has no view classifier: give the view")
        view_name = view_by_name(view).name if view else VIEW_NAMES[int(out.probabilities.argmax())]
        probs = None
        if out.probabilities is not None:
            probs = {name: float(p) for name, p in zip(VIEW_NAMES, out.probabilities, strict=True)}
            if view is None and probs[view_name] < LOW_VIEW_PROBABILITY:
                warnings.append(
                    f"low confidence view: {view_name} with probability {probs[view_name]:.2f}"
                )
        channels = list(landmark_channels_of_view(view_name)) if self.locates else []
        source_points = np.full((NUM_LANDMARKS, 2), np.nan)
        if channels:
            source_points[channels] = pre.transform.to_source(out.points_model[channels])
        landmarks = {}
        for c in channels:
            conf = float(out.confidence[c])
            landmarks[LANDMARKS[c]] = {
                "x": float(source_points[c, 0]),
                "y": float(source_points[c, 1]),
                "confidence": conf,
            }
            if conf < LOW_LANDMARK_CONFIDENCE:
                warnings.append(f"low confidence landmark: {LANDMARKS[c]} ({conf:.2f})")
        codes = [m.code for m in measurements_of_view(view_name)]
        measurements = measurements_from_array(source_points, image.spacing_mm, codes)
        notes = {}
        if codes and image.spacing_mm is None:
            notes = {c: "no pixel spacing in the file or given (--spacing-mm)" for c in codes}
            warnings.append("measurements are null: the image has no pixel spacing")
        elif codes and not self.locates:
            notes = {c: "this model does not detect landmarks" for c in codes}
        return Prediction(
            view=view_name,
            view_probabilities=probs,
            landmarks=landmarks,
            measurements_mm=measurements,
            measurement_notes=notes,
            spacing_mm=image.spacing_mm,
            spacing_source=image.spacing_source,
            warnings=warnings,
            view_source="given" if view else "model",
        )


def _as_batch(pres: Sequence[PreprocessedImage]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, H, W) landmark and classification inputs from preprocessed images."""
    images = torch.from_numpy(np.stack([p.pixels for p in pres]))[:, None]
    class_images = torch.from_numpy(np.stack([p.classification_pixels for p in pres]))[:, None]
    return images, class_images
