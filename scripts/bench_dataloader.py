"""Benchmark the cached dataset: cache build rate and DataLoader samples/s at 512 x 512.

Writes N synthetic 600 x 800 PNG screens (speckle fan, white text, a landmark pair) with a
manifest at 0.3 mm/px, builds the disk cache (0.5 mm, 512 x 512: paper 2.1), then times full
passes of a DataLoader (batch 4) with num_workers 0 and 2, after one warm-up batch.

    .venv/bin/python scripts/bench_dataloader.py --images 64 [--augment] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from abdus.data.dataset import UltrasoundDataset
from abdus.data.heatmaps import HeatmapCodec
from abdus.data.preprocess import PreprocessConfig
from abdus.io.manifest import ImageRecord, Manifest, Read

SHAPE = (600, 800)  # source px
SPACING_MM = 0.3


def synthetic_screen(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, tuple[float, float]]]:
    """(H, W) uint8 screen with a fan of speckle, white text and two kidney landmarks."""
    H, W = SHAPE
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    radius, angle = np.hypot(xs - W / 2, ys - 40), np.degrees(np.arctan2(xs - W / 2, ys - 40))
    sector = (radius > 60) & (radius < 540) & (np.abs(angle) < 40)
    pixels = np.where(sector, rng.rayleigh(50.0, (H, W)), 0.0)
    pixels[10:22, 10:200:6] = 255  # "text"
    x1, y1 = rng.uniform(250, 350), rng.uniform(250, 350)
    x2, y2 = x1 + rng.uniform(150, 250), y1 + rng.uniform(-40, 40)
    landmarks = {"kl_la_1": (float(x1), float(y1)), "kl_la_2": (float(x2), float(y2))}
    return np.clip(pixels, 0, 255).astype(np.uint8), landmarks


def write_dataset(root: Path, count: int, seed: int = 0) -> Manifest:
    """``count`` PNG screens and their manifest (kept in memory) under ``root``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(count):
        pixels, landmarks = synthetic_screen(rng)
        Image.fromarray(pixels).save(root / f"img{i:04d}.png")
        view = "kidney_right_long" if i % 2 else "kidney_left_long"
        records.append(
            ImageRecord(
                id=f"img{i:04d}",
                file=f"img{i:04d}.png",
                patient_id=f"p{i // 4}",
                reference=Read(view, landmarks),
                spacing_mm=(SPACING_MM, SPACING_MM),
            )
        )
    return Manifest(root, records, name="bench")


def time_loader(dataset: UltrasoundDataset, workers: int, epochs: int) -> float:
    """Samples per second over ``epochs`` full passes (batch 4), after one warm-up batch."""
    loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=workers)
    next(iter(loader))
    samples, start = 0, time.perf_counter()
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        for batch in loader:
            samples += batch["image"].shape[0]
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    config = PreprocessConfig(spacing_mm=0.5, size=(512, 512))
    codec = HeatmapCodec.from_mm(config.size, sigma_mm=3.0, spacing_mm=config.spacing_mm)
    with tempfile.TemporaryDirectory(prefix="abdus-bench-") as tmp:
        manifest = write_dataset(Path(tmp) / "data", args.images)
        result: dict[str, object] = {
            "images": args.images,
            "source_shape": list(SHAPE),
            "canvas": list(config.size),
            "augment": args.augment,
            "torch_threads": torch.get_num_threads(),
        }
        for build_workers in (0, 2):  # fresh cache folder each time
            start = time.perf_counter()
            dataset = UltrasoundDataset(
                manifest,
                manifest.records,
                config=config,
                codec=codec,
                cache_dir=Path(tmp) / f"cache{build_workers}",
                augment=args.augment,
                build_workers=build_workers,
            )
            rate = len(dataset) / (time.perf_counter() - start)
            result[f"cache_build_images_per_s_workers{build_workers}"] = round(rate, 2)
        for workers in (0, 2):
            rate = time_loader(dataset, workers, args.epochs)
            result[f"loader_samples_per_s_workers{workers}"] = round(rate, 1)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:40s} {value}")


if __name__ == "__main__":
    main()
