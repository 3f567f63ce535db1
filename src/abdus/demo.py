"""``abdus demo``: the whole system on built-in synthetic data, in minutes on a laptop CPU.

Generates a synthetic cohort (two simulated readers and the noise-free truth; reader B reads
every image, so the human row rests on every test image), trains the proposed MGCN_R with the
``demo`` preset (model selection on validation patients), evaluates it against reader A on the
test patients beside reader B (the human row) and an untrained network of the same
architecture, writes the report and prints a short, honest summary.

Every ``abdus demo`` gets its own folder and reuses the cohort while its settings match, so it
can be run again and again (``run_new_demo``)::

    OUT/cohorts/seed0-320p/     the cohort (its manifest's meta says what it was generated with)
    OUT/runs/1/run/             the trained model (model.pt, config.yaml, logs)
    OUT/runs/1/evaluation/      metrics.json, report.md, report.html
    OUT/runs/1/summary.json     what the terminal summary shows
    OUT/runs/2/...              the next demo
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from abdus import __version__
from abdus.errors import AbdusInputError
from abdus.evaluation.evaluate import evaluate_run, evaluate_untrained
from abdus.io.atomic import atomic_write_json
from abdus.io.manifest import MANIFEST_NAME
from abdus.phantom.generate import GENERATOR, MARKER_NAME, CohortConfig, generate_cohort
from abdus.taxonomy import MEASUREMENT_CODES, NUM_VIEWS
from abdus.training.trainer import train

DEMO_PATIENTS = 320
DEMO_SECOND_READS = 1.0  # share of images reader B also reads (the human row's basis)
COHORTS_DIR, RUNS_DIR = "cohorts", "runs"  # under the demo folder: OUT/cohorts/*, OUT/runs/N
LEGACY_COHORT = "data"  # run_demo's own cohort (and earlier demos'): reused when it matches


def demo_cohort_settings(*, patients: int = DEMO_PATIENTS, seed: int = 0) -> dict[str, Any]:
    """What a demo cohort is generated with, as ``generate_cohort`` records it in its
    manifest's ``meta``: generator, abdus version, patients, seed, format, reader-B share."""

    config = CohortConfig(
        patients=int(patients),
        seed=int(seed),
        image_format="dicom",
        second_read_fraction=DEMO_SECOND_READS,
    )
    return {"generator": GENERATOR, "abdus_version": __version__, **asdict(config)}


