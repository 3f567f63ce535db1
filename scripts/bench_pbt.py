"""Benchmark the PBT baseline (Table 1's classical row): train time, detection time, accuracy.

    .venv/bin/python scripts/bench_pbt.py --out /tmp/bench_pbt --patients 60 --preset demo
    .venv/bin/python scripts/bench_pbt.py --data DATASET --out /tmp/bench_pbt

Without ``--data`` it generates a synthetic PNG cohort (``abdus.phantom.generate``) into
``OUT/data`` (reused when it is already there). It trains on the patient-level training split,
then on every held-out image whose reference view has a landmark task it times ``detect`` (read
and preprocessing of the file excluded from "detect ms"; "end-to-end ms" includes them) and
scores, in mm:

* radial error per landmark for PBT, for a uniformly random position inside the image, and for
  the mean training position (model px, mapped to each image's source px);
* the absolute error of each measurement (Table 1's metric) for PBT, beside the paper's row.

Results go to ``OUT/bench_pbt.json`` and a table on stdout. Run on an otherwise idle machine:
timings on a shared one are not comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from abdus.baselines.pbt import load_pbt, pbt_preset, train_pbt
from abdus.data.dataset import read_record_image
from abdus.data.preprocess import preprocess_image
from abdus.data.splits import split_by_patient
from abdus.evaluation.metrics import measurement_summary, radial_summary
from abdus.io.atomic import atomic_write_json
from abdus.io.manifest import ImageRecord, Manifest, load_manifest
from abdus.measurements import distance_mm, measurements_from_landmarks
from abdus.taxonomy import PAPER_TABLE1_MM, landmarks_of_view


def _dataset(args: argparse.Namespace) -> Path:
    if args.data is not None:
        return Path(args.data)
    data = Path(args.out) / "data"
    if not (data / "manifest.json").is_file():
        from abdus.phantom.generate import generate_cohort

        start = time.perf_counter()
        generate_cohort(data, patients=args.patients, seed=args.seed, image_format="png", jobs=2)
        print(f"generated {args.patients} patients in {time.perf_counter() - start:.1f} s")
    return data


def _score_record(model: Any, manifest: Manifest, record: ImageRecord, rng: Any) -> dict:
    """Timings and errors (mm) of PBT and the two naive baselines on one record."""
    start = time.perf_counter()
    image = read_record_image(manifest, record)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    predicted = model.detect(image, record.view)
    detect_s = time.perf_counter() - start
    pre = preprocess_image(image, model.config.preprocess)
    spacing = image.spacing_mm
    H, W = image.shape
    row: dict[str, Any] = {"read_s": read_s, "detect_s": detect_s, "radial": {}, "pairs": {}}
    for name in landmarks_of_view(record.view):
        if name not in record.reference.landmarks or spacing is None:
            continue
        truth = np.asarray(record.reference.landmarks[name])
        mean_px = model.training["mean_position_px"].get(name)
        guesses = {
            "pbt": np.asarray(predicted[name]),
            "random": rng.uniform([-0.5, -0.5], [W - 0.5, H - 0.5]),
            "mean_position": pre.transform.to_source(np.asarray(mean_px)),
        }
        row["radial"][name] = {k: float(distance_mm(g, truth, spacing)) for k, g in guesses.items()}
    reference = measurements_from_landmarks(record.reference.landmarks, spacing)
    for code, value in measurements_from_landmarks(predicted, spacing).items():
        if code in reference:
            row["pairs"][code] = (value, reference[code])
    return row


def _summaries(rows: list[dict]) -> dict[str, Any]:
    radial: dict[str, dict[str, list[float]]] = {"pbt": {}, "random": {}, "mean_position": {}}
    pairs: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        for name, errors in row["radial"].items():
            for method, error in errors.items():
                radial[method].setdefault(name, []).append(error)
        for code, pair in row["pairs"].items():
            pairs.setdefault(code, []).append(pair)
    return {
        "radial_mm": {method: radial_summary(errs) for method, errs in radial.items()},
        "mean_radial_mm": {
            method: float(np.mean([e for errs in by.values() for e in errs]))
            for method, by in radial.items()
        },
        "measurements_mm": measurement_summary(pairs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder (run, data, results)")
    parser.add_argument("--data", default=None, help="dataset folder (default: generate one)")
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="demo")
    args = parser.parse_args(argv)
    out = Path(args.out)
    data = _dataset(args)
    start = time.perf_counter()
    run = train_pbt(data, out / "run", preset=args.preset, seed=args.seed)
    train_s = time.perf_counter() - start
    model = load_pbt(run)
    manifest = load_manifest(data)
    test = split_by_patient(
        manifest.records, test_fraction=model.config.test_fraction, seed=model.config.split_seed
    )["test"]
    test = [r for r in test if landmarks_of_view(r.view) and r.reference.landmarks]
    rng = np.random.default_rng(args.seed)
    rows = [_score_record(model, manifest, r, rng) for r in test]
    detect_ms = [1000 * r["detect_s"] for r in rows]
    result = {
        "preset": args.preset,
        "config": pbt_preset(args.preset).to_dict(),
        "dataset": str(data),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "train_seconds": round(train_s, 2),
        "training": model.training,
        "test_images": len(rows),
        "detect_ms_per_image": {
            "mean": float(np.mean(detect_ms)),
            "median": float(np.median(detect_ms)),
        },
        "end_to_end_ms_per_image": float(
            np.mean([1000 * (r["read_s"] + r["detect_s"]) for r in rows])
        ),
        **_summaries(rows),
        "paper_pbt_mae_mm": PAPER_TABLE1_MM["PBT"],
    }
    atomic_write_json(out / "bench_pbt.json", result)
    _print(result)
    return 0


def _print(result: dict[str, Any]) -> None:
    print(f"train: {result['train_seconds']} s on {result['training']['train_images']} images")
    print(
        f"detect: {result['detect_ms_per_image']['mean']:.1f} ms/image mean "
        f"({result['end_to_end_ms_per_image']:.1f} ms with file read), "
        f"{result['test_images']} test images"
    )
    print(
        "mean radial error (mm):",
        json.dumps({k: round(v, 2) for k, v in result["mean_radial_mm"].items()}),
    )
    print(f"{'measurement':<12}{'n':>4}{'PBT MAE':>10}{'paper PBT':>11}")
    for code, row in result["measurements_mm"].items():
        paper = result["paper_pbt_mae_mm"][code]
        print(f"{code:<12}{row['n']:>4}{row['mae_mm']:>10.2f}{paper:>11.2f}")


if __name__ == "__main__":
    sys.exit(main())
