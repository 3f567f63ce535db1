"""Shared fixtures of the training tests; puts this folder on sys.path for its helper modules."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from abdus.phantom.generate import generate_cohort
from abdus.training.runtime import deterministic_mode_restored

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


@pytest.fixture
def one_thread():
    """Run a test with one intra-op thread (as the worker subprocesses do), then restore.

    One thread makes CPU results reproducible between this process and the workers, and on
    small tensors it is faster than two spinning OpenMP threads.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """A small generated cohort (6 patients x 13 images, PNG) shared by the tests."""
    root = tmp_path_factory.mktemp("cohort")
    generate_cohort(root, patients=6, seed=1, image_format="png", progress=False)
    return root


@pytest.fixture(scope="session")
def cohort_cache(tmp_path_factory) -> Path:
    """One preprocessed-sample cache for every tiny run on ``cohort`` (config ``cache_dir``)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _restore_torch_determinism():
    """Trainers switch on deterministic algorithms process-wide; give other tests theirs back."""
    with deterministic_mode_restored():
        yield
