"""How the training data's sample cache is built; the landmark losses' per-landmark weights."""

from __future__ import annotations

import dataclasses

import pytest
from training_synthetic import tiny_config

from abdus.io.manifest import ImageRecord, Read
from abdus.taxonomy import LANDMARK_INDEX
from abdus.training import datasets


def test_cache_is_built_in_one_process_per_cpu_for_large_sets_only(monkeypatch):
    config = tiny_config()
    monkeypatch.setattr(datasets.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert datasets.cache_build_workers(config, 3120) == 2  # the demo's cohort on 2 CPUs
    assert datasets.cache_build_workers(config, 40) == 0  # a pool is not worth its start
    assert datasets.cache_build_workers(dataclasses.replace(config, num_workers=3), 40) == 3
    monkeypatch.setattr(datasets.os, "sched_getaffinity", lambda pid: set(range(64)))
    assert datasets.cache_build_workers(config, 3120) == 8  # at most 8
    monkeypatch.setattr(datasets.os, "sched_getaffinity", lambda pid: {0})
    assert datasets.cache_build_workers(config, 3120) == 0  # one CPU: this process


def _read(view: str, *names: str) -> ImageRecord:
    return ImageRecord(f"im-{view}", "x.dcm", "p0", Read(view, {n: (1.0, 2.0) for n in names}))


def test_landmark_balance_weighs_rarer_landmarks_up_and_keeps_the_loss_scale():
    kidney = [_read("kidney_right_long", "kl_la_1", "kl_la_2")] * 4  # 4 images of each
    liver = [_read("liver_right_long", "ll_la_1", "ll_la_2")] * 2  # 2 images of each
    other = [_read("others")]
    records = kidney + liver + other
    assert datasets.landmark_channel_weights(records, 0.0) is None  # the paper: all alike
    w = datasets.landmark_channel_weights(records, 1.0)
    k, li = LANDMARK_INDEX["kl_la_1"], LANDMARK_INDEX["ll_la_1"]
    assert float(w[li]) == pytest.approx(2 * float(w[k]))  # half the images, twice the weight
    assert float(4 * w[k]) == pytest.approx(float(2 * w[li]))  # equal weight per epoch
    per_image = [float(w[k])] * 4 + [float(w[li])] * 2
    assert sum(per_image) / len(per_image) == pytest.approx(1.0)  # the loss keeps its scale
    assert float(w[LANDMARK_INDEX["st_la_1"]]) == 0.0  # no image has it
    half = datasets.landmark_channel_weights(records, 0.5)
    assert float(half[li] / half[k]) == pytest.approx(2**0.5)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="landmark_balance must be in"):
            dataclasses.replace(tiny_config(), landmark_balance=bad)
