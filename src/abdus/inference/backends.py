"""Network backends: the same two inputs and two outputs, run by PyTorch or ONNX Runtime.

Every backend maps ``images`` and ``class_images`` (B, 1, H, W) float32 in [0, 1] (model px; the
landmark input and the masked classification input, paper 2.1) to ``logits`` (B, 11) and
``heatmaps`` (B, 14, H, W) float32 torch tensors (None for an output the model lacks).

* ``TorchBackend``: eager PyTorch. fp32 NCHW is the reference a researcher runs; ``bf16=True``
  adds autocast to bfloat16 and channels-last memory, which oneDNN runs with AVX-512 BF16
  instructions on CPUs that have them (and tensor cores on a GPU).
* ``OnnxBackend``: an exported ``.onnx`` (fp32 or static INT8 QDQ, see ``export.py``) in an
  ONNX Runtime session, intra-op threads = physical cores (hyper-threads share the vector units
  the convolutions saturate, so more threads only add contention).

The ONNX file describes itself (``OnnxModelInfo`` in ``metadata_props``): preprocessing, codec,
variant, precision, so ``predict`` runs from the ``.onnx`` alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import torch
from torch import nn

from abdus.choices import BACKENDS
from abdus.data.heatmaps import HeatmapCodec
from abdus.data.preprocess import PreprocessConfig
from abdus.errors import AbdusInputError
from abdus.modelfile import check_header, taxonomy_header

ONNX_FORMAT = "abdus-onnx"
ONNX_FORMAT_VERSION = 1
_META_KEY = "abdus"  # the metadata_props key holding OnnxModelInfo as JSON


def check_backend(name: str) -> str:
    """``name`` if it is a known backend, else ValueError naming the valid ones."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    return name


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads of one core count once)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cpus:
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return max(1, len(cores))


