"""In-memory training data for the trainer tests and the DDP / kill-resume worker processes.

Images are 64x64 model pixels: a bright blob at every landmark of the image's view (so the
heat maps are learnable) and a horizontal stripe whose row encodes the view (so the classifier
is learnable). Items follow the ``abdus.data.UltrasoundDataset`` contract.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from abdus.data.heatmaps import HeatmapCodec
from abdus.taxonomy import NUM_LANDMARKS, NUM_VIEWS, landmark_channels_of_view
from abdus.training.config import TrainConfig
from abdus.training.datasets import TrainingData
from abdus.training.presets import preset_config
from abdus.training.stages import codec_of

SIZE = 64
SPACING_MM = 4.0


class BlobDataset(Dataset):
    """``n`` synthetic samples; views cycle through all 11 so every task has landmarks."""

    def __init__(self, n: int, codec: HeatmapCodec, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.views = np.arange(n) % NUM_VIEWS
        yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
        images, heatmaps, masks, points = [], [], [], []
        for view in self.views:
            pts = np.full((NUM_LANDMARKS, 2), np.nan, np.float32)
            channels = list(landmark_channels_of_view(int(view)))
            pts[channels] = rng.uniform(10, SIZE - 10, (len(channels), 2))
            image = 0.1 * rng.random((SIZE, SIZE), dtype=np.float32)
            image[4 + 5 * int(view) : 6 + 5 * int(view), :] += 0.6  # the view's stripe
            for x, y in pts[channels]:
                image += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0)
            heat, mask = codec.encode(pts)
            images.append(np.clip(image, 0, 1))
            heatmaps.append(heat)
            masks.append(mask)
            points.append(np.nan_to_num(pts, nan=0.0))
        self.images = torch.from_numpy(np.stack(images))[:, None]  # (N, 1, H, W)
        self.heatmaps = torch.from_numpy(np.stack(heatmaps))  # (N, 14, H, W)
        self.masks = torch.from_numpy(np.stack(masks).astype(np.float32))  # (N, 14)
        self.points = torch.from_numpy(np.stack(points))  # (N, 14, 2) model px

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "image": self.images[index],
            "class_image": self.images[index],
            "heatmaps": self.heatmaps[index],
            "landmark_mask": self.masks[index],
            "landmarks": self.points[index],
            "view": torch.tensor(int(self.views[index]), dtype=torch.int64),
            "has_view": torch.tensor(True),
            "index": torch.tensor(index, dtype=torch.int64),
            "model_spacing_mm": torch.tensor(SPACING_MM, dtype=torch.float32),
        }


def tiny_config(model: str = "mgcn_r", **changes) -> TrainConfig:
    """The tiny preset on the CPU, with ``changes`` to top-level fields."""
    return dataclasses.replace(preset_config("tiny", model), device="cpu", **changes)


def with_epochs(config: TrainConfig, stage1: int, stage2: int, stage3: int = 0) -> TrainConfig:
    """``config`` with the given epoch counts (no refit stage unless ``stage3`` says so)."""
    return dataclasses.replace(
        config,
        stage1=dataclasses.replace(config.stage1, epochs=stage1),
        stage2=dataclasses.replace(config.stage2, epochs=stage2),
        stage3=dataclasses.replace(config.stage3, epochs=stage3),
    )


def synthetic_data(config: TrainConfig, n_train: int = 44, n_val: int = 22) -> TrainingData:
    """TrainingData over BlobDatasets (train, validation) with the codec of ``config``."""
    codec = codec_of(config)
    train, val = BlobDataset(n_train, codec, seed=1), BlobDataset(n_val, codec, seed=2)

    def annotated(ds: BlobDataset) -> list[int]:
        return [i for i in range(len(ds)) if float(ds.masks[i].sum()) > 0]

    return TrainingData(Path("synthetic"), train, val, annotated(train), annotated(val))
