"""The demo on several seeds, and each seed's model on a fresh cohort it never saw.

    .venv/bin/python scripts/demo_stability.py --out /tmp/stability [--seeds 0 1 2]
        [--fresh-patients 40 --fresh-seed 1000] [--patients N]

For every seed it runs ``abdus demo --seed S`` into ``OUT/seed-S`` (kept when its summary is
already there: a second call only adds what is missing), then evaluates that seed's model with
``--split all`` on one fresh cohort (``OUT/fresh``, generated once with ``--fresh-seed``, which
no demo uses, and with every image read by reader B). It prints, per seed and on the fresh
cohort, the view accuracy and the seven measurement MAEs beside reader B, the share of landmarks
more than 20 mm from reader A, and the spread (max - min) over the seeds; everything goes to
``OUT/stability.json``. Each demo takes ~10-15 minutes on 2 CPU cores.

Each seed generates its own cohort, so the seeds' test patients differ, and a spread over the
seeds is partly the models' and partly their test patients'. The cohorts share no patient, so
every seed's model is also evaluated on every other seed's test patients (``cross``): on the
same patients the models differ by ``cross_spread["models"]`` (the largest over the test sets
of the spread over the models), and one model on the different test sets by
``cross_spread["test_sets"]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

from abdus.allocator import keep_freed_memory
from abdus.data.splits import split_records
from abdus.demo import DEMO_PATIENTS, DEMO_SECOND_READS, run_demo
from abdus.evaluation.evaluate import evaluate_predictions, evaluate_run, open_run, predict_split
from abdus.io.atomic import atomic_write_json
from abdus.io.manifest import load_manifest
from abdus.phantom.generate import generate_cohort
from abdus.taxonomy import MEASUREMENT_CODES


def figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a metrics dict: model and reader B against reader A."""
    human = metrics.get("human") or {}
    far = metrics.get("landmarks_far_off") or {}
    return {
        "view_accuracy": metrics.get("view_accuracy"),
        "view_accuracy_human": human.get("view_accuracy"),
        "mae_mm": metrics.get("measurement_mae_mm", {}),
        "mae_mm_human": human.get("measurement_mae_mm", {}),
        "n_human": {k: v.get("n") for k, v in (human.get("measurements") or {}).items()},
        "far_off_share": far.get("share"),
        "far_off": f"{far.get('n_far')}/{far.get('n')}",
    }


def row(label: str, f: dict[str, Any]) -> str:
    maes = " ".join(
        f"{f['mae_mm'].get(c, float('nan')):5.2f}/{f['mae_mm_human'].get(c, float('nan')):5.2f}"
        for c in MEASUREMENT_CODES
    )
    acc, human = f["view_accuracy"] or float("nan"), f["view_accuracy_human"] or float("nan")
    far = f["far_off_share"]
    return f"{label:<10} {100 * acc:5.1f}/{100 * human:5.1f}  {maes}  {100 * (far or 0):4.1f}%"


def spread(values: list[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return max(found) - min(found) if found else None


def cross_figures(runs: dict[int, Path], cohorts: dict[int, Path]) -> dict[str, Any]:
    """Every seed's model on every seed's test patients (that seed's own split of its cohort),
    as ``figures``, keyed "MODEL_SEED->TEST_SEED"."""
    opened = {seed: open_run(run) for seed, run in runs.items()}  # (predictor, split, meta)
    tests = {}  # each seed's test patients: (manifest, records), read once
    for seed, data in cohorts.items():
        manifest = load_manifest(data)
        tests[seed] = manifest, split_records(manifest, "test", **opened[seed][1])
    out: dict[str, Any] = {}
    for model_seed, (predictor, _, _) in opened.items():
        for test_seed, (manifest, records) in tests.items():
            metrics = evaluate_predictions(
                predict_split(predictor, manifest, records), classifies=predictor.classifies
            )
            out[f"{model_seed}->{test_seed}"] = figures(metrics)
    return out


def cross_spread(cross: dict[str, Any], seeds: list[int]) -> dict[str, dict[str, float | None]]:
    """Per measurement, the largest spread over the models on one test set ("models") and the
    largest spread of one model over the test sets ("test_sets")."""

    def mae(model: int, test: int, code: str) -> float | None:
        return cross[f"{model}->{test}"]["mae_mm"].get(code)

    def largest(values: list[float | None]) -> float | None:
        found = [v for v in values if v is not None]
        return max(found) if found else None

    return {
        "models": {
            c: largest([spread([mae(m, t, c) for m in seeds]) for t in seeds])
            for c in MEASUREMENT_CODES
        },
        "test_sets": {
            c: largest([spread([mae(m, t, c) for t in seeds]) for m in seeds])
            for c in MEASUREMENT_CODES
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--patients", type=int, default=DEMO_PATIENTS)
    parser.add_argument("--fresh-patients", type=int, default=40)
    parser.add_argument("--fresh-seed", type=int, default=1000)
    args = parser.parse_args()
    keep_freed_memory()  # as `abdus demo` runs (abdus.allocator)

    fresh = args.out / "fresh"
    if not (fresh / "manifest.json").is_file():
        generate_cohort(fresh, patients=args.fresh_patients, seed=args.fresh_seed, jobs=2,
                        second_read_fraction=DEMO_SECOND_READS)  # fmt: skip
    results: dict[str, Any] = {"seeds": {}, "fresh": {}}
    for seed in args.seeds:
        folder = args.out / f"seed-{seed}"
        if not (folder / "summary.json").is_file():
            run_demo(folder, patients=args.patients, seed=seed)
        summary = json.loads((folder / "summary.json").read_text())
        test = json.loads((folder / "evaluation" / "metrics.json").read_text())
        on_fresh = evaluate_run(folder / "run", fresh, split="all", out=folder / "fresh-eval")
        results["seeds"][seed] = {"minutes": summary["seconds"] / 60, **figures(test)}
        results["fresh"][seed] = figures(on_fresh)

    header = "           view %       " + " ".join(f"{c:>11}" for c in MEASUREMENT_CODES)
    print("model/reader B (view accuracy %, MAE mm); last column: landmarks > 20 mm")
    print(header)
    for part in ("seeds", "fresh"):
        for seed, f in results[part].items():
            print(row(f"{part[:5]} {seed}", f))
    seeds = list(results["seeds"].values())
    results["spread"] = {
        "view_accuracy_points": 100 * (spread([f["view_accuracy"] for f in seeds]) or 0),
        "mae_mm": {c: spread([f["mae_mm"].get(c) for f in seeds]) for c in MEASUREMENT_CODES},
    }
    print("spread over seeds:", json.dumps(results["spread"]))
    runs = {seed: args.out / f"seed-{seed}" / "run" for seed in args.seeds}
    cohorts = {seed: args.out / f"seed-{seed}" / "data" for seed in args.seeds}
    results["cross"] = cross_figures(runs, cohorts)
    for key, f in results["cross"].items():
        print(row(key, f))
    results["cross_spread"] = cross_spread(results["cross"], args.seeds)
    print("the same test patients, spread over the models / one model over the test sets:")
    print(json.dumps(results["cross_spread"]))
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    flags = next((ln for ln in lscpu.splitlines() if ln.startswith("Flags")), "")
    results["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "avx512": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
    }  # fmt: skip
    atomic_write_json(args.out / "stability.json", results)


if __name__ == "__main__":
    main()
