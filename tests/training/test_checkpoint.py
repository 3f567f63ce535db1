"""Checkpoints describe themselves, round-trip, restore RNG streams, and fail clearly."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from training_synthetic import tiny_config

from abdus.errors import AbdusInputError
from abdus.taxonomy import LANDMARKS, VIEW_NAMES
from abdus.training import checkpoint as ckpt
from abdus.training.stages import build_networks, codec_of


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_state_round_trip_replays_the_same_draws():
    state = ckpt.capture_rng_state()
    first = _draws()
    ckpt.restore_rng_state(state)
    assert _draws() == first


@pytest.fixture
def saved(tmp_path):
    config = tiny_config()
    model, discriminator = build_networks(config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 1, 64, 64))["heatmaps"].sum().backward()
    optimizer.step()  # momentum buffers now exist
    progress = ckpt.Progress("views", epoch=2, global_step=17, best={"landmark_error_mm": 3.5})
    path = tmp_path / ckpt.CHECKPOINT_NAME
    ckpt.save_checkpoint(
        path,
        config=config,
        codec=codec_of(config),
        model=model,
        discriminator=discriminator,
        optimizers={"network": optimizer},
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        progress=progress,
        history=[{"stage": "landmarks", "epoch": 1}],
    )
    return path, config, model, optimizer


def test_checkpoint_describes_itself_and_round_trips(saved):
    path, config, model, optimizer = saved
    payload = ckpt.load_checkpoint(path)
    assert payload["format"] == "abdus-checkpoint" and payload["abdus_version"]
    assert payload["taxonomy"] == {"views": list(VIEW_NAMES), "landmarks": list(LANDMARKS)}
    assert payload["config"] == config.to_dict()
    assert payload["codec"]["sigma_px"] == pytest.approx(2.0)  # 8 mm at 4 mm / px
    assert payload["model"]["variant"] == "mgcn_r"
    assert payload["model"]["config"]["widths"] == [8, 16, 32, 64]
    assert payload["discriminator"]["config"]["width"] == 8
    assert payload["progress"] == {
        "stage": "views",
        "epoch": 2,
        "global_step": 17,
        "best": {"landmark_error_mm": 3.5},
        "stale_epochs": 0,
    }
    assert payload["history"] == [{"stage": "landmarks", "epoch": 1}]
    assert {"python", "numpy", "torch"} <= set(payload["rng"])
    restored = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    restored.load_state_dict(payload["optimizers"]["network"])
    momentum = [s["momentum_buffer"] for s in optimizer.state.values()]
    loaded = [s["momentum_buffer"] for s in restored.state.values()]
    assert momentum and all(torch.equal(a, b) for a, b in zip(momentum, loaded, strict=True))
    rebuilt, rebuilt_config, codec = ckpt.load_model_file(path)
    assert rebuilt_config == config and codec == codec_of(config)
    mine, theirs = model.state_dict(), rebuilt.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert not rebuilt.training


def test_model_file_is_small_and_run_folder_prefers_it(saved, tmp_path):
    path, config, model, _ = saved
    ckpt.save_model(tmp_path / ckpt.MODEL_NAME, config=config, codec=codec_of(config), model=model)
    small = ckpt.load_checkpoint(tmp_path / ckpt.MODEL_NAME)
    assert small["format"] == "abdus-model"
    assert "optimizers" not in small and "rng" not in small
    assert (tmp_path / ckpt.MODEL_NAME).stat().st_size < path.stat().st_size
    model_from_run, _, _ = ckpt.load_model_from_run(tmp_path)
    assert model_from_run.variant == "mgcn_r"


@pytest.mark.parametrize("case", ["missing", "garbage", "foreign", "taxonomy"])
def test_bad_checkpoints_are_one_line_errors(saved, tmp_path, case):
    path = tmp_path / "bad.pt"
    if case == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    elif case == "foreign":
        torch.save({"state_dict": {}}, path)
    elif case == "taxonomy":
        payload = ckpt.load_checkpoint(saved[0])
        payload["taxonomy"]["views"] = ["a", "b"]
        torch.save(payload, path)
    with pytest.raises(AbdusInputError) as caught:
        ckpt.load_checkpoint(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_run_folder_without_model_or_checkpoint_is_an_error(tmp_path):
    with pytest.raises(AbdusInputError, match=r"no model\.pt, checkpoint\.pt or model\.pbt"):
        ckpt.load_model_from_run(tmp_path)
