"""Parameter counts and sizes of every variant, and the CPU forward time of MGCN_R.

Paper section 2.3: "The model parameters to handle all the tasks are reduced from 539MB to
100MB" (STL + five single-task FCNs vs the one multi-task network). This script prints our
figures for the same comparison at depth 50 with the default widths, and times one MGCN_R
forward pass at 512 x 512 (median of ``--repeats`` after a warm-up, ``torch.inference_mode``,
fp32 and bf16 autocast, NCHW and channels-last).

    .venv/bin/python scripts/model_sizes.py [--size 512] [--repeats 3] [--no-timing] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from abdus.models import VARIANTS, build_model, count_parameters, model_size_mb


def variant_sizes(depth: str) -> dict[str, dict[str, float]]:
    """{variant: {"parameters": count, "mb": fp32 MiB}} at ``depth`` and default widths."""
    sizes = {}
    for name in VARIANTS:
        model = build_model(name, depth=depth)
        sizes[name] = {"parameters": count_parameters(model), "mb": model_size_mb(model)}
    return sizes


def time_forward(
    model: torch.nn.Module,
    size: int,
    repeats: int,
    dtype: torch.dtype | None,
    channels_last: bool = False,
) -> float:
    """Median seconds of one batch-1 forward at size x size (after one warm-up pass)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    x = torch.rand(1, 1, size, size).to(memory_format=memory_format)
    times = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        model(x)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", default="resnet50", choices=["resnet18", "resnet34", "resnet50"])
    parser.add_argument("--size", type=int, default=512, help="input side, model px")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    sizes = variant_sizes(args.depth)
    separate = sizes["stl"]["mb"] + sizes["sfcn"]["mb"]  # sfcn holds all five task networks
    result: dict = {"depth": args.depth, "variants": sizes}
    result["stl_plus_5_sfcn_mb"] = separate
    result["mgcn_r_mb"] = sizes["mgcn_r"]["mb"]
    if not args.no_timing:
        model = build_model("mgcn_r", depth=args.depth).eval()
        timing: dict = {"input": f"1x1x{args.size}x{args.size}"}
        timing["threads"] = torch.get_num_threads()
        for layout in ("nchw", "channels_last"):
            for name, dtype in (("fp32", None), ("bf16_autocast", torch.bfloat16)):
                timing[f"{name}_{layout}"] = time_forward(
                    model, args.size, args.repeats, dtype, layout == "channels_last"
                )
        result["forward_s"] = timing
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'variant':8s} {'parameters':>12s} {'MB (fp32)':>10s}   depth {args.depth}")
    for name, s in sizes.items():
        print(f"{name:8s} {s['parameters']:12,d} {s['mb']:10.1f}")
    print(f"STL + 5 x SFCN: {separate:.1f} MB   MGCN_R: {sizes['mgcn_r']['mb']:.1f} MB")
    print("(paper, section 2.3: 539 MB separate vs 100 MB multi-task)")
    if "forward_s" in result:
        t = result["forward_s"]
        print(
            f"MGCN_R forward {t['input']} on CPU ({t['threads']} threads), "
            f"median of {args.repeats}:"
        )
        for key, seconds in t.items():
            if key not in ("input", "threads"):
                print(f"  {key:28s} {seconds * 1000:8.0f} ms")


if __name__ == "__main__":
    main()