def cohort_differences(folder: Path, wanted: dict[str, Any]) -> list[str] | None:
    """How the cohort in ``folder`` differs from ``wanted`` (``demo_cohort_settings``): [] when
    it matches, None when ``folder`` holds no finished cohort (no readable manifest)."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        recorded = manifest.get("meta") or {}
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(recorded, dict):
        return None
    return [
        f"{key} {recorded.get(key)!r} (wanted {value!r})"
        for key, value in wanted.items()
        if recorded.get(key) != value
    ]


def find_demo_cohort(home: Path, *, patients: int, seed: int) -> Path:
    """The cohort folder for a demo under ``home``: a finished cohort generated with the same
    settings (``demo_cohort_settings``) when there is one, else a free folder
    ``home/cohorts/seed<S>-<N>p`` (``-2``, ``-3``, ... when that name is taken by anything but
    an unfinished abdus cohort), so nothing there is ever overwritten."""

    wanted = demo_cohort_settings(patients=patients, seed=seed)
    cohorts = home / COHORTS_DIR
    found = sorted(p for p in cohorts.iterdir() if p.is_dir()) if cohorts.is_dir() else []
    for folder in [home / LEGACY_COHORT, *found]:
        if cohort_differences(folder, wanted) == []:
            return folder
    base = f"seed{seed}-{patients}p"
    for n in itertools.count(1):
        folder = cohorts / (base if n == 1 else f"{base}-{n}")
        if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
            return folder
        if (folder / MARKER_NAME).is_file() and not (folder / MANIFEST_NAME).exists():
            return folder  # a generation of ours that was interrupted: generate_cohort redoes it
    raise AssertionError("unreachable")


def new_run_folder(runs: Path) -> Path:
    """A new, empty numbered folder ``runs/N`` (N = 1 + the highest there), made here."""
    runs.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name) for p in runs.iterdir() if p.name.isdigit()]
    for n in itertools.count(max(taken, default=0) + 1):
        try:
            (runs / str(n)).mkdir()
        except FileExistsError:  # another demo took it meanwhile
            continue
        return runs / str(n)
    raise AssertionError("unreachable")


def run_new_demo(
    home: str | Path = "runs/demo",
    *,
    patients: int = DEMO_PATIENTS,
    preset: str = "demo",
    seed: int = 0,
    jobs: int = 2,
) -> dict[str, Any]:
    """``abdus demo``: a new demo run in ``home/runs/N`` (see ``run_demo``), every call its own
    folder. The cohort is ``find_demo_cohort``'s: generated once, reused by later runs with the
    same seed and patients (and generator), a new folder for other settings."""
    home = Path(home)
    if home.exists() and not home.is_dir():
        raise AbdusInputError("exists and is not a folder", home)
    data = find_demo_cohort(home, patients=patients, seed=seed)
    run_folder = new_run_folder(home / RUNS_DIR)
    return run_demo(run_folder, patients=patients, preset=preset, seed=seed, jobs=jobs, data=data)


def run_demo(
    out: str | Path,
    *,
    patients: int = DEMO_PATIENTS,
    preset: str = "demo",
    seed: int = 0,
    jobs: int = 2,
    data: str | Path | None = None,
) -> dict[str, Any]:
    """One demo into the folder ``out``: ``out/run`` (the trained model), ``out/evaluation``
    (metrics and report) and ``out/summary.json``; returns the summary dict.

    The cohort is ``data`` (default ``out/data``): generated there when it holds none, reused
    when it holds one generated with the same settings, an AbdusInputError otherwise, as is a
    folder whose ``run`` is not empty (nothing is overwritten).
    """

    out = Path(out)
    data = out / LEGACY_COHORT if data is None else Path(data)
    run = out / "run"
    if run.exists() and any(run.iterdir()):
        raise AbdusInputError("a demo run already exists there; remove it or choose --out", out)
    differences = cohort_differences(data, demo_cohort_settings(patients=patients, seed=seed))
    if differences:
        raise AbdusInputError(
            f"holds a cohort generated otherwise: {', '.join(differences)}; give another", data
        )
    started = time.perf_counter()
    if differences is None:
        _say(f"[1/4] generating a synthetic cohort of {patients} patients in {data}")
        generate_cohort(
            data,
            patients=patients,
            seed=seed,
            image_format="dicom",
            jobs=jobs,
            second_read_fraction=DEMO_SECOND_READS,
        )
    else:
        _say(f"[1/4] reusing the synthetic cohort of {patients} patients (seed {seed}) in {data}")
    _say(f"[2/4] training MGCN_R (preset {preset!r}) in {run}")
    train(data, run, model="mgcn_r", preset=preset, seed=seed)
    _say("[3/4] evaluating on the test patients against reader A (and reader B)")
    metrics = evaluate_run(run, data, out=out / "evaluation")
    baseline = evaluate_untrained(run, data)
    summary = _summary(metrics, baseline, time.perf_counter() - started, out)
    atomic_write_json(out / "summary.json", summary)
    _say("[4/4] done\n")
    print(format_summary(summary))
    return summary


def _say(text: str) -> None:
    print(text, flush=True)


def _summary(metrics: dict, baseline: dict, seconds: float, out: Path) -> dict[str, Any]:
    human = metrics.get("human", {})
    return {
        "seconds": seconds,
        "n_images": metrics["n_images"],
        "n_patients": metrics["n_patients"],
        "view_accuracy": metrics.get("view_accuracy"),
        "view_accuracy_untrained": baseline.get("view_accuracy"),
        "view_accuracy_human": human.get("view_accuracy"),
        "chance": 1.0 / NUM_VIEWS,
        "measurement_mae_mm": metrics["measurement_mae_mm"],
        "measurement_mae_mm_untrained": baseline["measurement_mae_mm"],
        "measurement_mae_mm_human": human.get("measurement_mae_mm", {}),
        "measurement_n": {k: v.get("n") for k, v in metrics.get("measurements", {}).items()},
        "measurement_n_human": {k: v.get("n") for k, v in human.get("measurements", {}).items()},
        "landmarks_far_off": metrics.get("landmarks_far_off"),
        "report": str(out / "evaluation" / "report.html"),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, spec)


def format_summary(s: dict[str, Any]) -> str:
    """The terminal summary: accuracy and the 7 errors beside the human row, honestly."""
    lines = [
        f"abdus demo: {s['n_images']} held-out images of {s['n_patients']} patients, "
        f"{s['seconds'] / 60:.1f} min on {s['device']}",
        f"view accuracy: {_fmt(s['view_accuracy'], '.1%')} "
        f"(untrained {_fmt(s['view_accuracy_untrained'], '.1%')}, chance {s['chance']:.1%}, "
        f"reader B vs A {_fmt(s['view_accuracy_human'], '.1%')})",
        "",
        f"{'mean abs error (mm)':<22}{'model':>8}{'untrained':>11}{'human':>8}{'n':>6}",
    ]
    worse = []
    for code in MEASUREMENT_CODES:
        model = s["measurement_mae_mm"].get(code)
        human = s["measurement_mae_mm_human"].get(code)
        n = (s.get("measurement_n") or {}).get(code)
        lines.append(
            f"{code:<22}{_fmt(model):>8}{_fmt(s['measurement_mae_mm_untrained'].get(code)):>11}"
            f"{_fmt(human):>8}{'—' if n is None else n:>6}"
        )
        if model is not None and human is not None and model > human:
            worse.append(f"{code} ({model / human:.1f}x)")
    lines.append("")
    far = s.get("landmarks_far_off") or {}
    if far.get("n"):
        lines.append(
            f"landmarks more than {far['limit_mm']:g} mm from reader A: {far['n_far']} of "
            f"{far['n']} ({far['share']:.1%})"
        )
    acc, human_acc = s["view_accuracy"], s["view_accuracy_human"]
    if acc is not None and human_acc is not None and acc < human_acc:
        lines.append("The demo model classifies views worse than the second human reader.")
    if worse:
        lines.append(
            "The demo model measures worse than the second human reader on "
            f"{len(worse)} of 7 measurements: {', '.join(worse)}."
        )
    else:
        lines.append("The demo model measures on par with or better than the second reader.")
    lines.append(f"report: {s['report']}")
    return "\n".join(lines)
