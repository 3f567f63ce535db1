"""`train` with the tiny preset and a YAML override on a generated cohort: both stages learn."""

from __future__ import annotations

import pytest
import torch
import yaml

from abdus.errors import AbdusInputError
from abdus.training.checkpoint import load_model_from_run
from abdus.training.runlog import read_metrics
from abdus.training.stages import LANDMARKS, VIEWS
from abdus.training.trainer import train


def test_tiny_preset_learns_on_a_generated_cohort(tmp_path, cohort, cohort_cache, one_thread):
    config = tmp_path / "override.yaml"
    config.write_text(
        f"stage1: {{epochs: 2}}\nstage2:\n  epochs: 5\ncache_dir: {cohort_cache}\nseed: 3\n"
    )
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    run = train(cohort, tmp_path / "run", model="mgcn_r", preset="tiny", config=config)
    assert torch.are_deterministic_algorithms_enabled() == deterministic_before  # restored

    records = read_metrics(run)
    marks = [r["train"] for r in records if r["stage"] == LANDMARKS]
    views = [r for r in records if r["stage"] == VIEWS]
    assert len(marks) == 2 and len(views) == 5
    assert marks[-1]["loss"] < marks[0]["loss"]
    assert marks[-1]["regression"] < marks[0]["regression"]
    assert views[-1]["train"]["view"] < views[0]["train"]["view"]
    assert all(0 <= r["val"]["view_accuracy"] <= 1 for r in views)

    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["stage2"]["epochs"] == 5 and saved["seed"] == 3  # the overrides
    assert saved["preprocess"] == {"spacing_mm": 4.0, "size": [64, 64]}  # the tiny preset

    model, resolved, codec = load_model_from_run(run)
    assert resolved.seed == 3 and codec.size == (64, 64)
    with torch.inference_mode():
        out = model(torch.rand(1, 1, 64, 64))
    assert out["heatmaps"].shape == (1, 14, 64, 64) and out["logits"].shape == (1, 11)


def test_unknown_yaml_key_names_the_file_and_the_valid_keys(tmp_path, cohort):
    config = tmp_path / "typo.yaml"
    config.write_text("stage1:\n  epoch: 3\n")
    with pytest.raises(AbdusInputError, match=r"typo\.yaml.*stage1\.epoch.*epochs, batch_size"):
        train(cohort, tmp_path / "run", preset="tiny", config=config)
    assert not (tmp_path / "run").exists()  # nothing written for a bad config


def test_train_trains_the_pbt_baseline_from_python(tmp_path, cohort):
    run = train(cohort, tmp_path / "pbt", model="pbt", preset="tiny")
    assert (run / "model.pbt").is_file() and (run / "config.json").is_file()
