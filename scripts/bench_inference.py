"""End-to-end inference latency, backends side by side (``abdus.inference.benchmark``).

Usage::

    .venv/bin/python scripts/bench_inference.py [TARGET] [--repeats 20] [--warmup 3]
        [--backends torch-fp32 torch-bf16 onnx-fp32 onnx-int8] [--size 512] [--depth resnet50]
        [--data DATASET] [--json] [--out report.json]

TARGET is a run folder, a ``model.pt`` or a preset name (default ``paper``: ResNet-50 MGCN_R at
512 x 512, untrained: latency does not depend on the weights). Run it on a quiet machine: the
report records the load average before and after. ``--out`` also writes the JSON report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from abdus.inference.benchmark import BENCH_BACKENDS, run_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", default="paper")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--backends", nargs="+", choices=BENCH_BACKENDS, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--depth", default=None)
    parser.add_argument("--data", default=None, help="dataset folder: accuracy change too")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    args = parser.parse_args()
    report = run_benchmark(
        args.target,
        as_json=args.json,
        repeats=args.repeats,
        warmup=args.warmup,
        backends=args.backends,
        size=args.size,
        depth=args.depth,
        data=args.data,
    )
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
