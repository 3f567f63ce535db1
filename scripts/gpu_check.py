"""One short GPU check: `paper` training images/s and mgcn_r inference speed, printed as JSON.

    python scripts/gpu_check.py            # on a CUDA machine (about 1-2 minutes on an H100)
    python scripts/gpu_check.py --tiny     # the same code path in seconds, CPU allowed

Training: the `paper` preset (ResNet50 MGCN_R, 512x512, batch 4, stage 1 with the PatchGAN
discriminator: SGD lr 1e-6 on the summed L2 + coordinate + adversarial losses, Adam for D),
bf16 autocast and channels-last, random data (no dataset needed), 20 timed steps after 5
warm-up steps; also fp32, and stage 2 (views, batch 8). Inference: mgcn_r forward at 512x512,
median latency at batch 1 and throughput at batch 32, bf16 and fp32. All numbers are medians of
per-step times (CUDA synchronised), see ``abdus.training.throughput``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time

import torch

from abdus.models import build_model
from abdus.training.loops import LANDMARKS, VIEWS
from abdus.training.presets import preset_config
from abdus.training.throughput import measure_inference, measure_training


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run(tiny: bool) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not tiny:
        sys.exit("gpu_check: no CUDA device; use --tiny to exercise the script on a CPU")
    config = preset_config("tiny" if tiny else "paper")
    config = dataclasses.replace(config, channels_last=True, amp="bf16")
    steps, warmup = (3, 1) if tiny else (20, 5)
    began = time.perf_counter()
    result: dict = {
        "device": _device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "preset": "tiny" if tiny else "paper",
        "training": [],
        "inference": [],
    }
    for amp, stage in (("bf16", LANDMARKS), ("off", LANDMARKS), ("bf16", VIEWS)):
        c = dataclasses.replace(config, amp=amp)
        result["training"].append(
            measure_training(c, stage, device=device, steps=steps, warmup=warmup)
        )
    model = build_model("mgcn_r", config.model_options)
    size = tuple(config.preprocess.size)
    for dtype in (torch.bfloat16, None):
        for batch in (1, 2 if tiny else 32):
            result["inference"].append(
                measure_inference(
                    model,
                    device=device,
                    batch_size=batch,
                    size=size,
                    amp_dtype=dtype,
                    channels_last=True,
                    steps=steps if batch > 1 else 5 * steps,
                    warmup=warmup,
                )
            )
    if device.type == "cuda":
        result["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    result["seconds_total"] = round(time.perf_counter() - began, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny preset, runs on a CPU too")
    args = parser.parse_args()
    print(json.dumps(run(args.tiny), indent=2))


if __name__ == "__main__":
    main()
