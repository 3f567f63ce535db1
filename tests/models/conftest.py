"""Shared fixtures for the model and loss tests: tiny networks and synthetic batches."""

from __future__ import annotations

import pytest
import torch

from abdus.data.heatmaps import HeatmapCodec
from abdus.taxonomy import NUM_LANDMARKS, landmark_channels_of_view

# Tiny widths keep every test fast on 2 CPU cores.
TINY = {"depth": "resnet18", "widths": (8, 16, 32, 64), "gcn_k": 7, "classifier_hidden": 16}


def synthetic_batch(
    batch: int = 2, size: tuple[int, int] = (64, 64), seed: int = 0
) -> dict[str, torch.Tensor]:
    """A batch in the dataset's item layout (image, heatmaps, landmark_mask, landmarks in model
    px, view, has_view). Image 0 has all 14 landmarks (so every SFCN task gets a target); the
    others have the 4 landmarks of view 6 (kidney_right_trans)."""
    gen = torch.Generator().manual_seed(seed)
    H, W = size
    mask = torch.zeros(batch, NUM_LANDMARKS)
    mask[0] = 1.0
    mask[1:, list(landmark_channels_of_view(6))] = 1.0
    view = torch.tensor([5] + [6] * (batch - 1), dtype=torch.int64)
    landmarks = torch.rand(batch, NUM_LANDMARKS, 2, generator=gen) * torch.tensor([W - 9, H - 9])
    landmarks = (landmarks + 4.0) * mask[..., None]
    codec = HeatmapCodec((H, W), sigma_px=2.0)
    return {
        "image": torch.rand(batch, 1, H, W, generator=gen),
        "heatmaps": codec.encode_torch(landmarks, mask.bool()),
        "landmark_mask": mask,
        "landmarks": landmarks,
        "view": view,
        "has_view": torch.ones(batch, dtype=torch.bool),
    }


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    return synthetic_batch()


@pytest.fixture
def make_batch():
    """The ``synthetic_batch`` factory, for tests that need other sizes or batch sizes."""
    return synthetic_batch


@pytest.fixture
def tiny() -> dict:
    """``build_model`` options of a tiny network."""
    return dict(TINY)
