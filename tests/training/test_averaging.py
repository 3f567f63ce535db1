"""The weight average (``StageConfig.ema_decay``): its arithmetic, and a stage that validates,
keeps and resumes it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from training_synthetic import synthetic_data, tiny_config, with_epochs

from abdus.training.averaging import WeightAverage
from abdus.training.config import StageConfig
from abdus.training.distributed import init_distributed
from abdus.training.runlog import read_metrics
from abdus.training.stages import LANDMARKS, VIEWS
from abdus.training.trainer import Trainer


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def test_the_average_follows_the_weights_with_a_warm_up_and_leaves_still_ones_exact():
    net = _net()
    average = WeightAverage(net, decay=0.9)
    frozen = net[2].weight.detach().clone()
    start = net[0].weight.detach().clone()
    assert average.current_decay() == pytest.approx(2 / 11)  # the warm-up's first step
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].num_batches_tracked.fill_(7)
    average.update()
    expected = start + (1 - 2 / 11) * 1.0
    assert torch.allclose(average.average["0.weight"], expected)
    assert torch.equal(average.average["2.weight"], frozen)  # not moved: bit-identical
    assert int(average.average["1.num_batches_tracked"]) == 7  # integers are copied
    for _ in range(200):
        average.update()
    assert average.current_decay() == 0.9  # the warm-up is over
    assert torch.allclose(average.average["0.weight"], net[0].weight, atol=1e-6)


def test_applied_lends_the_average_to_the_model_and_gives_its_weights_back():
    net = _net()
    average = WeightAverage(net, decay=0.5)
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    trained = net[0].weight.detach().clone()
    average.update()
    with average.applied():
        assert torch.equal(net[0].weight, average.average["0.weight"])
        assert not torch.equal(net[0].weight, trained)
    assert torch.equal(net[0].weight, trained)
    restored = WeightAverage(_net(), decay=0.1)
    restored.load_state_dict(average.state_dict())
    assert restored.decay == 0.5 and restored.updates == 1
    assert torch.equal(restored.average["0.weight"], average.average["0.weight"])


def test_ema_decay_is_checked():
    assert StageConfig(ema_decay=0.99).ema_decay == 0.99
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="ema_decay must be in"):
            StageConfig(ema_decay=bad)
    with pytest.raises(ValueError, match="ema_decay must be in"):
        WeightAverage(_net(), 0.0)


def _averaged_view_stage(tmp_path, epochs: int) -> Trainer:
    config = with_epochs(tiny_config(view_stage_trains_shared=True), 1, epochs)
    stage2 = dataclasses.replace(config.stage2, ema_decay=0.9)
    config = dataclasses.replace(config, stage2=stage2)
    return Trainer(config, tmp_path, synthetic_data(config), init_distributed("cpu"))


def test_a_stage_with_ema_decay_validates_keeps_and_ends_on_the_average(tmp_path, one_thread):
    trainer = _averaged_view_stage(tmp_path, 1)
    trainer.run_stage(LANDMARKS)
    assert trainer.average is None  # stage 1 keeps none
    landmark_path = {k: v.clone() for k, v in trainer.model.landmark_stages.state_dict().items()}
    trainer.progress.stage, trainer.progress.epoch = VIEWS, 0
    trainer.run_stage(VIEWS)
    average = trainer.average
    assert average is not None and average.updates > 0
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    trained = payload["model"]["state"]  # the weights as trained, for a resume
    assert payload["average"]["updates"] == average.updates
    best = torch.load(tmp_path / "best.pt", weights_only=True)["model"]["state"]
    floats = [k for k in best if best[k].is_floating_point()]
    assert any(not torch.equal(best[k], trained[k]) for k in floats)  # not the last step
    assert all(torch.equal(best[k], average.average[k]) for k in best)
    for key, value in trainer.model.landmark_stages.state_dict().items():
        assert torch.equal(value, landmark_path[key]), key  # the average kept them exact
    record = read_metrics(tmp_path)[-1]
    assert record["stage"] == VIEWS and record["best"] and record["val"]["view_accuracy"] >= 0


def test_a_resumed_stage_continues_its_average(tmp_path, one_thread):
    trainer = _averaged_view_stage(tmp_path, 2)
    trainer.run_stage(LANDMARKS)
    trainer.progress.stage, trainer.progress.epoch = VIEWS, 0
    trainer.config = dataclasses.replace(
        trainer.config, stage2=dataclasses.replace(trainer.config.stage2, epochs=1)
    )
    trainer.run_stage(VIEWS)  # one epoch, checkpointed
    saved = trainer.average.state_dict()
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    config = dataclasses.replace(
        trainer.config, stage2=dataclasses.replace(trainer.config.stage2, epochs=2)
    )
    resumed = Trainer(config, tmp_path, synthetic_data(config), init_distributed("cpu"),
                      payload=payload)  # fmt: skip
    average = resumed._weight_average(config.stage2)
    assert average.updates == saved["updates"]
    assert all(torch.equal(average.average[k], v) for k, v in saved["average"].items())
