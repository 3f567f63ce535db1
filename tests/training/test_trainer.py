"""The two-stage trainer on in-memory data: it learns, stage 2 really freezes, variants train
their own stages, run folders are protected, bad datasets give clear errors."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import itertools
import json
import warnings

import numpy as np
import pytest
import torch
from training_synthetic import synthetic_data, tiny_config, with_epochs

from abdus.baselines.pbt import train_pbt
from abdus.errors import AbdusInputError
from abdus.io.manifest import ImageRecord, Read
from abdus.training import trainer as trainer_module
from abdus.training.checkpoint import load_model_from_run
from abdus.training.datasets import check_landmark_coverage
from abdus.training.distributed import init_distributed
from abdus.training.loops import build_step_tools, landmark_step, view_step
from abdus.training.runlog import RunLog, read_metrics
from abdus.training.runtime import make_grad_scaler
from abdus.training.stages import (
    LANDMARKS,
    REFIT,
    VIEWS,
    LearningRateSchedule,
    build_networks,
    init_view_path,
    view_anchor,
)
from abdus.training.trainer import Trainer, train


def _trainer(config, run_dir) -> Trainer:
    return Trainer(config, run_dir, synthetic_data(config), init_distributed("cpu"))


def test_tiny_run_lowers_both_losses_and_writes_a_complete_run(tmp_path, one_thread):
    config = with_epochs(tiny_config(), 3, 3)
    trainer = _trainer(config, tmp_path)
    trainer.run()
    trainer.finish()

    records = read_metrics(tmp_path)
    assert [(r["stage"], r["epoch"]) for r in records] == [
        (s, e) for s in (LANDMARKS, VIEWS) for e in (1, 2, 3)
    ]
    marks = [r for r in records if r["stage"] == LANDMARKS]
    views = [r for r in records if r["stage"] == VIEWS]
    assert marks[-1]["train"]["loss"] < 0.8 * marks[0]["train"]["loss"]
    assert marks[-1]["train"]["location"] < marks[0]["train"]["location"]  # px
    assert marks[-1]["val"]["landmark_error_mm"] < marks[0]["val"]["landmark_error_mm"]
    assert set(marks[0]["train"]) >= {"regression", "location", "adversarial", "d_real"}
    assert views[-1]["train"]["view"] < views[0]["train"]["view"]
    assert views[-1]["val"]["view_accuracy"] > 1 / 11  # above chance on held-out images
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.yaml", "checkpoint.pt", "metrics.jsonl", "model.pt", "tensorboard"} <= names
    assert any((tmp_path / "tensorboard").iterdir())

    model, loaded_config, codec = load_model_from_run(tmp_path)
    assert loaded_config == config and codec == trainer.codec
    x = synthetic_data(config, 11, 1).train[3]["image"][None]
    trainer.model.eval()
    with torch.inference_mode():
        mine, theirs = trainer.model(x), model(x)
    assert torch.equal(mine["heatmaps"], theirs["heatmaps"])
    assert torch.equal(mine["logits"], theirs["logits"])


def test_a_channels_last_run_on_the_cpu_trains_through_short_last_batches(tmp_path, one_thread):
    # channels_last: true (the demo's and the paper's) trains in channels-last on the CPU too,
    # here beside the demo's PatchGAN at half the input size; the view stage's 45 images in
    # batches of 8 leave a short last batch of 5, a size PyTorch 2.13's 1x1 stride-2 backward
    # corrupted memory at (models.encoder.StridedPointwiseConv)
    critic = dataclasses.replace(tiny_config().discriminator_options, downsample=2)
    config = with_epochs(tiny_config(channels_last=True, discriminator_options=critic), 1, 1, 1)
    trainer = Trainer(config, tmp_path, synthetic_data(config, 45), init_distributed("cpu"))
    trainer.run()
    trainer.finish()
    convs = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert isinstance(trainer.discriminator.model[0], torch.nn.AvgPool2d)
    records = read_metrics(tmp_path)
    assert [r["stage"] for r in records] == [LANDMARKS, VIEWS, REFIT]
    assert all(np.isfinite(r["train"]["loss"]) for r in records)
    model, _, _ = load_model_from_run(tmp_path)  # the model file loads in any format
    with torch.inference_mode():
        out = model(synthetic_data(config, 11, 1).train[3]["image"][None])
    assert torch.isfinite(out["heatmaps"]).all() and torch.isfinite(out["logits"]).all()


def _snapshot(modules) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]


def test_view_stage_leaves_shared_and_landmark_parts_bit_identical(tmp_path, one_thread):
    # The paper's stage 2: the shared stages "kept locked".
    config = with_epochs(tiny_config(view_stage_trains_shared=False), 1, 2)
    trainer = _trainer(config, tmp_path)
    trainer.run_stage(LANDMARKS)
    model = trainer.model
    frozen = model.shared_modules() + model.landmark_modules()
    before = _snapshot(frozen)  # parameters and BatchNorm running statistics
    classifier_before = [p.detach().clone() for p in model.classifier_parameters()]

    trainer.progress.stage, trainer.progress.epoch = VIEWS, 0
    trainer.run_stage(VIEWS)

    for old, new in zip(before, _snapshot(frozen), strict=True):
        for key in old:
            assert torch.equal(old[key], new[key]), key
    changed = [
        not torch.equal(a, b)
        for a, b in zip(classifier_before, model.classifier_parameters(), strict=True)
    ]
    assert all(changed)  # every classifier tensor moved
    assert all(not p.requires_grad for m in frozen for p in m.parameters())


def _changed(before: list[dict], after: list[dict]) -> bool:
    pairs = zip(before, after, strict=True)
    return any(not torch.equal(old[k], new[k]) for old, new in pairs for k in old)


def _view_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.inference_mode():
        return model.forward_view(x)


def test_view_stage_can_train_shared_stages_then_the_landmark_path_is_refit(tmp_path, one_thread):
    config = with_epochs(tiny_config(view_stage_trains_shared=True), 1, 1, 2)
    trainer = _trainer(config, tmp_path)
    assert trainer.stages == (LANDMARKS, VIEWS, REFIT)
    model = trainer.model
    x = synthetic_data(config, 11, 1).train[2]["image"][None]

    trainer.run_stage(LANDMARKS)
    shared, landmark_path = _snapshot(model.shared_modules()), _snapshot(model.landmark_modules())
    trainer.progress.stage, trainer.progress.epoch = VIEWS, 0
    trainer.run_stage(VIEWS)
    assert _changed(shared, _snapshot(model.shared_modules()))  # they learnt the views
    for old, new in zip(landmark_path, _snapshot(model.landmark_modules()), strict=True):
        assert all(torch.equal(old[k], new[k]) for k in old)  # the landmark path waited
    views_before = _view_logits(model, x)
    shared, landmark_path = _snapshot(model.shared_modules()), _snapshot(model.landmark_modules())

    trainer.discriminator.model[0].weight.data.fill_(0.5)  # as if stage 1 had trained it
    trainer.progress.stage, trainer.progress.epoch = REFIT, 0
    trainer.run_stage(REFIT)
    assert trainer.discriminator.model[0].weight.abs().max() < 0.5  # a new PatchGAN
    for old, new in zip(shared, _snapshot(model.shared_modules()), strict=True):
        assert all(torch.equal(old[k], new[k]) for k in old)  # locked, BatchNorm statistics too
    assert _changed(landmark_path, _snapshot(model.landmark_modules()))
    assert torch.equal(views_before, _view_logits(model, x))  # one shot serves both tasks
    assert [r["stage"] for r in read_metrics(tmp_path)] == [LANDMARKS, VIEWS, REFIT, REFIT]
    assert set(read_metrics(tmp_path)[-1]["train"]) >= {"regression", "adversarial", "d_real"}


def _shared_features(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The shared stages' features of ``x`` with the batch's statistics (what the weights
    make of it; a copy, so no running statistic moves)."""
    probe = copy.deepcopy(model).train()
    with torch.inference_mode():
        return probe.forward_shared(x)


