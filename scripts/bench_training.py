"""Training speed (images/s) of the presets on this machine's CPU or GPU, printed as JSON.

    python scripts/bench_training.py                          # demo and paper, fp32 and bf16
    python scripts/bench_training.py --presets demo --amp off --steps 10

Random data through the trainer's own step functions (``abdus.training.throughput``): the
landmark stage (with the PatchGAN for mgcn_r) and the view stage, each at its preset batch
size and input size. ``paper`` is ResNet50 MGCN_R at 512x512, batch 4 (stage 1) / 8 (stage 2).
Reported: median seconds per step after warm-up, images/s from it, and the first / last loss
on the fixed batch. With ``--data DATA [--lrs ...]`` it prints instead the stage-1 loss of each
step on the real images of a dataset, per learning rate (does a learning rate learn?).

On the 2-core VMs used for development, OpenMP's default busy-waiting made step times vary
tenfold from run to run; ``OMP_WAIT_POLICY=PASSIVE`` (set before Python starts) or
``--threads 1`` gave stable numbers. The environment is printed with the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import torch

from abdus.training.loops import LANDMARKS, VIEWS
from abdus.training.presets import PRESETS, preset_config
from abdus.training.throughput import landmark_loss_curve, measure_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["demo", "paper"], choices=PRESETS)
    parser.add_argument("--model", default="mgcn_r")
    parser.add_argument("--amp", nargs="+", default=["off", "bf16"], choices=("off", "bf16"))
    parser.add_argument("--stages", nargs="+", default=[LANDMARKS, VIEWS])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", default=None, help="dataset: print stage-1 loss curves instead")
    parser.add_argument("--lrs", nargs="+", type=float, default=None, help="stage-1 lrs (--data)")
    parser.add_argument("--reduction", default=None, choices=("sum", "mean"), help="with --data")
    args = parser.parse_args()
    if args.data:
        loss_curves(args)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = []
    for preset in args.presets:
        for amp in args.amp:
            config = dataclasses.replace(preset_config(preset, args.model), amp=amp)
            for stage in args.stages:
                began = time.perf_counter()
                row = measure_training(
                    config, stage, device=device, steps=args.steps, warmup=args.warmup
                )
                row.update(preset=preset, model=args.model, wall_s=time.perf_counter() - began)
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
