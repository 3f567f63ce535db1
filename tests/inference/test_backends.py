"""Backends and the predictor's decoding: bf16 / channels-last, task-only decode, metadata."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from abdus.data.heatmaps import HeatmapCodec
from abdus.data.preprocess import PreprocessConfig
from abdus.errors import AbdusInputError
from abdus.inference.backends import (
    OnnxModelInfo,
    TorchBackend,
    check_backend,
    physical_cores,
)
from abdus.inference.predictor import Predictor
from abdus.models import build_model
from abdus.taxonomy import NUM_LANDMARKS, landmark_channels_of_view

CONFIG = PreprocessConfig(spacing_mm=4.0, size=(64, 64))
CODEC = HeatmapCodec.from_mm((64, 64), 8.0, 4.0)


def _tiny(name: str = "mgcn_r") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(
        name, depth="resnet18", widths=(8, 16, 32, 64), gcn_k=7, classifier_hidden=16
    )


def test_physical_cores_is_within_the_cpus():
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)


def test_unknown_backend_names_the_valid_ones():
    with pytest.raises(ValueError, match="torch, onnx, onnx-int8"):
        check_backend("tensorrt")


def test_bf16_channels_last_backend_is_close_to_fp32_and_leaves_fp32_alone(random_batch):
    images, classes = random_batch((64, 64))
    fp32 = TorchBackend(_tiny())
    bf16 = TorchBackend(_tiny(), bf16=True)
    assert bf16.channels_last and bf16.name == "torch-bf16"
    conv = next(m for m in bf16.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    logits32, heat32 = fp32.run(images, classes)
    logits16, heat16 = bf16.run(images, classes)
    assert logits16.dtype == torch.float32 and heat16.dtype == torch.float32
    assert heat16.is_contiguous()  # decoded as NCHW
    scale = heat32.abs().max()
    assert (heat16 - heat32).abs().max() < 0.1 * scale  # bf16 keeps ~3 significant digits
    assert (logits16 - logits32).abs().max() < 0.1 * logits32.abs().max() + 0.05


def test_task_only_decoding_equals_the_full_decode_on_the_views_channels(random_batch):
    predictor = Predictor(_tiny(), CONFIG, CODEC)
    images, classes = random_batch((64, 64), batch=3)
    views = ["kidney_right_trans", "liver_right_trans", None]
    full = predictor.run_network(images, classes)
    fast = predictor.run_network(images, classes, views=views, task_only=True)
    predicted = int(fast[2].probabilities.argmax())
    for i, view in enumerate([views[0], views[1], predicted]):
        kept = list(landmark_channels_of_view(view))
        others = [c for c in range(NUM_LANDMARKS) if c not in kept]
        np.testing.assert_allclose(fast[i].points_model[kept], full[i].points_model[kept])
        np.testing.assert_allclose(fast[i].confidence[kept], full[i].confidence[kept])
        assert np.isnan(fast[i].points_model[others]).all()
        np.testing.assert_allclose(fast[i].probabilities, full[i].probabilities)


def test_heatmap_only_and_classifier_only_models_run(random_batch):
    images, classes = random_batch((64, 64))
    logits, heatmaps = TorchBackend(_tiny("mgcn")).run(images, classes)
    assert logits is None and heatmaps.shape == (2, 14, 64, 64)
    logits, heatmaps = TorchBackend(_tiny("stl")).run(images, classes)
    assert heatmaps is None and logits.shape == (2, 11)
    outs = Predictor(_tiny("stl"), CONFIG, CODEC).run_network(images, classes, task_only=True)
    assert np.isnan(outs[0].points_model).all() and outs[0].probabilities.shape == (11,)


def test_onnx_metadata_round_trips_and_rejects_other_taxonomies(tmp_path):
    info = OnnxModelInfo(CONFIG, CODEC, {"variant": "mgcn_r", "config": {}}, precision="int8")
    again = OnnxModelInfo.from_json(info.to_json(), tmp_path)
    assert again == info
    foreign = info.to_json().replace('"others"', '"other"')
    with pytest.raises(AbdusInputError, match="taxonomy"):
        OnnxModelInfo.from_json(foreign, tmp_path)
    with pytest.raises(AbdusInputError, match="not an abdus ONNX"):
        OnnxModelInfo.from_json("{}", tmp_path)