def _feature_change(weight: float, tmp_path) -> float:
    """How far one view epoch moves the shared features of 8 images (relative, summed over
    the levels) with ``view_stage_anchor`` = ``weight``, from the same stage-1 weights."""
    config = with_epochs(tiny_config(view_stage_trains_shared=True), 1, 3)
    config = dataclasses.replace(config, view_stage_anchor=weight)
    trainer = _trainer(config, tmp_path / f"w{weight}")
    x = torch.stack([synthetic_data(config, 11, 1).train[i]["image"] for i in range(8)])
    trainer.run_stage(LANDMARKS)
    before = _shared_features(trainer.model, x)
    trainer.progress.stage, trainer.progress.epoch = VIEWS, 0
    trainer.run_stage(VIEWS)
    assert trainer.anchor is None or all(not p.requires_grad for p in trainer.anchor.parameters())
    after = _shared_features(trainer.model, x)
    return sum(float((a - b).pow(2).mean() / b.var()) for a, b in zip(after, before, strict=True))


def test_view_stage_anchor_holds_the_shared_features_the_landmark_path_reads(tmp_path, one_thread):
    free, anchored = _feature_change(0.0, tmp_path), _feature_change(100.0, tmp_path)
    assert free > 0 and anchored < 0.5 * free, (free, anchored)
    records = read_metrics(tmp_path / "w100.0")
    assert all("anchor" in r["train"] for r in records if r["stage"] == VIEWS)
    assert all("anchor" not in r["train"] for r in read_metrics(tmp_path / "w0.0"))
    with pytest.raises(ValueError, match="needs view_stage_trains_shared"):
        tiny_config(view_stage_anchor=1.0)
    with pytest.raises(ValueError, match="view_stage_anchor must be >= 0"):
        tiny_config(view_stage_trains_shared=True, view_stage_anchor=-1.0)


