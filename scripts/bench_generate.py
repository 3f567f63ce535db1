"""Measure `abdus generate` throughput (images/s, files written) for jobs 1 and 2, DICOM and PNG.

Usage::

    .venv/bin/python scripts/bench_generate.py [--patients 8] [--jobs 1 2] [--formats dicom png]
                                               [--seed 0] [--json]

Each run writes a full cohort (rendering, overlays, readers, files, contact sheet, manifest) into
a fresh temporary folder and divides the number of images by the wall-clock time of
``generate_cohort``. A render-only pass over the first patient gives the share of time spent
rendering (``render_ms`` per image, one process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from abdus.allocator import keep_freed_memory
from abdus.phantom.generate import generate_cohort, views_of_patient
from abdus.phantom.render import sample_patient, scan_view


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished (reaped) children."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_generate(patients: int, seed: int, image_format: str, jobs: int) -> dict[str, float]:
    """One cohort into a temporary folder: images/s (wall clock) and CPU ms per image.

    CPU time counts the worker processes too (they are reaped when the pool closes), so
    ``cpu_ms_per_image`` does not depend on how busy the machine is; wall-clock images/s does.
    """
    with tempfile.TemporaryDirectory(prefix="abdus-bench-") as tmp:
        out = Path(tmp) / "cohort"
        cpu_start, start = _cpu_seconds(), time.perf_counter()
        manifest = generate_cohort(
            out, patients=patients, seed=seed, image_format=image_format, jobs=jobs, progress=False
        )
        seconds = time.perf_counter() - start
        cpu_seconds = _cpu_seconds() - cpu_start
        size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    pixels = np.mean([r.size[0] * r.size[1] for r in manifest.records if r.size])
    return {
        "format": image_format,
        "jobs": jobs,
        "patients": patients,
        "images": len(manifest),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(manifest) / seconds, 2),
        "cpu_ms_per_image": round(1000.0 * cpu_seconds / len(manifest), 1),
        "mean_screen_megapixels": round(float(pixels) / 1e6, 3),
        "written_mb": round(size_mb, 1),
    }


def time_render_only(seed: int) -> float:
    """Mean ms of ``scan_view`` alone over one patient's images (one process)."""
    rng = np.random.default_rng(seed)
    anatomy = sample_patient(rng, "BENCH")
    views = views_of_patient()
    scan_view(anatomy, views[0], rng)  # warm-up (imports, caches)
    start = time.perf_counter()
    for view in views:
        scan_view(anatomy, view, rng)
    return 1000.0 * (time.perf_counter() - start) / len(views)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark grid and print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--formats", nargs="+", choices=("dicom", "png"), default=["dicom", "png"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    heap = keep_freed_memory()  # as `abdus generate` runs (abdus.allocator); forked jobs inherit it
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())  # other work on the machine skews img/s
    rows = [
        time_generate(args.patients, args.seed, image_format, jobs)
        for image_format in args.formats
        for jobs in args.jobs
    ]
    render_ms = round(time_render_only(args.seed), 1)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"C heap: {heap}"
    )
    if args.json:
        report = {"machine": machine, "load_average": load, "render_ms": render_ms, "runs": rows}
        print(json.dumps(report, indent=2))
        return 0
    print(f"machine: {machine}; scan_view alone: {render_ms} ms/image (1 process)")
    print(f"load average before the runs: {load}")
    header = ("format", "jobs", "images", "seconds", "img/s", "cpu ms/img", "Mpx", "MB")
    print("{:<7}{:>5}{:>8}{:>9}{:>8}{:>12}{:>7}{:>8}".format(*header))
    for r in rows:
        print(
            f"{r['format']:<7}{r['jobs']:>5}{r['images']:>8}{r['seconds']:>9.2f}"
            f"{r['images_per_s']:>8.2f}{r['cpu_ms_per_image']:>12.1f}"
            f"{r['mean_screen_megapixels']:>7.3f}{r['written_mb']:>8.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
