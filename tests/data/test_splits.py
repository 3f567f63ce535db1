"""Patient-level split (abdus.data.splits)."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from abdus.data.splits import (
    choose_test_patients,
    count_test_patients,
    split_by_patient,
    split_records,
)
from abdus.io.manifest import ImageRecord, Manifest, Read


def _records(n_patients: int, per_patient: int = 3) -> list[ImageRecord]:
    return [
        ImageRecord(f"p{p:03d}_{k}", f"p{p:03d}/{k}.png", f"p{p:03d}", Read("others"))
        for p in range(n_patients)
        for k in range(per_patient)
    ]


def _patients(records: list[ImageRecord]) -> set[str]:
    return {r.patient_id for r in records}


def test_no_patient_on_both_sides_and_nothing_lost() -> None:
    records = _records(50)
    split = split_by_patient(records)
    assert _patients(split["train"]).isdisjoint(_patients(split["test"]))
    assert sorted(r.id for r in split["train"] + split["test"]) == sorted(r.id for r in records)
    assert len(_patients(split["test"])) == 10  # 20% of 50 patients
    assert [r.id for r in split["test"]] == [r.id for r in records if r in split["test"]]


def test_same_seed_same_split_other_seed_other_split() -> None:
    records = _records(40)
    first = split_by_patient(records, seed=3)
    assert split_by_patient(records, seed=3) == first
    assert _patients(split_by_patient(records, seed=4)["test"]) != _patients(first["test"])


def test_independent_of_record_order() -> None:
    records = _records(30)
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    for seed in range(3):
        a, b = split_by_patient(records, seed=seed), split_by_patient(shuffled, seed=seed)
        assert {r.id for r in a["test"]} == {r.id for r in b["test"]}


def test_follows_the_documented_sha256_rule() -> None:
    ids = [f"patient-{k}" for k in range(20)]
    ranked = sorted(ids, key=lambda pid: hashlib.sha256(f"7:{pid}".encode()).hexdigest())
    assert choose_test_patients(ids, test_fraction=0.2, seed=7) == set(ranked[:4])


def test_independent_of_python_hash_seed(tmp_path: Path) -> None:
    code = (
        "from abdus.data.splits import choose_test_patients as c;"
        "print(sorted(c([f'p{k}' for k in range(25)], seed=1)))"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1
    assert outputs.pop().strip() == str(
        sorted(choose_test_patients([f"p{k}" for k in range(25)], seed=1))
    )


@pytest.mark.parametrize(
    ("n_patients", "fraction", "expected"),
    [
        (50, 0.2, 10),
        (10, 0.25, 3),  # 2.5 rounds half up
        (7, 0.2, 1),
        (3, 0.05, 1),  # at least one test patient
        (2, 0.9, 1),  # at least one training patient
        (1, 0.2, 0),
        (0, 0.2, 0),
        (10, 0.0, 0),
        (10, 1.0, 10),
    ],
)
def test_test_patient_count(n_patients: int, fraction: float, expected: int) -> None:
    assert count_test_patients(n_patients, fraction) == expected
    chosen = choose_test_patients([f"p{k}" for k in range(n_patients)], test_fraction=fraction)
    assert len(chosen) == expected


def test_larger_fraction_only_adds_test_patients() -> None:
    ids = [f"p{k}" for k in range(40)]
    small = choose_test_patients(ids, test_fraction=0.2, seed=5)
    large = choose_test_patients(ids, test_fraction=0.4, seed=5)
    assert small < large


def test_bad_fraction() -> None:
    for fraction in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="test_fraction"):
            split_by_patient(_records(5), test_fraction=fraction)


def test_split_records() -> None:
    manifest = Manifest(Path("."), _records(10, per_patient=2))
    train = split_records(manifest, "train", seed=2)
    test = split_records(manifest, "test", seed=2)
    assert len(train) == 16 and len(test) == 4
    assert split_records(manifest, "all") == manifest.records
    assert split_by_patient(manifest.records, seed=2) == {"train": train, "val": [], "test": test}
    val = split_records(manifest, "val", val_fraction=0.2, seed=2)
    assert len(val) == 4 and split_records(manifest, "test", val_fraction=0.2, seed=2) == test
    with pytest.raises(ValueError, match="valid splits: train, val, test, all"):
        split_records(manifest, "validation")


def test_validation_patients_come_from_the_training_side() -> None:
    records = _records(50)
    plain = split_by_patient(records, seed=3)
    three = split_by_patient(records, val_fraction=0.1, seed=3)
    sides = [_patients(three[name]) for name in ("train", "val", "test")]
    assert sum(len(side) for side in sides) == 50 and len(set().union(*sides)) == 50
    assert len(sides[1]) == 5  # 10% of 50 patients
    assert sides[2] == _patients(plain["test"])  # the test side ignores val_fraction
    assert sides[0] | sides[1] == _patients(plain["train"])
    # Documented rule: after the test patients, the next n_val of the sha256 ranking.
    ranked = sorted(_patients(records), key=lambda p: hashlib.sha256(f"3:{p}".encode()).digest())
    assert sides[1] == set(ranked[10:15])


@pytest.mark.parametrize(
    ("n_patients", "val_fraction", "expected"),
    [(50, 0.1, 5), (10, 0.01, 1), (3, 0.5, 1), (2, 0.5, 0), (10, 0.0, 0)],
)
def test_validation_patient_count(n_patients: int, val_fraction: float, expected: int) -> None:
    split = split_by_patient(_records(n_patients), val_fraction=val_fraction)
    assert len(_patients(split["val"])) == expected
    assert split["train"], "at least one training patient stays"


def test_bad_validation_fraction() -> None:
    for fraction in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="val_fraction"):
            split_by_patient(_records(5), val_fraction=fraction)
