"""ONNX export (fp32, static INT8) of an abdus model, and what INT8 costs in accuracy.

``export_onnx(run_or_model, out, int8=, calibration=)`` traces the one-shot graph
(``backends.one_shot_forward``: inputs ``image`` and ``class_image`` (B, 1, H, W), outputs
``logits`` (B, 11) and ``heatmaps`` (B, 14, H, W), batch dynamic) with the TorchScript-based
exporter (``dynamo=False``, opset 17), writes the abdus descriptors into ``metadata_props``
(``backends.OnnxModelInfo``) and checks ONNX Runtime against PyTorch.

INT8 (``int8=True``): static quantisation with ONNX Runtime (``quantize_static``, QDQ format,
per-channel symmetric int8 weights, asymmetric uint8 activations, percentile ranges; the last
refinement block stays fp32, see ``KEEP_FP32``) calibrated on preprocessed images of the
*train* split of a dataset, so the test split stays unseen. u8 x s8
is the operand pair that VNNI (``vpdpbusd``) multiplies natively. ``int8_cost`` measures the
price: view accuracy and caliper change (mm) of INT8 against fp32 on the test split (defined in
``abdus.inference.compare``, re-exported here).
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import hashlib
import io
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from abdus.data.heatmaps import HeatmapCodec
from abdus.errors import AbdusInputError
from abdus.inference.backends import (
    OnnxBackend,
    OnnxModelInfo,
    check_backend,
    cpu_features,
    metadata_key,
    one_shot_forward,
)
from abdus.inference.compare import compare_predictors, int8_cost
from abdus.io.atomic import atomic_path

ONNX_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"
OPSET = 17
_MODEL_FILES = ("model.pt", "checkpoint.pt")


@dataclass
class LoadedModel:
    """A PyTorch model with what an export needs: ``config`` is a ``TrainConfig``."""

    model: nn.Module
    config: Any
    codec: HeatmapCodec
    source: Path | None = None
    model_id: str = ""


def model_file_of(run_or_model: str | Path) -> Path:
    """The PyTorch file of a run folder (``model.pt``, else ``checkpoint.pt``) or the file."""
    path = Path(run_or_model)
    if path.is_file():
        return path
    for name in _MODEL_FILES:
        if (path / name).is_file():
            return path / name
    raise AbdusInputError("no model.pt or checkpoint.pt here (give a run folder or a .pt)", path)


def load_for_export(run_or_model: str | Path) -> LoadedModel:
    """Load a run folder or ``.pt`` file for export (CPU, eval mode)."""
    from abdus.training.checkpoint import load_model_file

    source = model_file_of(run_or_model)
    model, config, codec = load_model_file(source)
    run_name = source.parent.name if source.name in _MODEL_FILES else source.stem
    return LoadedModel(model.eval(), config, codec, source, f"{config.model}:{run_name}")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (read in 8 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


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


def _info(loaded: LoadedModel, precision: str, quantization: dict[str, Any]) -> OnnxModelInfo:
    from abdus.models import model_descriptor

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
    import onnx

    from abdus import __version__

    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != metadata_key()]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=metadata_key(), value=info.to_json())
    proto.producer_name, proto.producer_version = "abdus", __version__
    proto.doc_string = "abdus: abdominal ultrasound view classification and caliper landmarks"
    onnx.save(proto, str(path))


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


def calibration_feeds(
    data: str | Path, loaded: LoadedModel, count: int, *, split: str = "train"
) -> list[dict[str, np.ndarray]]:
    """``count`` preprocessed images (batch 1 feeds) spread evenly over ``split`` of a dataset."""
    from abdus.data.dataset import UltrasoundDataset
    from abdus.data.splits import split_records
    from abdus.io.manifest import load_manifest

    manifest = load_manifest(data)
    config = loaded.config
    records = split_records(manifest, split, test_fraction=config.test_fraction, seed=config.seed)
    if not records:
        raise AbdusInputError(f"the {split} split of the calibration data has no images", data)
    picks = np.unique(np.linspace(0, len(records) - 1, min(count, len(records))).astype(int))
    chosen = [records[i] for i in picks]
    dataset = UltrasoundDataset(
        manifest, chosen, config=config.preprocess, codec=loaded.codec, cache_dir=None
    )
    feeds = []
    for i in range(len(dataset)):
        sample = dataset[i]
        feeds.append(
            {
                "image": sample["image"][None].numpy(),
                "class_image": sample["class_image"][None].numpy(),
            }
        )
    return feeds


class _FeedReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over prepared feeds, readable in
    strides (``set_range``) so the calibrator holds few images' activations at a time."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]], inputs: set[str]) -> None:
        self._all = [{k: v for k, v in f.items() if k in inputs} for f in feeds]
        self._feeds = iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._feeds = iter(self._all[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


# ONNX Runtime's calibrators keep every intermediate tensor of the images they collect at once.
# Measured on a 24 GB machine: a 128-image percentile calibration of a narrow ResNet-18 model at
# 512 x 512 was killed for memory unstrided and peaked at 2.4 GB in strides of 4; the paper's
# ResNet-50 with 32 images peaks at 7.7 GB in strides of 4. Histograms merge across strides.
CALIBRATION_STRIDE = 4


CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# The last full-resolution refinement block stays fp32, so the heat maps leave the network in
# float, not in 8-bit steps. Measured on a trained tiny model (test split, model px): caliper
# change vs fp32 0.78 px (MinMax, all INT8), 0.48 (percentile), 0.33 (percentile + this block
# fp32), 0.15 (whole decoder fp32); at 512 px the fp32 block costs ~+10% network time, the
# fp32 decoder ~+40%.
KEEP_FP32 = ("decoder/refine.0/",)


def quantize_int8(
    fp32_path: Path,
    out: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    method: str = "percentile",
    keep_fp32: Sequence[str] = KEEP_FP32,
) -> dict[str, Any]:
    """Static INT8 (QDQ, per-channel s8 weights, u8 activations) of ``fp32_path``.

    ``method``: activation ranges from the calibration images ("percentile" = 0.001th to
    99.999th, "minmax", "entropy"). ``keep_fp32``: node-name fragments whose nodes stay fp32
    (see ``KEEP_FP32``).
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not feeds:
        raise ValueError("INT8 calibration needs at least one image")
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration {method!r}; valid: {', '.join(CALIBRATION_METHODS)}")
    calibrate = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                 "entropy": CalibrationMethod.Entropy}[method]  # fmt: skip
    inputs = {i.name for i in ort.InferenceSession(str(fp32_path)).get_inputs()}
    reader = type("Reader", (_FeedReader, CalibrationDataReader), {})(feeds, inputs)
    with tempfile.TemporaryDirectory(prefix="abdus-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference + graph optimisation (BatchNorm folded into Conv) before calibration.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        nodes = [n.name for n in onnx.load(str(prepared)).graph.node]
        excluded = [n for n in nodes if any(part in n for part in keep_fp32)]
        # The histogram calibrators print progress to stdout: keep stdout for reports (--json).
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            quantize_static(
                str(prepared),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calibrate,
                nodes_to_exclude=excluded,
                extra_options={
                    "ActivationSymmetric": False,
                    "WeightSymmetric": True,
                    "CalibStridedMinMax": CALIBRATION_STRIDE,  # strides for every method
                },
            )
    return {
        "format": "QDQ",
        "weights": "int8 per-channel symmetric",
        "activations": "uint8 asymmetric",
        "calibration": method,
        "calibration_images": len(feeds),
        "fp32_nodes": len(excluded),
    }


def export_loaded(
    loaded: LoadedModel,
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


def export_onnx(
    run_or_model: str | Path,
    out: str | Path,
    *,
    int8: bool = False,
    calibration: str | Path | None = None,
    calibration_images: int = 32,
    calibration_method: str = "percentile",
    check_images: int = 200,
) -> dict[str, Any]:
    """Export a run folder / ``.pt`` to ONNX; with ``int8`` static INT8 calibrated on DATA.

    ``calibration_images``: preprocessed train-split images used for the activation ranges;
    ``calibration_method``: "percentile" (default), "minmax" or "entropy"; ``check_images``:
    with ``int8``, up to this many test-split images of DATA on which the INT8 file is compared
    with PyTorch fp32 (``int8_cost``: view accuracy and caliper change in mm; 0 skips it).

    Returns the report: ``file``, ``precision``, ``size_mb`` (MiB), ``max_abs_diff`` per output
    (|ONNX Runtime - PyTorch fp32| on random inputs; ``max_abs_diff_real`` on preprocessed
    calibration images when given), ``fp32_size_mb``, ``outputs``, ``opset``, ``seconds``, and
    for INT8 ``int8_cost`` (see ``compare_predictors``).
    """
    if int8 and calibration is None:
        raise AbdusInputError("--int8 needs --calibration DATA (a dataset folder with a manifest)")
    if calibration_method not in CALIBRATION_METHODS:
        valid = ", ".join(CALIBRATION_METHODS)
        raise AbdusInputError(f"unknown calibration method {calibration_method!r}; valid: {valid}")
    if calibration_images < 1:
        raise AbdusInputError(f"--calibration-images must be >= 1, got {calibration_images}")
    loaded = load_for_export(run_or_model)
    feeds = (
        calibration_feeds(calibration, loaded, calibration_images)
        if calibration is not None
        else []
    )
    report = export_loaded(
        loaded, out, int8=int8, calibration_feeds_=feeds, calibration_method=calibration_method
    )
    if int8 and check_images > 0:
        try:
            report["int8_cost"] = int8_cost(run_or_model, out, calibration, limit=check_images)
        except AbdusInputError as err:  # e.g. a dataset without a test split: the file stands
            report["int8_cost"] = {"skipped": str(err)}
    return report


# ------------------------------------------------------------------------ finding .onnx files
_ON_THE_FLY: dict[tuple[str, str], Path] = {}


def _temporary_export(source: Path) -> Path:
    """Export ``source`` once per process into a temporary folder removed at exit."""
    key = (str(source.resolve()), file_sha256(source))
    if key not in _ON_THE_FLY:
        folder = Path(tempfile.mkdtemp(prefix="abdus-onnx-"))
        atexit.register(shutil.rmtree, folder, True)
        export_loaded(load_for_export(source), folder / ONNX_NAME)
        _ON_THE_FLY[key] = folder / ONNX_NAME
    return _ON_THE_FLY[key]


def _exported_from(onnx_path: Path, source: Path) -> bool:
    """Whether ``onnx_path``'s metadata names ``source``'s current bytes as its origin."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    if metadata_key() not in meta:
        return False
    info = OnnxModelInfo.from_json(meta[metadata_key()], onnx_path)
    return info.source_sha256 == file_sha256(source)


def resolve_onnx(run_or_model: str | Path, backend: str) -> Path:
    """The ``.onnx`` file that ``backend`` ("onnx" / "onnx-int8") runs for a path.

    A ``.onnx`` path is used as is. For a run folder or ``.pt``: ``model.onnx`` (``onnx``) or
    ``model.int8.onnx`` (``onnx-int8``) beside the model file, if it was exported from these
    exact weights; a missing or stale fp32 file is re-exported into a temporary folder, a
    missing or stale INT8 file is an error (INT8 needs calibration data).
    """
    check_backend(backend)
    path = Path(run_or_model)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise AbdusInputError("ONNX model file not found", path)
        return path
    source = model_file_of(path)
    wanted = source.parent / (INT8_NAME if backend == "onnx-int8" else ONNX_NAME)
    if wanted.is_file() and _exported_from(wanted, source):
        return wanted
    if backend == "onnx":
        return _temporary_export(source)
    state = "is stale (exported from other weights)" if wanted.is_file() else "is missing"
    raise AbdusInputError(
        f"{wanted.name} {state}: run `abdus export {path} --out {wanted} --int8 "
        "--calibration DATA` first",
        path,
    )


__all__ = [
    "CALIBRATION_METHODS",
    "INT8_NAME",
    "KEEP_FP32",
    "ONNX_NAME",
    "OPSET",
    "ExportGraph",
    "LoadedModel",
    "calibration_feeds",
    "compare_predictors",
    "export_loaded",
    "export_onnx",
    "int8_cost",
    "load_for_export",
    "max_abs_diff",
    "pad_decoder_channels",
    "quantize_int8",
    "resolve_onnx",
]