def test_view_step_adds_the_weighted_drift_which_starts_at_zero(one_thread):
    config = tiny_config(view_stage_trains_shared=True, view_stage_anchor=2.0)
    _, _, tools, batch = _one_step_setup(config, VIEWS, anchored=True)
    anchor = tools.network.anchor
    tools.network.train()
    statistics = {k: v.clone() for k, v in anchor.state_dict().items()}
    step = lambda: {k: float(v.detach()) for k, v in view_step(batch, tools).items()}  # noqa: E731
    first = step()
    assert first["anchor"] < 1e-10  # the same weights and batch statistics
    second = step()
    assert second["anchor"] > first["anchor"]
    assert second["loss"] == pytest.approx(second["view"] + 2.0 * second["anchor"], rel=1e-5)
    for key, value in anchor.state_dict().items():  # weights and running statistics
        assert torch.equal(value, statistics[key]), key


def test_a_resumed_view_stage_keeps_the_anchor_it_began_with(tmp_path, one_thread):
    config = with_epochs(tiny_config(view_stage_trains_shared=True), 1, 2)
    config = dataclasses.replace(config, view_stage_anchor=10.0)
    trainer = _trainer(config, tmp_path)
    trainer.run_stage(LANDMARKS)
    began = {k: v.clone() for k, v in trainer.model.shared.state_dict().items()}
    trainer.progress.stage, trainer.progress.epoch = VIEWS, 0
    trainer.config = dataclasses.replace(
        config, stage2=dataclasses.replace(config.stage2, epochs=1)
    )
    trainer.run_stage(VIEWS)  # one epoch, checkpointed
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert payload["progress"]["stage"] == VIEWS and payload["progress"]["epoch"] == 1
    resumed = Trainer(config, tmp_path, synthetic_data(config), init_distributed("cpu"),
                      payload=payload)  # fmt: skip
    assert _changed([began], [resumed.model.shared.state_dict()])  # the trunk moved
    anchor = resumed._view_anchor(VIEWS)
    for key, value in anchor.state_dict().items():
        assert torch.equal(value, began[key]), key


