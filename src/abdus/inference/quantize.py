"""Static INT8 quantisation of an exported ``.onnx`` with ONNX Runtime, and its calibration
images.

``quantize_static``, QDQ format, per-channel symmetric int8 weights, asymmetric uint8
activations, percentile ranges; the last refinement block stays fp32 (``KEEP_FP32``). The
calibration images are preprocessed images of the *train* split of a dataset, so the test split
stays unseen. u8 x s8 is the operand pair that VNNI (``vpdpbusd``) multiplies natively.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from abdus.data.dataset import UltrasoundDataset
from abdus.data.splits import split_records
from abdus.errors import AbdusInputError
from abdus.io.manifest import load_manifest
from abdus.modelfile import LoadedNetwork


def calibration_feeds(
    data: str | Path, loaded: LoadedNetwork, count: int, *, split: str = "train"
) -> list[dict[str, np.ndarray]]:
    """``count`` preprocessed images (batch 1 feeds) spread evenly over ``split`` of a dataset."""
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
