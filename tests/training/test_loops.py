"""The epoch loop reads losses only at its logging points and still stops on a NaN; compiling
falls back to eager; the linear learning-rate scaling rule."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
from torch import nn
from training_synthetic import tiny_config

from abdus.training import loops
from abdus.training.config import StageConfig, apply_overrides
from abdus.training.distributed import init_distributed
from abdus.training.loops import StepTools, TrainingDivergedError, train_epoch
from abdus.training.runtime import CompiledOrEager, maybe_compile
from abdus.training.stages import LANDMARKS, scaled_optimizer, stage_schedule


def _tools() -> StepTools:
    network = nn.Linear(2, 2)
    return StepTools(
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.1),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        ctx=init_distributed("cpu"),
    )


def _batches(losses: list[float], size: int = 2) -> list[dict[str, torch.Tensor]]:
    """One batch per loss; the fake step below returns the batch's ``loss`` value."""
    return [{"image": torch.zeros(size, 1, 4, 4), "loss": torch.tensor(v)} for v in losses]


@pytest.fixture
def fake_step(monkeypatch):
    calls = []

    def step(batch, tools):
        calls.append(float(batch["loss"]))
        return {"loss": batch["loss"], "half": batch["loss"] / 2}

    monkeypatch.setitem(loops.STEPS, LANDMARKS, step)
    return calls


def test_losses_are_read_every_log_every_steps_and_averaged_by_image(fake_step):
    logged = []
    result = train_epoch(
        LANDMARKS,
        _batches([1.0, 2.0, 3.0, 4.0, 5.0]),
        _tools(),
        description="t",
        global_step=7,
        log_every=3,
        on_log=lambda step, parts: logged.append((step, parts)),
    )
    assert logged == [(9, {"loss": 2.0, "half": 1.0}), (12, {"loss": 5.0, "half": 2.5})]
    assert result == {"loss": 3.0, "half": 1.5, "images": 10.0, "steps": 5.0}


@pytest.mark.parametrize(("log_every", "steps_run"), [(1, 2), (10, 5)])
def test_a_nan_loss_stops_the_epoch_at_the_next_logging_point(fake_step, log_every, steps_run):
    with pytest.raises(TrainingDivergedError, match="training diverged"):
        train_epoch(
            LANDMARKS,
            _batches([1.0, math.nan, 1.0, 1.0, 1.0]),
            _tools(),
            description="landmarks 1/1",
            log_every=log_every,
        )
    assert len(fake_step) == steps_run  # checked at once when logging every step


def test_compile_failure_at_build_or_first_call_falls_back_to_eager_with_one_warning(
    monkeypatch,
):
    module = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    expected = module(x)

    def no_compiler(_module):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.warns(UserWarning, match=r"torch.compile failed.*no compiler here"):
        wrapped = maybe_compile(module, True)
    assert torch.equal(wrapped(x), expected)

    def broken_at_call(_module):
        def run(*args):
            raise RuntimeError("backend crashed")

        return run

    monkeypatch.setattr(torch, "compile", broken_at_call)
    wrapped = CompiledOrEager(module)
    with pytest.warns(UserWarning, match="backend crashed"):
        assert torch.equal(wrapped(x), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(wrapped(x), expected)  # eager from now on, silently
    assert maybe_compile(module, False) is module
    assert {id(p) for p in wrapped.parameters()} == {id(p) for p in module.parameters()}


def test_reference_batch_size_scales_the_learning_rate_linearly_with_its_warm_up():
    base = tiny_config().stage1
    spec = dataclasses.replace(base, batch_size=16, reference_batch_size=4, warmup_epochs=1.0)
    assert scaled_optimizer(spec, world_size=2).lr == pytest.approx(base.optimizer.lr * 8)
    assert scaled_optimizer(base, world_size=2).lr == base.optimizer.lr  # 0: unscaled
    schedule = stage_schedule(spec, steps_per_epoch=10, world_size=2)
    assert schedule.at(0) == pytest.approx(base.optimizer.lr * 8 / 10)
    assert schedule.at(9) == pytest.approx(base.optimizer.lr * 8)
    with pytest.raises(ValueError, match="reference_batch_size >= 0"):
        StageConfig(reference_batch_size=-1)


def test_data_placement_and_compile_are_checked_config_fields():
    config = apply_overrides(tiny_config(), {"data_on_device": "on", "compile": True})
    assert (config.data_on_device, config.compile) == ("on", True)
    with pytest.raises(ValueError, match=r"unknown data_on_device 'gpu'.*auto, on, off"):
        apply_overrides(tiny_config(), {"data_on_device": "gpu"})
    with pytest.raises(ValueError, match="compile must be true or false"):
        apply_overrides(tiny_config(), {"compile": "yes"})
