"""ONNX export (fp32, static INT8) of an abdus network, and the ``.onnx`` files beside a run.

``export_loaded(loaded, out, int8=, calibration_feeds_=)`` traces the one-shot graph
(``backends.one_shot_forward``: inputs ``image`` and ``class_image`` (B, 1, H, W), outputs
``logits`` (B, 11) and ``heatmaps`` (B, 14, H, W), batch dynamic) with the TorchScript-based
exporter (``dynamo=False``, opset 17), writes the abdus descriptors into ``metadata_props``
(``backends.OnnxModelInfo``), quantises it when asked (``abdus.inference.quantize``) and checks
ONNX Runtime against PyTorch. ``resolve_onnx`` finds the file a backend runs for a run folder.
What ``abdus export`` runs, with the accuracy cost of INT8, is
``abdus.inference.export_command.export_onnx``.
"""

from __future__ import annotations

import atexit
import copy
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from abdus import __version__
from abdus.choices import Backend, check_choice
from abdus.errors import AbdusInputError
from abdus.inference.backends import (
    OnnxBackend,
    OnnxModelInfo,
    cpu_features,
    metadata_key,
    one_shot_forward,
    read_onnx_info,
)
from abdus.inference.quantize import quantize_int8
from abdus.io.atomic import atomic_path
from abdus.modelfile import (
    INT8_NAME,
    ONNX_NAME,
    LoadedNetwork,
    ModelKind,
    file_sha256,
    find_model,
    open_network,
)
from abdus.models import model_descriptor

OPSET = 17
# Older names of the loaded-network API, kept for scripts written against them.
LoadedModel = LoadedNetwork
load_for_export = open_network


def _pad_conv(conv: nn.Conv2d, channels: int, padded: int) -> None:
    """Grow ``conv``'s ``channels``-wide input / output side to ``padded`` with zero weights."""
    if conv.groups != 1:
        raise ValueError("only dense convolutions can be padded")
    out_c = padded if conv.out_channels == channels else conv.out_channels
    in_c = padded if conv.in_channels == channels else conv.in_channels
    weight = conv.weight.new_zeros(out_c, in_c, *conv.kernel_size)
    weight[: conv.out_channels, : conv.in_channels] = conv.weight.detach()
    conv.weight = nn.Parameter(weight, requires_grad=False)
    if conv.bias is not None:
        bias = conv.bias.new_zeros(out_c)
        bias[: conv.out_channels] = conv.bias.detach()
        conv.bias = nn.Parameter(bias, requires_grad=False)
    conv.out_channels, conv.in_channels = out_c, in_c


def pad_decoder_channels(model: nn.Module, multiple: int = 16) -> tuple[nn.Module, int | None]:
    """A copy of ``model`` whose landmark decoder runs ``multiple``-aligned channels.

    The decoder keeps 14 channels (one per landmark) at every level (paper 2.2), and 14-wide
    convolutions fall off the vectorised paths of ONNX Runtime's kernels: in INT8 at 512 x 512
    the decoder took ~45% of the network time for ~14% of its multiply-adds (measured). Extra
    zero filters make them 16 wide; the extra channels stay exactly zero through every level
    (zero weights and biases, ReLU(0) = 0, upsampled zeros are zeros), so sliced off at the end
    the heat maps are the same. Returns (model, channels to keep) or (model, None) unchanged.
    """
    decoder = getattr(model, "decoder", None)
    channels = getattr(decoder, "out_channels", None)
    if decoder is None or channels is None or channels % multiple == 0:
        return model, None
    padded_model = copy.deepcopy(model)
    padded = -(-channels // multiple) * multiple
    for module in padded_model.decoder.modules():
        if isinstance(module, nn.Conv2d):
            _pad_conv(module, channels, padded)
    return padded_model.eval(), channels


class ExportGraph(nn.Module):
    """The traced graph: ``(image, class_image) -> (logits?, heatmaps?)`` (see module doc).

    ``keep_channels``: heat-map channels to return (the rest are ``pad_decoder_channels``'s).
    """

    def __init__(self, model: nn.Module, keep_channels: int | None = None) -> None:
        super().__init__()
        self.model, self.keep_channels = model, keep_channels
        outputs = getattr(model, "output_names", ("heatmaps", "logits"))
        self.output_names = [n for n in ("logits", "heatmaps") if n in outputs]

    def forward(self, image: torch.Tensor, class_image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, heatmaps = one_shot_forward(self.model, image, class_image)
        if heatmaps is not None and self.keep_channels is not None:
            heatmaps = heatmaps[:, : self.keep_channels]  # (B, 14, H, W)
        return tuple(t for t in (logits, heatmaps) if t is not None)


def _info(loaded: LoadedNetwork, precision: str, quantization: dict[str, Any]) -> OnnxModelInfo:
    return OnnxModelInfo(
        preprocess=loaded.config.preprocess,
        codec=loaded.codec,
        model=model_descriptor(loaded.model),
        precision=precision,
        model_id=loaded.model_id,
        source_sha256=file_sha256(loaded.source) if loaded.source else "",
        train_config=loaded.config.to_dict(),
        quantization=quantization,
    )


def attach_metadata(path: Path, info: OnnxModelInfo) -> None:
    """Write ``info`` into the model's ``metadata_props`` (and producer fields) in place."""
    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != metadata_key()]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=metadata_key(), value=info.to_json())
    proto.producer_name, proto.producer_version = "abdus", __version__
    proto.doc_string = "abdus: abdominal ultrasound view classification and caliper landmarks"
    with atomic_path(path) as target:
        onnx.save(proto, str(target))