def test_variants_train_only_their_stages(tmp_path, one_thread):
    mgcn = _trainer(with_epochs(tiny_config("mgcn"), 1, 1, 1), tmp_path / "mgcn")
    assert mgcn.stages == (LANDMARKS,) and mgcn.discriminator is None  # no refit without views
    mgcn.run()
    (record,) = read_metrics(tmp_path / "mgcn")
    assert set(record["train"]) == {"loss", "regression"}  # Table 1: L2 only

    stl = _trainer(with_epochs(tiny_config("stl"), 1, 1), tmp_path / "stl")
    assert stl.stages == (VIEWS,)
    before = [p.detach().clone() for p in stl.model.parameters()]
    stl.run()
    assert [r["stage"] for r in read_metrics(tmp_path / "stl")] == [VIEWS]
    # STL trains all its parameters in the view stage (stem included).
    assert not torch.equal(before[0], next(stl.model.parameters()))


def test_existing_run_folder_is_never_overwritten(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(AbdusInputError, match="--resume"):
        train(tmp_path / "no-data", run, preset="tiny")
    assert (run / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    with pytest.raises(AbdusInputError, match="checkpoint"):
        train(tmp_path / "no-data", run, preset="tiny", resume=True)
    (run / "notes.txt").unlink()
    (run / "cache").mkdir()  # what a start that failed on its data leaves: may be reused
    with pytest.raises(AbdusInputError, match="manifest"):
        train(tmp_path / "no-data", run, preset="tiny", device="cpu")


def test_empty_training_split_is_a_clear_error(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    manifest = {"format": "abdus-manifest", "version": 1, "name": "empty", "images": []}
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AbdusInputError, match="no training images"):
        train(data, tmp_path / "run", preset="tiny", device="cpu")


def _record(i: int, view: str, landmarks: dict) -> ImageRecord:
    return ImageRecord(f"im{i}", f"im{i}.png", f"p{i}", Read(view, landmarks))


def test_landmark_coverage_rules():
    kidney = _record(0, "kidney_right_long", {"kl_la_1": (1.0, 2.0), "kl_la_2": (5.0, 6.0)})
    other = _record(1, "others", {})
    stages = (LANDMARKS, VIEWS)
    with pytest.raises(AbdusInputError, match="no training image has landmarks"):
        check_landmark_coverage([other], tiny_config("mgcn_r"), stages, "m.json")
    check_landmark_coverage([other], tiny_config("stl"), (VIEWS,), "m.json")  # views only
    with pytest.raises(AbdusInputError, match="kidney_trans, liver_long"):
        check_landmark_coverage([kidney, other], tiny_config("sfcn"), (LANDMARKS,), "m.json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_landmark_coverage([kidney], tiny_config("mgcn"), (LANDMARKS,), "m.json")
    assert any("spleen_trans" in str(w.message) for w in caught)


def test_run_log_writes_nan_as_null_and_rewrites_history(tmp_path):
    old = {"stage": LANDMARKS, "epoch": 1, "global_step": 3, "train": {"loss": 2.0}, "test": None}
    log = RunLog(tmp_path, enabled=True, history=[old, {**old, "epoch": 2, "bad": float("nan")}])
    log.epoch({**old, "epoch": 3, "test": {"landmark_error_mm": float("nan")}})
    log.close()
    records = read_metrics(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[1]["bad"] is None and records[2]["test"]["landmark_error_mm"] is None


def test_each_stage_ends_on_its_best_validation_epoch_and_stops_when_patience_runs_out(
    tmp_path, one_thread, monkeypatch
):
    config = with_epochs(tiny_config(), 6, 3)
    stage1 = dataclasses.replace(config.stage1, patience=2)
    trainer = _trainer(dataclasses.replace(config, stage1=stage1), tmp_path)
    scores = {
        LANDMARKS: iter([5.0, 3.0, 4.0, 6.0, 1.0, 1.0]),  # best: epoch 2; patience ends epoch 4
        VIEWS: iter([0.2, 0.6, 0.5]),  # best: epoch 2
    }
    names = {LANDMARKS: "landmark_error_mm", VIEWS: "view_accuracy"}
    monkeypatch.setattr(trainer, "_validate", lambda stage, *_: {names[stage]: next(scores[stage])})
    snapshots: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
    end_of_epoch = trainer._end_of_epoch

    def remember(record, tools):
        state = trainer.model.state_dict()
        snapshots[(record["stage"], record["epoch"])] = {k: v.clone() for k, v in state.items()}
        end_of_epoch(record, tools)

    monkeypatch.setattr(trainer, "_end_of_epoch", remember)
    trainer.run()
    trainer.finish()

    records = read_metrics(tmp_path)
    assert [(r["stage"], r["epoch"], r["best"]) for r in records] == [
        (LANDMARKS, 1, True), (LANDMARKS, 2, True), (LANDMARKS, 3, False), (LANDMARKS, 4, False),
        (VIEWS, 1, True), (VIEWS, 2, True), (VIEWS, 3, False),
    ]  # fmt: skip
    assert records[3]["early_stop"] is True
    model, *_ = load_model_from_run(tmp_path)
    final = model.state_dict()
    best_landmarks, best_views = snapshots[(LANDMARKS, 2)], snapshots[(VIEWS, 2)]
    for module in trainer.model.landmark_modules() + trainer.model.shared_modules():
        for key in (k for k in final if k.startswith(_prefix(trainer.model, module))):
            assert torch.equal(final[key], best_landmarks[key]), key
    for module in trainer.model.classifier_modules():
        for key in (k for k in final if k.startswith(_prefix(trainer.model, module))):
            assert torch.equal(final[key], best_views[key]), key
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["selection"] == {
        LANDMARKS: {"epoch": 2, "landmark_error_mm": 3.0},
        VIEWS: {"epoch": 2, "view_accuracy": 0.6},
    }


def _prefix(model: torch.nn.Module, module: torch.nn.Module) -> str:
    return next(f"{name}." for name, m in model.named_children() if m is module)


def test_view_path_can_start_from_the_landmark_stages(tmp_path, one_thread):
    config = dataclasses.replace(with_epochs(tiny_config(), 1, 0), view_init="landmark")
    trainer = _trainer(config, tmp_path)
    trainer.run()
    trainer.progress.stage = VIEWS
    init_view_path(trainer.model, config.view_init)
    landmark, view = trainer.model.landmark_stages, trainer.model.view_stages
    for (name, a), (_, b) in zip(
        landmark.state_dict().items(), view.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    fresh = _trainer(with_epochs(tiny_config(), 0, 0), tmp_path / "fresh").model
    init_view_path(fresh, "scratch")
    view_weight = fresh.view_stages.state_dict()["layer3.0.conv1.weight"]
    assert not torch.equal(view_weight, fresh.landmark_stages.state_dict()["layer3.0.conv1.weight"])


def test_learning_rate_schedule_warms_up_then_follows_a_cosine():
    schedule = LearningRateSchedule(base_lr=1.0, total_steps=10, warmup_steps=2, kind="cosine")
    rates = [schedule.at(step) for step in range(10)]
    assert rates[:3] == [0.5, 1.0, 1.0]  # warm-up, then the cosine from its top
    assert all(a > b for a, b in itertools.pairwise(rates[2:]))
    assert rates[-1] == pytest.approx(0.5 * (1 + np.cos(np.pi * 7 / 8)))
    assert schedule.at(10) == pytest.approx(0.0)
    flat = LearningRateSchedule(base_lr=0.1, total_steps=10, warmup_steps=0)
    assert {flat.at(s) for s in range(10)} == {0.1}


def _one_step_setup(config, stage: str, anchored: bool = False):
    """(model, discriminator, step tools of ``stage``, one batch of 8) for ``config``, seed 0;
    ``anchored``: the view network gets a frozen copy of the shared stages (``view_anchor``)."""
    torch.manual_seed(0)
    model, discriminator = build_networks(config)
    anchor = view_anchor(model) if anchored else None
    model.train()
    tools = build_step_tools(
        config, stage, model, discriminator if stage != VIEWS else None, init_distributed("cpu"),
        scaler=make_grad_scaler(torch.device("cpu"), None), amp_dtype=None, anchor=anchor,
    )  # fmt: skip
    batch = next(iter(torch.utils.data.DataLoader(synthetic_data(config, 8, 1).train, 8)))
    return model, discriminator, tools, batch


def _view_step_grads(view_weight: float) -> tuple[dict[str, float], list[torch.Tensor]]:
    config = tiny_config()
    config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, view=view_weight))
    model, _, tools, batch = _one_step_setup(config, VIEWS)
    parts = {k: float(v.detach()) for k, v in view_step(batch, tools).items()}
    return parts, [p.grad.clone() for p in model.classifier_parameters()]


def test_view_weight_multiplies_the_view_loss_and_its_gradient(one_thread):
    full, full_grads = _view_step_grads(1.0)
    half, half_grads = _view_step_grads(0.5)
    assert full["loss"] == full["view"] and half["view"] == full["view"]  # same batch, weights
    assert half["loss"] == pytest.approx(0.5 * half["view"])
    for a, b in zip(half_grads, full_grads, strict=True):
        torch.testing.assert_close(a, 0.5 * b)


def test_discriminator_learns_on_every_kth_step_and_the_network_on_every_step(one_thread):
    config = dataclasses.replace(tiny_config(), discriminator_every=2)
    model, discriminator, tools, batch = _one_step_setup(config, LANDMARKS)
    weights = lambda m: [{k: v.clone() for k, v in m.named_parameters()}]  # noqa: E731
    moved = []  # (D's weights changed, the network's changed); D's BatchNorm runs every step
    for step in range(4):
        tools.stage_step = step
        d_before, net_before = weights(discriminator), weights(model)
        parts = landmark_step(batch, tools)
        moved.append(
            (_changed(d_before, weights(discriminator)), _changed(net_before, weights(model)))
        )
        assert {"d_real", "d_fake", "adversarial"} <= set(parts)  # D's last losses in between
    assert moved == [(True, True), (False, True), (True, True), (False, True)]
    with pytest.raises(ValueError, match="discriminator_every must be >= 1"):
        dataclasses.replace(config, discriminator_every=0)


def test_landmark_steps_use_the_runs_per_landmark_weights(tmp_path, one_thread):
    config = tiny_config()
    weights = torch.zeros(14)  # every landmark weighed 0: nothing left to regress
    data = dataclasses.replace(synthetic_data(config), landmark_weights=weights)
    trainer = Trainer(config, tmp_path / "run", data, init_distributed("cpu"))
    assert trainer._tools(LANDMARKS).channel_weight is weights
    assert trainer._tools(REFIT).channel_weight is weights
    _, _, tools, batch = _one_step_setup(config, LANDMARKS)
    plain = landmark_step(batch, tools)
    assert float(plain["regression"].detach()) > 0 and float(plain["location"].detach()) > 0
    tools.channel_weight = weights
    zeroed = landmark_step(batch, tools)
    assert float(zeroed["regression"].detach()) == 0 and float(zeroed["location"].detach()) == 0


def test_train_hands_pbt_to_the_baseline(tmp_path, monkeypatch):
    calls = []

    def fake_train_pbt(*args, **kwargs):
        inspect.signature(train_pbt).bind(*args, **kwargs)  # a call the real one accepts
        calls.append(kwargs)
        return tmp_path / "run"

    monkeypatch.setattr(trainer_module, "train_pbt", fake_train_pbt)
    assert train("data", tmp_path / "run", model="pbt", preset="tiny") == tmp_path / "run"
    assert calls.pop() == {"preset": "tiny"}  # as `abdus train --model pbt` always did
    train("data", tmp_path / "run", model="pbt", preset="tiny", seed=4)
    assert calls[-1]["seed"] == 4 and calls[-1]["config"].split_seed == 4  # seed: the split
    with pytest.raises(AbdusInputError, match="does not support a YAML config, resume"):
        train("data", tmp_path / "run", model="pbt", config="c.yaml", resume=True)
    with pytest.raises(AbdusInputError, match="valid presets"):
        train("data", tmp_path / "run", model="pbt", preset="huge")
    with pytest.raises(AbdusInputError, match=r"valid models: mgcn_r, .*, pbt"):
        train("data", tmp_path / "run", model="unet")
