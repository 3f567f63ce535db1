"""Fixtures of the PBT tests; puts this folder on sys.path for ``pbt_cohort``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pbt_cohort import write_cohort

from abdus.io.manifest import Manifest


@pytest.fixture(scope="session")
def organ_cohort(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    """30 patients x (long + transverse) images of ``pbt_cohort``."""
    return write_cohort(tmp_path_factory.mktemp("pbt_cohort"), 30, seed=11)