def _trace_to_onnx(model: nn.Module, size: tuple[int, int], path: Path) -> list[str]:
    """Trace ``ExportGraph`` of the channel-padded ``model`` at batch 2 (batch dynamic) into
    ``path``; returns its output names."""
    graph = ExportGraph(*pad_decoder_channels(model)).eval()
    example = torch.rand(2, 1, *size, generator=torch.Generator().manual_seed(0))
    axes = {name: {0: "batch"} for name in ("image", "class_image", *graph.output_names)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / deprecation chatter of the legacy exporter
        torch.onnx.export(
            graph,
            (example, example),
            str(path),
            input_names=["image", "class_image"],
            output_names=graph.output_names,
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    graph.eval()  # the exporter restores the training flag it found; keep eval
    return graph.output_names


def random_inputs(size: tuple[int, int], batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random (B, 1, H, W) inputs in [0, 1]; the classification input has zeroed patches."""
    rng = np.random.default_rng(seed)
    image = rng.random((batch, 1, *size), dtype=np.float32)
    kept = rng.random((batch, 1, *size)) > 0.2
    return {"image": image, "class_image": (image * kept).astype(np.float32)}


def max_abs_diff(
    model: nn.Module, onnx_path: Path, feeds: Sequence[dict[str, np.ndarray]]
) -> dict[str, float]:
    """Largest |ONNX Runtime - PyTorch fp32| per output over ``feeds`` (batches of inputs)."""
    session = OnnxBackend(onnx_path)
    worst: dict[str, float] = {}
    for feed in feeds:
        images, classes = torch.from_numpy(feed["image"]), torch.from_numpy(feed["class_image"])
        with torch.inference_mode():
            reference = one_shot_forward(model.eval(), images, classes)
        got = session.run(images, classes)
        for name, ref, out in zip(("logits", "heatmaps"), reference, got, strict=True):
            if ref is not None and out is not None:
                diff = float((ref.float() - out.float()).abs().max())
                worst[name] = max(worst.get(name, 0.0), diff)
    return worst


def export_loaded(
    loaded: LoadedNetwork,
    out: str | Path,
    *,
    int8: bool = False,
    calibration_feeds_: Sequence[dict[str, np.ndarray]] = (),
    fp32_file: Path | None = None,
    calibration_method: str = "percentile",
) -> dict[str, Any]:
    """Export an in-memory model (see ``export_onnx``); INT8 needs ``calibration_feeds_``.

    ``fp32_file``: an fp32 export of this same model to quantise instead of tracing again.
    """
    start = time.perf_counter()
    out = Path(out)
    size = tuple(loaded.config.preprocess.size)
    with tempfile.TemporaryDirectory(prefix="abdus-export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        if fp32_file is None:
            outputs = _trace_to_onnx(loaded.model, size, fp32)
            attach_metadata(fp32, _info(loaded, "fp32", {}))
        else:
            shutil.copyfile(fp32_file, fp32)
            outputs = OnnxBackend(fp32).outputs
        report: dict[str, Any] = {"fp32_size_mb": fp32.stat().st_size / 2**20}
        final = fp32
        if int8:
            quantized = Path(tmp) / "int8.onnx"
            quantization = quantize_int8(
                fp32, quantized, calibration_feeds_, method=calibration_method
            )
            attach_metadata(quantized, _info(loaded, "int8", quantization))
            final = quantized
        feeds = [random_inputs(size)]
        report["max_abs_diff"] = max_abs_diff(loaded.model, final, feeds)
        if calibration_feeds_:
            real = list(calibration_feeds_)[:4]
            report["max_abs_diff_real"] = max_abs_diff(loaded.model, final, real)
        with atomic_path(out) as target:
            shutil.copyfile(final, target)
    return {
        "file": str(out),
        "precision": "int8" if int8 else "fp32",
        "cpu_vnni": cpu_features()["vnni"],  # INT8 pays off on CPUs with VNNI
        "size_mb": out.stat().st_size / 2**20,
        **report,
        "inputs": ["image", "class_image"],
        "outputs": outputs,
        "opset": OPSET,
        "seconds": time.perf_counter() - start,
    }


# ------------------------------------------------------------------------ finding .onnx files
_ON_THE_FLY: dict[tuple[str, str], Path] = {}


def _temporary_export(source: Path) -> Path:
    """Export ``source`` once per process into a temporary folder removed at exit."""
    key = (str(source.resolve()), file_sha256(source))
    if key not in _ON_THE_FLY:
        folder = Path(tempfile.mkdtemp(prefix="abdus-onnx-"))
        atexit.register(shutil.rmtree, folder, True)
        export_loaded(open_network(source), folder / ONNX_NAME)
        _ON_THE_FLY[key] = folder / ONNX_NAME
    return _ON_THE_FLY[key]


def _exported_from(onnx_path: Path, source: Path) -> bool:
    """Whether ``onnx_path``'s metadata names ``source``'s current bytes as its origin."""
    info = read_onnx_info(onnx_path)
    return info is not None and info.source_sha256 == file_sha256(source)


def resolve_onnx(run_or_model: str | Path, backend: str) -> Path:
    """The ``.onnx`` file that ``backend`` ("onnx" / "onnx-int8") runs for a path.

    A ``.onnx`` path is used as is. For a run folder or ``.pt``: ``model.onnx`` (``onnx``) or
    ``model.int8.onnx`` (``onnx-int8``) beside the model file, if it was exported from these
    exact weights; a missing or stale fp32 file is re-exported into a temporary folder, a
    missing or stale INT8 file is an error (INT8 needs calibration data).
    """
    backend = check_choice(Backend, backend)
    path = Path(run_or_model)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise AbdusInputError("ONNX model file not found", path)
        return path
    ref = find_model(path)
    if ref.kind is not ModelKind.NETWORK:
        raise AbdusInputError(f"a {ref.kind} model has no ONNX export", ref.path)
    source = ref.path
    wanted = source.parent / (INT8_NAME if backend is Backend.ONNX_INT8 else ONNX_NAME)
    if wanted.is_file() and _exported_from(wanted, source):
        return wanted
    if backend is Backend.ONNX:
        return _temporary_export(source)
    state = "is stale (exported from other weights)" if wanted.is_file() else "is missing"
    raise AbdusInputError(
        f"{wanted.name} {state}: run `abdus export {path} --out {wanted} --int8 --data DATA` first",
        path,
    )


__all__ = [
    "INT8_NAME",
    "ONNX_NAME",
    "OPSET",
    "ExportGraph",
    "LoadedModel",
    "LoadedNetwork",
    "attach_metadata",
    "export_loaded",
    "load_for_export",
    "max_abs_diff",
    "pad_decoder_channels",
    "random_inputs",
    "resolve_onnx",
]
