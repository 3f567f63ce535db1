"""Training speed (images/s) of the presets on this machine's CPU or GPU, printed as JSON.

    python scripts/bench_training.py                          # demo and paper, fp32 and bf16
    python scripts/bench_training.py --presets demo --amp off --steps 10
    python scripts/bench_training.py --presets demo --amp off --last-refine full half
    python scripts/bench_training.py --presets demo --amp off --memory-format nchw channels-last
    python scripts/bench_training.py --presets demo --amp off --discriminator-downsample 1 2
    python scripts/bench_training.py --pipeline --presets demo --amp off   # data paths, inference
    python scripts/bench_training.py --presets demo --amp off --allocator system keep system keep

Random data through the trainer's own step functions (``abdus.training.throughput``): the
landmark stage (with the PatchGAN for mgcn_r) and the view stage, each at its preset batch
size and input size. ``paper`` is ResNet50 MGCN_R at 512x512, batch 4 (stage 1) / 8 (stage 2).
Reported: median seconds per step after warm-up, images/s from it, and the first / last loss
on the fixed batch. With ``--data DATA [--lrs ...]`` it prints instead the stage-1 loss of each
step on the real images of a dataset, per learning rate (does a learning rate learn?).

With ``--pipeline`` it measures a stage as ``abdus train`` runs it, data included, on the cached
samples of a cohort (``--data``, or one generated with ``--patients`` patients): images/s of
the CPU loader (``data_on_device: off``, the preset's ``num_workers``) and of the
device-resident path (``on``), each alone (batches on the device) and feeding consecutive
training steps (``abdus.training.throughput.measure_data_path``; ``--compile`` adds
``torch.compile``d runs), then the preset's end-to-end inference (``abdus benchmark``, one
image from file to measurements). Ratios are comparable within one run only.

On the 2-core VMs used for development, OpenMP's default busy-waiting made step times vary
tenfold from run to run; ``OMP_WAIT_POLICY=PASSIVE`` (set before Python starts) or
``--threads 1`` gave stable numbers. The environment is printed with the results. Stable is not
fast: on an idle 2-core machine PASSIVE made a short demo training run 1.5x slower (145 s against
97 s, docs/benchmarks.md, "Channels-last training on the CPU"), and abdus never sets it, so
compare figures only within one setting.

``--allocator`` runs the whole measurement once per value, each in a fresh process, in the
order given: ``keep`` with the C heap keeping freed memory as the ``abdus`` commands run
(``abdus.allocator``), ``system`` with glibc's defaults. Each row then carries its allocator and
the minor page faults (``ru_minflt``) and kernel seconds of its measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

from abdus.allocator import keep_freed_memory
from abdus.inference.benchmark import run_benchmark
from abdus.phantom.generate import generate_cohort
from abdus.training.datasets import load_training_data
from abdus.training.distributed import DistributedContext
from abdus.training.loops import LANDMARKS, VIEWS
from abdus.training.presets import PRESETS, preset_config
from abdus.training.stages import STAGES, codec_of
from abdus.training.throughput import landmark_loss_curve, measure_data_path, measure_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["demo", "paper"], choices=PRESETS)
    parser.add_argument("--model", default="mgcn_r")
    parser.add_argument("--amp", nargs="+", default=["off", "bf16"], choices=("off", "bf16"))
    parser.add_argument("--stages", nargs="+", default=[LANDMARKS, VIEWS])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--last-refine", nargs="+", default=None, choices=("full", "half"),
        help="decoder's last refinement, each in turn (default: the preset's)",
    )  # fmt: skip
    parser.add_argument(
        "--memory-format", nargs="+", default=None, choices=("nchw", "channels-last"),
        help="train in each in turn (default: the preset's channels_last)",
    )  # fmt: skip
    parser.add_argument(
        "--discriminator-downsample", nargs="+", type=int, default=None,
        help="the PatchGAN's input pooling factor, each in turn (default: the preset's)",
    )  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", default=None, help="dataset: print stage-1 loss curves instead")
    parser.add_argument("--lrs", nargs="+", type=float, default=None, help="stage-1 lrs (--data)")
    parser.add_argument("--reduction", default=None, choices=("sum", "mean"), help="with --data")
    parser.add_argument("--pipeline", action="store_true", help="data paths + inference")
    parser.add_argument("--patients", type=int, default=10, help="generated cohort (--pipeline)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (--pipeline)")
    parser.add_argument("--inference-repeats", type=int, default=10, help="(--pipeline)")
    parser.add_argument(
        "--allocator", nargs="+", default=None, choices=("system", "keep"),
        help="the C heap's settings, each in a fresh process in turn (default: glibc's, as "
        "imported; abdus commands run with keep)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.allocator and len(args.allocator) > 1:
        each_allocator(args.allocator)
        return
    allocator = None
    if args.allocator:
        allocator = keep_freed_memory() if args.allocator[0] == "keep" else "system"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.pipeline:
        pipeline(args)
        return
    if args.data:
        loss_curves(args)
        return
    device = torch.device(args.device)
    results = []
    for preset in args.presets:
        base = preset_config(preset, args.model)
        formats = args.memory_format or ["channels-last" if base.channels_last else "nchw"]
        poolings = args.discriminator_downsample or [base.discriminator_options.downsample]
        for amp, refine, fmt, pooling in itertools.product(
            args.amp, args.last_refine or [base.model_options.last_refine], formats, poolings
        ):
            network = dataclasses.replace(base.model_options, last_refine=refine)
            critic = dataclasses.replace(base.discriminator_options, downsample=pooling)
            config = dataclasses.replace(
                base, amp=amp, model_options=network, discriminator_options=critic,
                channels_last=fmt == "channels-last",
            )  # fmt: skip
            for stage in args.stages:
                began, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
                row = measure_training(
                    config, stage, device=device, steps=args.steps, warmup=args.warmup
                )
                after = resource.getrusage(resource.RUSAGE_SELF)
                row.update(
                    preset=preset, model=args.model, last_refine=refine,
                    discriminator_downsample=pooling, wall_s=time.perf_counter() - began,
                    allocator=allocator, minor_faults=after.ru_minflt - usage.ru_minflt,
                    kernel_s=round(after.ru_stime - usage.ru_stime, 2),
                )  # fmt: skip
                results.append(row)
                print(json.dumps(row), flush=True)
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    summary = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "env": env,
        "results": results,
    }
    print(json.dumps(summary, indent=1))


def each_allocator(allocators: list[str]) -> None:
    """This script again with the same options, once per allocator in a fresh process (the C
    heap's settings hold for a process's life); its rows as they come, then their summary."""
    argv, rows = sys.argv[1:], []
    cut = argv.index("--allocator")
    rest = argv[:cut] + list(itertools.dropwhile(lambda a: not a.startswith("--"), argv[cut + 1 :]))
    for allocator in allocators:
        command = [sys.executable, __file__, *rest, "--allocator", allocator]
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        for line in done.stdout.splitlines():
            if line.startswith('{"stage"'):
                rows.append(json.loads(line))
                print(line, flush=True)
    print(json.dumps({"cpu_count": os.cpu_count(), "results": rows}, indent=1))


def _machine(device: torch.device) -> dict:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "unknown",
    )  # fmt: skip
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "device": str(device),
        "cpu": cpu,
        "gpu": gpu,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
        "load_average": list(psutil.getloadavg()),
    }


def pipeline(args: argparse.Namespace) -> None:
    """Per preset and amp: each stage's images/s on the loader and on the device path (data
    alone, data + steps), then end-to-end inference; one JSON line per row, a summary last."""
    device = torch.device(args.device)
    machine = _machine(device)
    results = []
    with tempfile.TemporaryDirectory(prefix="abdus-bench-") as tmp:
        data_dir = args.data
        if data_dir is None:
            data_dir = Path(tmp) / "cohort"
            generate_cohort(data_dir, patients=args.patients, seed=0, progress=False)
        ctx = DistributedContext(0, 1, 0, device)
        for preset in args.presets:
            base = preset_config(preset, args.model)
            cache = Path(tmp) / f"cache-{preset}"  # built once per preset, outside the timing
            base = dataclasses.replace(base, cache_dir=str(cache))
            data = load_training_data(data_dir, base, codec_of(base), Path(tmp), STAGES, ctx)
            for amp in args.amp:
                for compiled in (False, True) if args.compile else (False,):
                    config = dataclasses.replace(base, amp=amp, compile=compiled)
                    for stage in args.stages:
                        for placement in ("off", "on"):
                            row = measure_data_path(
                                config, data, stage, device=device, placement=placement,
                                steps=args.steps, warmup=args.warmup,
                            )  # fmt: skip
                            row.update(preset=preset, model=args.model)
                            results.append(row)
                            print(json.dumps(row), flush=True)
            with contextlib.redirect_stdout(sys.stderr):  # its report: stdout stays JSON lines
                report = run_benchmark(
                    preset, as_json=True, repeats=args.inference_repeats, backends=["torch-fp32"]
                )
            row = {
                "preset": preset,
                "inference": "end-to-end, one image, torch-fp32 (abdus benchmark)",
                **{k: report["backends"]["torch-fp32"][k] for k in ("median_ms", "p90_ms")},
                "gpu": report.get("gpu"),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    machine["load_average_after"] = list(psutil.getloadavg())
    print(json.dumps({"machine": machine, "results": results}, indent=1))


def loss_curves(args: argparse.Namespace) -> None:
    """Stage-1 losses step by step on real images, for each preset, amp and learning rate."""
    device = torch.device(args.device)
    for preset in args.presets:
        for amp in args.amp:
            base = dataclasses.replace(preset_config(preset, args.model), amp=amp)
            if args.reduction:
                base = dataclasses.replace(
                    base, loss=dataclasses.replace(base.loss, reduction=args.reduction)
                )
            for lr in args.lrs or [base.stage1.optimizer.lr]:
                optimizer = dataclasses.replace(base.stage1.optimizer, lr=lr)
                config = dataclasses.replace(
                    base, stage1=dataclasses.replace(base.stage1, optimizer=optimizer)
                )
                began = time.perf_counter()
                row = landmark_loss_curve(config, args.data, device=device, steps=args.steps)
                curve = row["curve"]
                parts = {k: [round(p[k], 3) for p in curve] for k in curve[0]}
                row = {
                    "preset": preset,
                    "amp": amp,
                    "reduction": config.loss.reduction,
                    "lr": lr,
                    "images": row["images"],
                    **parts,
                    "wall_s": round(time.perf_counter() - began, 1),
                }
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