def cpu_features() -> dict[str, bool]:
    """Which of the instruction sets the backends use this CPU has (Linux /proc/cpuinfo):
    ``avx2``, ``avx512f``, ``vnni`` (u8 x s8 dot products: INT8, AVX512_VNNI or AVX_VNNI),
    ``avx512_bf16`` (native bfloat16), ``amx``. All False where /proc/cpuinfo is unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    flags = set(
        next(
            (ln.split(":", 1)[1] for ln in text.splitlines() if ln.startswith("flags")), ""
        ).split()
    )
    return {
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": bool(flags & {"amx_int8", "amx_bf16"}),
    }


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """True where bfloat16 matmul/convolution runs natively (CUDA >= Ampere, CPU AVX-512 BF16)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class NetworkBackend(Protocol):
    """What ``Predictor`` needs from a backend."""

    name: str
    classifies: bool
    locates: bool

    def run(
        self, images: torch.Tensor, class_images: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(B, 1, H, W) x2 -> logits (B, 11) | None, heatmaps (B, 14, H, W) | None (float32)."""
        ...


def one_shot_forward(
    model: nn.Module, images: torch.Tensor, class_images: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(logits (B, 11) | None, heatmaps (B, 14, H, W) | None) of a model for both inputs.

    A multi-task model runs its shared trunk once over both inputs stacked on the batch axis,
    then each task's own stages (paper 2.2, "one shot"); other variants run what they have.
    Also the graph that ``export.py`` traces to ONNX.
    """
    outputs = getattr(model, "output_names", ("heatmaps", "logits"))
    classifies, locates = "logits" in outputs, "heatmaps" in outputs
    if classifies and locates and hasattr(model, "forward_shared"):
        b = images.shape[0]
        shared = model.forward_shared(torch.cat([images, class_images]))  # (2B, ...) per level
        heatmaps = model.forward_landmarks(images, [f[:b] for f in shared])
        logits = model.forward_view(class_images, [f[b:] for f in shared])
        return logits, heatmaps
    logits = model(class_images, only="logits")["logits"] if classifies else None
    heatmaps = model(images, only="heatmaps")["heatmaps"] if locates else None
    return logits, heatmaps


class TorchBackend:
    """Eager PyTorch; ``bf16``: autocast to bfloat16 + channels-last (default with bf16)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "cpu",
        bf16: bool = False,
        channels_last: bool | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.bf16 = bool(bf16)
        self.channels_last = self.bf16 if channels_last is None else bool(channels_last)
        model = model.eval().to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        outputs = getattr(model, "output_names", ("heatmaps", "logits"))
        self.classifies, self.locates = "logits" in outputs, "heatmaps" in outputs
        self.name = "torch-bf16" if self.bf16 else "torch-fp32"

    def forward(
        self, images: torch.Tensor, class_images: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Raw forward (no autocast, no device move): see ``one_shot_forward``."""
        return one_shot_forward(self.model, images, class_images)

    @torch.inference_mode()
    def run(
        self, images: torch.Tensor, class_images: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(B, 1, H, W) x2 -> float32 logits (B, 11), heatmaps (B, 14, H, W) on the device."""
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        images = images.to(self.device).contiguous(memory_format=memory)
        class_images = class_images.to(self.device).contiguous(memory_format=memory)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits, heatmaps = self.forward(images, class_images)
        logits = None if logits is None else logits.float()
        heatmaps = None if heatmaps is None else heatmaps.float().contiguous()
        return logits, heatmaps


@dataclass(frozen=True)
class OnnxModelInfo:
    """What an abdus ``.onnx`` says about itself (stored as JSON in ``metadata_props``).

    ``preprocess`` / ``codec``: as the model was trained. ``model``: ``{"variant", "config"}``
    (``abdus.models.model_descriptor``). ``precision``: "fp32" or "int8". ``source_sha256``:
    hash of the PyTorch file it was exported from ("" if unknown).
    """

    preprocess: PreprocessConfig
    codec: HeatmapCodec
    model: dict[str, Any]
    precision: str = "fp32"
    model_id: str = ""
    source_sha256: str = ""
    train_config: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The metadata value (taxonomy names included, checked on load)."""
        return json.dumps(
            {
                "format": ONNX_FORMAT,
                "version": ONNX_FORMAT_VERSION,
                "taxonomy": taxonomy_header(),
                "preprocess": {**asdict(self.preprocess), "size": list(self.preprocess.size)},
                "codec": {**asdict(self.codec), "size": list(self.codec.size)},
                "model": self.model,
                "precision": self.precision,
                "model_id": self.model_id,
                "source_sha256": self.source_sha256,
                "train_config": self.train_config,
                "quantization": self.quantization,
            }
        )

    @classmethod
    def from_json(cls, text: str, path: str | Path) -> OnnxModelInfo:
        """Parse and check the metadata value; AbdusInputError naming ``path`` if unusable."""
        try:
            data = json.loads(text)
        except ValueError as err:
            raise AbdusInputError(f"not an abdus ONNX model ({err})", path) from None
        check_header(
            data, path, formats=(ONNX_FORMAT,), version=ONNX_FORMAT_VERSION, what="abdus ONNX model"
        )
        try:
            pre, codec = data["preprocess"], data["codec"]
            info = cls(
                preprocess=PreprocessConfig(float(pre["spacing_mm"]), tuple(pre["size"])),
                codec=HeatmapCodec(**{**codec, "size": tuple(codec["size"])}),
                model=dict(data["model"]),
                precision=str(data.get("precision", "fp32")),
                model_id=str(data.get("model_id", "")),
                source_sha256=str(data.get("source_sha256", "")),
                train_config=dict(data.get("train_config", {})),
                quantization=dict(data.get("quantization", {})),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise AbdusInputError(f"not an abdus ONNX model ({err})", path) from None
        return info


def read_onnx_info(path: Path) -> OnnxModelInfo | None:
    """The abdus metadata of an ``.onnx`` file (None when it has none); AbdusInputError naming
    ``path`` when it is there but unusable."""
    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    if metadata_key() not in meta:
        return None
    return OnnxModelInfo.from_json(meta[metadata_key()], path)


def _session_options(threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or physical_cores())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: no per-node placement chatter
    return options


class OnnxBackend:
    """An abdus ``.onnx`` in an ONNX Runtime session (CPU, or CUDA where that EP exists)."""

    def __init__(
        self, path: str | Path, *, threads: int | None = None, device: str | torch.device = "cpu"
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise AbdusInputError("ONNX model file not found", self.path)
        providers = ["CPUExecutionProvider"]
        cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        if torch.device(device).type == "cuda" and cuda:
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(
                str(self.path), _session_options(threads), providers=providers
            )
        except Exception as err:  # onnxruntime raises its own types for a bad file
            detail = " ".join(str(err).split())[:200]
            raise AbdusInputError(f"not a loadable ONNX model ({detail})", self.path) from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if _META_KEY not in meta:
            raise AbdusInputError("an ONNX model without abdus metadata", self.path)
        self.info = OnnxModelInfo.from_json(meta[_META_KEY], self.path)
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.classifies, self.locates = "logits" in self.outputs, "heatmaps" in self.outputs
        self.name = f"onnx-{self.info.precision}"

    def run(
        self, images: torch.Tensor, class_images: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(B, 1, H, W) x2 -> float32 CPU logits (B, 11), heatmaps (B, 14, H, W)."""
        given = {"image": images, "class_image": class_images}
        feed = {
            name: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)
            for name, t in given.items()
            if name in self.inputs
        }
        found = dict(zip(self.outputs, self.session.run(None, feed), strict=True))
        logits = found.get("logits")
        heatmaps = found.get("heatmaps")
        return (
            None if logits is None else torch.from_numpy(logits),
            None if heatmaps is None else torch.from_numpy(heatmaps),
        )


def metadata_key() -> str:
    """The ``metadata_props`` key under which ``OnnxModelInfo.to_json`` is stored."""
    return _META_KEY


__all__ = [
    "BACKENDS",
    "NetworkBackend",
    "OnnxBackend",
    "OnnxModelInfo",
    "TorchBackend",
    "bf16_supported",
    "check_backend",
    "cpu_features",
    "metadata_key",
    "one_shot_forward",
    "physical_cores",
    "read_onnx_info",
]
