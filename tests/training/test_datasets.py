"""How the training data's sample cache is built."""

from __future__ import annotations

import dataclasses

from training_synthetic import tiny_config

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
