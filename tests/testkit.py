"""Helpers shared by several test folders (imported after putting ``tests/`` on ``sys.path``):
one torch thread, a tiny untrained model file and a bounded poll."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from abdus.data.heatmaps import HeatmapCodec
from abdus.models import build_model
from abdus.training.checkpoint import save_model
from abdus.training.presets import preset_config


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on tiny tensors it is faster than two spinning threads and keeps
    results reproducible while other test processes share the CPU. A conftest that imports it
    makes it autouse for its folder."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def save_tiny_model(path: Path, model_name: str = "mgcn_r", seed: int = 0) -> Path:
    """An untrained ``tiny``-preset model file at ``path`` (weights from ``seed``)."""
    config = preset_config("tiny", model=model_name)
    torch.manual_seed(seed)
    model = build_model(config.model, config.model_options)
    pre = config.preprocess
    codec = HeatmapCodec.from_mm(pre.size, config.sigma_mm, pre.spacing_mm)
    save_model(path, config=config, codec=codec, model=model)
    return path


def wait_until(
    condition: Callable[[], Any], *, timeout_s: float, what: str, poll_s: float = 0.25
) -> Any:
    """Poll ``condition`` until it returns something truthy; at most ``timeout_s`` seconds and
    ``timeout_s / poll_s + 1`` polls. Returns that value; fails the test naming ``what``."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / poll_s) + 1):
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
