"""Patient-level train/test split (paper, section 2.1: "separated on the patient level into
training and testing sets by an 80%/20% split ... Any patients with data included in the
training set were excluded from the testing set").

The rule (docs/data-format.md, "Train/test split"): every patient gets the key
``sha256(f"{seed}:{patient_id}")``; patients sorted by that key, the first
``n_test = floor(test_fraction * n_patients + 0.5)`` go to test (at least 1 and at most
``n_patients - 1`` when 0 < test_fraction < 1 and there are at least 2 patients). The split
depends only on the set of patient ids and the seed: not on record order, not on Python's hash
seed, not on the platform. Raising ``test_fraction`` only moves patients from train to test.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

from abdus.io.manifest import ImageRecord, Manifest

SPLITS = ("train", "test", "all")


def _patient_key(seed: int, patient_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{patient_id}".encode()).digest()


def count_test_patients(n_patients: int, test_fraction: float) -> int:
    """How many of ``n_patients`` go to test (round half up; 1..n-1 when 0 < fraction < 1)."""
    if not 0.0 <= test_fraction <= 1.0:  # also refuses NaN
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    n_test = math.floor(test_fraction * n_patients + 0.5)
    if 0.0 < test_fraction < 1.0 and n_patients >= 2:
        n_test = min(max(n_test, 1), n_patients - 1)
    return n_test


def choose_test_patients(
    patient_ids: Iterable[str], *, test_fraction: float = 0.2, seed: int = 0
) -> set[str]:
    """The patient ids that go to test (see the module docstring for the rule)."""
    patients = sorted(set(patient_ids), key=lambda pid: _patient_key(seed, pid))
    return set(patients[: count_test_patients(len(patients), test_fraction)])


def split_by_patient(
    records: Iterable[ImageRecord], *, test_fraction: float = 0.2, seed: int = 0
) -> dict[str, list[ImageRecord]]:
    """``{"train": [...], "test": [...]}``: no patient on both sides; records keep their order."""
    records = list(records)
    chosen = choose_test_patients(
        (r.patient_id for r in records), test_fraction=test_fraction, seed=seed
    )
    return {
        "train": [r for r in records if r.patient_id not in chosen],
        "test": [r for r in records if r.patient_id in chosen],
    }


def split_records(
    manifest: Manifest, split: str, *, test_fraction: float = 0.2, seed: int = 0
) -> list[ImageRecord]:
    """The records of ``split`` ("train", "test" or "all") of a manifest."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if split == "all":
        return list(manifest.records)
    return split_by_patient(manifest.records, test_fraction=test_fraction, seed=seed)[split]
