"""Patient-level train / validation / test split (paper, section 2.1: "separated on the patient
level into training and testing sets by an 80%/20% split ... Any patients with data included in
the training set were excluded from the testing set").

The paper has no validation split; abdus takes one out of the training patients so that model
selection (best epoch, early stopping, tuning) never sees the test patients.

The rule (docs/data-format.md, "Train / validation / test split"): every patient gets the key
``sha256(f"{seed}:{patient_id}")``; patients sorted by that key, the first
``n_test = floor(test_fraction * n_patients + 0.5)`` go to test (at least 1 and at most
``n_patients - 1`` when 0 < test_fraction < 1 and there are at least 2 patients), the next
``n_val = floor(val_fraction * n_patients + 0.5)`` to validation (at least 1 when
val_fraction > 0, as long as one patient stays for training), the rest to train. The split
depends only on the set of patient ids, the fractions and the seed: not on record order, not
on Python's hash seed, not on the platform. The test side does not depend on ``val_fraction``,
so runs with and without a validation split are tested on the same patients, and raising
``test_fraction`` only moves patients from train (or validation) to test.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

from abdus.io.manifest import ImageRecord, Manifest

SPLITS = ("train", "val", "test", "all")


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


def count_val_patients(n_patients: int, n_test: int, val_fraction: float) -> int:
    """How many of ``n_patients`` go to validation once ``n_test`` are in test (round half up;
    at least 1 when val_fraction > 0, but never the last training patient)."""
    if not 0.0 <= val_fraction < 1.0:  # also refuses NaN
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = math.floor(val_fraction * n_patients + 0.5)
    if val_fraction > 0.0:
        n_val = max(n_val, 1)
    return max(min(n_val, n_patients - n_test - 1), 0)


def _ranked(patient_ids: Iterable[str], seed: int) -> list[str]:
    return sorted(set(patient_ids), key=lambda pid: _patient_key(seed, pid))


def choose_test_patients(
    patient_ids: Iterable[str], *, test_fraction: float = 0.2, seed: int = 0
) -> set[str]:
    """The patient ids that go to test (see the module docstring for the rule)."""
    patients = _ranked(patient_ids, seed)
    return set(patients[: count_test_patients(len(patients), test_fraction)])


def assign_patients(
    patient_ids: Iterable[str],
    *,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, str]:
    """patient id -> "train", "val" or "test" (see the module docstring for the rule)."""
    patients = _ranked(patient_ids, seed)
    n_test = count_test_patients(len(patients), test_fraction)
    n_val = count_val_patients(len(patients), n_test, val_fraction)
    sides = ["test"] * n_test + ["val"] * n_val
    sides += ["train"] * (len(patients) - len(sides))
    return dict(zip(patients, sides, strict=True))


def split_by_patient(
    records: Iterable[ImageRecord],
    *,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, list[ImageRecord]]:
    """``{"train": [...], "val": [...], "test": [...]}``: no patient on two sides; records keep
    their order ("val" is empty when ``val_fraction`` is 0)."""
    records = list(records)
    side = assign_patients(
        (r.patient_id for r in records),
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
    )
    return {name: [r for r in records if side[r.patient_id] == name] for name in SPLITS[:3]}


def split_records(
    manifest: Manifest,
    split: str,
    *,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> list[ImageRecord]:
    """The records of ``split`` ("train", "val", "test" or "all") of a manifest."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if split == "all":
        return list(manifest.records)
    return split_by_patient(
        manifest.records, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed
    )[split]
