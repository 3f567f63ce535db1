"""One image in, view + calipers + measurements (mm) out: the end-to-end inference path.

Data flow (architecture.md): UltrasoundImage -> preprocess (model px, with the source<->model
transform) -> one network pass (the shared trunk runs once on the landmark and the masked
classification input together) -> view probabilities + heat maps -> codec decode (model px)
-> keep the landmarks of the predicted view's task -> source px -> measurements in mm.

The network runs in a backend (``abdus.inference.backends``): eager PyTorch (fp32, or bf16 with
channels-last) or ONNX Runtime (an exported fp32 or INT8 ``.onnx``). ``predict`` decodes only
the heat maps of each image's view task (``run_network(..., task_only=True)``); evaluation
decodes all 14.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from abdus.choices import Backend, check_choice
from abdus.data.heatmaps import HeatmapCodec
from abdus.data.masking import landmark_region
from abdus.data.preprocess import PreprocessConfig, PreprocessedImage, preprocess_image
from abdus.errors import AbdusInputError
from abdus.inference.backends import NetworkBackend, OnnxBackend, TorchBackend
from abdus.inference.export import resolve_onnx
from abdus.io.types import UltrasoundImage
from abdus.measurements import measurements_from_array
from abdus.modelfile import ModelKind, find_model, open_network
from abdus.taxonomy import (
    LANDMARK_INDEX,
    LANDMARKS,
    MEASUREMENT_BY_CODE,
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


class BasePredictor:
    """What every abdus model does behind ``predict``, ``evaluate`` and the services: images in,
    ``NetworkOutput`` on the model canvas (``run_network``), then a ``Prediction`` in source px
    and mm (``interpret``). Subclasses: ``Predictor`` (the networks, in any backend) and
    ``abdus.inference.pbt_predictor.PBTPredictor`` (the classical baseline).
    ``abdus.inference.loading.open_predictor`` gives the right one for any model path.

    ``preprocess``: how images reach the model canvas; ``classifies`` / ``locates``: whether
    the model gives views / landmarks (a model that does not classify needs the view from the
    caller); ``model_id``: ``variant:run``, written into every output.
    """

    name: str = "model"  # the backend or baseline name shown in outputs
    backend_choice: Any = None  # abdus.inference.auto.BackendChoice when "auto" picked it

    def __init__(
        self, preprocess: PreprocessConfig, *, classifies: bool, locates: bool, model_id: str = ""
    ) -> None:
        self.preprocess, self.model_id = preprocess, model_id
        self.classifies, self.locates = classifies, locates

    def run_network(
        self, images: torch.Tensor, class_images: torch.Tensor, regions=None, **options: Any
    ) -> list[NetworkOutput]:
        """The model on a batch of (B, 1, H, W) landmark and masked classification inputs (the
        first two of ``as_batch``). ``regions``: (B, 1, H, W) bool, where each image's
        landmarks may lie (None: anywhere). ``options``: ``views`` (given view names, None
        entries for the model's own) and ``task_only`` (locate only each image's view-task
        landmarks; the others NaN with confidence 0). See ``Predictor.run_network``."""
        raise NotImplementedError

    def predict_image(
        self,
        image: UltrasoundImage,
        *,
        overlay_boxes: Sequence[tuple[int, int, int, int]] | None = None,
        view: str | None = None,
    ) -> Prediction:
        """Predict one image. ``view`` (a view name) overrides the classifier."""
        pre = preprocess_image(image, self.preprocess, overlay_boxes=overlay_boxes)
        out = self.run_network(*as_batch([pre]), views=[view], task_only=True)[0]
        return self.interpret(out, pre, image, view=view)

    def interpret(
        self,
        out: NetworkOutput,
        pre: PreprocessedImage,
        image: UltrasoundImage,
        *,
        view: str | None = None,
    ) -> Prediction:
        """Turn network output into a Prediction in source px and mm.

        A measurement with a landmark off the frame or off ``image.region`` is withheld: null
        in ``measurements_mm``, the reason in ``measurement_notes`` and a warning
        (``misplaced_calipers``); its landmarks stay in ``landmarks`` as located."""
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
        for code, note in misplaced_calipers(source_points, image, codes).items():
            measurements[code], notes[code] = None, note
            warnings.append(f"{code} withheld: {note}")
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


class Predictor(BasePredictor):
    """Runs a trained abdus network on images.

    ``model`` is any variant from ``abdus.models.build_model`` (wrapped in a ``TorchBackend``;
    ``device`` / ``bf16`` apply to it) or a ready backend (``abdus.inference.backends``).
    ``preprocess`` and ``codec`` must be the ones it was trained with (a model file holds
    them, see ``abdus.modelfile``; an abdus ``.onnx`` carries them).
    """

    def __init__(
        self,
        model: nn.Module | NetworkBackend,
        preprocess: PreprocessConfig,
        codec: HeatmapCodec,
        *,
        device: str | torch.device = "cpu",
        bf16: bool = False,
        model_id: str = "",
    ) -> None:
        if isinstance(model, nn.Module):
            model = TorchBackend(model, device=device, bf16=bf16)
        super().__init__(
            preprocess, classifies=model.classifies, locates=model.locates, model_id=model_id
        )
        self.backend: NetworkBackend = model
        self.name = model.name
        self.model: nn.Module | None = getattr(model, "model", None)
        self.codec = codec
        self.device = torch.device(getattr(model, "device", device))
        self.bf16 = bool(getattr(model, "bf16", False))

    @classmethod
    def from_run(
        cls,
        run_or_model: str | Path,
        *,
        backend: str = "torch",
        device: str | torch.device = "cpu",
        bf16: bool = False,
        threads: int | None = None,
        model_id: str | None = None,
    ) -> Predictor:
        """A predictor for a run folder, a ``model.pt`` file or an abdus ``.onnx`` file.

        ``backend``: "torch" (a run / ``.pt``), "onnx" or "onnx-int8". For a run or ``.pt``
        the ONNX backends use ``model.onnx`` / ``model.int8.onnx`` beside it (written by
        ``abdus export``; "onnx" exports one on the fly when it is missing). ``threads``: ONNX
        Runtime intra-op threads (default: physical cores).
        """
        backend = check_choice(Backend, backend)
        path = Path(run_or_model)
        ref = find_model(path)
        if ref.kind is ModelKind.PBT:
            raise AbdusInputError("a PBT model: open it with open_predictor", ref.path)
        if backend is Backend.TORCH and ref.kind is ModelKind.ONNX:
            raise AbdusInputError("an .onnx model runs with --backend onnx or onnx-int8", path)
        if backend is not Backend.TORCH:
            if bf16:
                raise AbdusInputError("--bf16 applies to the torch backend only", path)
            onnx = OnnxBackend(resolve_onnx(path, backend), threads=threads, device=device)
            name = model_id or onnx.info.model_id or f"{onnx.info.model['variant']}:{path.name}"
            return cls(onnx, onnx.info.preprocess, onnx.info.codec, model_id=name)
        loaded = open_network(ref.path)
        name = model_id or f"{loaded.config.model}:{path.resolve().name}"
        return cls(
            loaded.model, loaded.config.preprocess, loaded.codec,
            device=device, bf16=bf16, model_id=name,
        )  # fmt: skip

    def run_network(
        self,
        images: torch.Tensor,
        class_images: torch.Tensor,
        regions: torch.Tensor | np.ndarray | None = None,
        *,
        views: Sequence[str | None] | None = None,
        task_only: bool = False,
    ) -> list[NetworkOutput]:
        """Network on a batch: (B, 1, H, W) landmark and masked classification inputs (the
        first two of ``as_batch``).

        ``regions``: (B, 1, H, W) bool, where each image's landmarks may lie
        (``abdus.data.masking.landmark_region``); None = anywhere on the canvas.
        ``task_only``: decode only the heat maps of each image's view task (``views[i]`` when
        given, else the predicted view): 2-4 of 14 channels, so decoding costs a fraction (the
        other landmarks are NaN with confidence 0). Default: all 14 channels.
        """
        logits, heatmaps = self.backend.run(images, class_images)
        return self.decode_outputs(
            logits, heatmaps, regions=regions, views=views, task_only=task_only
        )

    def decode_outputs(
        self,
        logits: torch.Tensor | None,
        heatmaps: torch.Tensor | None,
        *,
        regions: torch.Tensor | np.ndarray | None = None,
        views: Sequence[str | None] | None = None,
        task_only: bool = False,
    ) -> list[NetworkOutput]:
        """Softmax the logits (B, 11) and decode the heat maps (B, 14, H, W) with the codec,
        inside ``regions`` (B, 1, H, W) bool when given."""
        b = (logits if logits is not None else heatmaps).shape[0]
        probs = None if logits is None else torch.softmax(logits.float(), dim=1).cpu().numpy()
        points = np.full((b, NUM_LANDMARKS, 2), np.nan, dtype=np.float32)
        conf = np.zeros((b, NUM_LANDMARKS), dtype=np.float32)
        if regions is not None:
            device = heatmaps.device if heatmaps is not None else "cpu"
            regions = torch.as_tensor(regions).to(device)
        if heatmaps is not None and not task_only:
            points_t, conf_t = self.codec.decode(heatmaps.float(), regions)
            points, conf = points_t.cpu().numpy(), conf_t.cpu().numpy()
        elif heatmaps is not None:
            for i in range(b):
                view = views[i] if views is not None else None
                if view is None and probs is not None:
                    view = VIEW_NAMES[int(probs[i].argmax())]
                channels = landmark_channels_of_view(view) if view else range(NUM_LANDMARKS)
                if channels:  # a task's channels are consecutive (taxonomy order)
                    lo, hi = min(channels), max(channels) + 1
                    region = None if regions is None else regions[i]
                    p, c = self.codec.decode(heatmaps[i, lo:hi].float(), region)
                    points[i, lo:hi], conf[i, lo:hi] = p.cpu().numpy(), c.cpu().numpy()
        return [
            NetworkOutput(None if probs is None else probs[i], points[i], conf[i]) for i in range(b)
        ]


def _placement_problem(point_xy: np.ndarray, image: UltrasoundImage) -> str | None:
    """Why an (x, y) source-px landmark cannot be a caliper end, None when it can: it must lie
    on the frame and on the image's ultrasound region (pixel edges at half-integers; a region
    box is ``(x0, y0, x1, y1)`` source px, x1 / y1 exclusive)."""
    H, W = image.shape
    x, y = float(point_xy[0]), float(point_xy[1])
    if not (-0.5 <= x <= W - 0.5 and -0.5 <= y <= H - 0.5):
        return f"outside the {W} x {H} px image"
    if image.region is not None:
        x0, y0, x1, y1 = image.region.box
        if not (x0 - 0.5 <= x <= x1 - 0.5 and y0 - 0.5 <= y <= y1 - 0.5):
            return f"outside the ultrasound region x {x0}..{x1 - 1}, y {y0}..{y1 - 1} px"
    return None


def misplaced_calipers(
    source_points: np.ndarray, image: UltrasoundImage, codes: Sequence[str]
) -> dict[str, str]:
    """Measurement code -> why it is withheld, for each of ``codes`` with a landmark off the
    frame or off the ultrasound region. ``source_points``: (14, 2) source px, NaN where not
    located (a NaN landmark is not judged here: its measurement is already null).

    A caliper end there is no measurement of the organ (the scanner shows no tissue there), and
    DICOM SR coordinates must lie on the referenced image (PS3.3 C.18.6.1.2).
    """
    withheld = {}
    for code in codes:
        for name in MEASUREMENT_BY_CODE[code].landmarks:
            point = source_points[LANDMARK_INDEX[name]]
            problem = None if np.isnan(point).any() else _placement_problem(point, image)
            if problem is not None:
                x, y = float(point[0]), float(point[1])
                withheld[code] = f"caliper end {problem} ({name} at {x:.1f}, {y:.1f} px)"
                break
    return withheld


def as_batch(
    pres: Sequence[PreprocessedImage],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 1, H, W) landmark input, classification input and landmark region (bool, where each
    image's landmarks may be decoded: ``landmark_region``) from preprocessed images."""
    images = torch.from_numpy(np.stack([p.pixels for p in pres]))[:, None]
    class_images = torch.from_numpy(np.stack([p.classification_pixels for p in pres]))[:, None]
    regions = torch.from_numpy(landmark_region(np.stack([p.mask for p in pres])))[:, None]
    return images, class_images, regions
