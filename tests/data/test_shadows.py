"""Acoustic-shadow augmentation: the band's geometry, landmarks kept clear, both data paths."""

from __future__ import annotations

import math

import pytest
import torch

from abdus.data.dataset import AugmentConfig, UltrasoundDataset
from abdus.data.shadows import shadow_factor, shadow_spares
from abdus.training.device_augment import augment_batch, draw_augmentation

from .test_dataset import CODEC, CONFIG, manifest  # noqa: F401  (the fixture)

ONE = torch.ones(1)


def _straight_down(x: float = 32.0, y: float = 10.0, width: float = 8.0):
    return torch.tensor([[x, y]]), torch.zeros(1), torch.tensor([width])


def test_the_shadow_darkens_the_band_behind_its_start_and_nothing_else():
    start, angle, width = _straight_down()
    factor = shadow_factor((64, 64), start, angle, width, torch.tensor([0.2]))[0, 0]
    assert factor.shape == (64, 64)
    assert factor[40, 32] == pytest.approx(0.2)  # in the band, behind the rib
    assert factor[40, 29] == pytest.approx(0.2)  # 3 px off the centre line: inside 8 px
    assert factor[40, 20] == 1.0 and factor[40, 45] == 1.0  # beside the band
    assert factor[5, 32] == 1.0  # between the probe and the rib
    assert factor[40, 28] == pytest.approx(0.6)  # 4 px off the centre line: half dark
    turned = shadow_factor((64, 64), start, torch.tensor([math.radians(20)]), width, 0.2 * ONE)
    assert turned[0, 0, 60, 32 + round(50 * math.tan(math.radians(20)))] == pytest.approx(0.2)


def test_a_shadow_over_a_landmark_is_not_applied():
    start, angle, width = _straight_down()
    points = torch.tensor(
        [
            [[32.0, 40.0], [float("nan"), float("nan")]],  # in the band
            [[10.0, 40.0], [float("nan"), float("nan")]],  # beside it
            [[32.0, 2.0], [50.0, 50.0]],  # above the rib, and beside
            [[37.5, 30.0], [10.0, 10.0]],  # 1.5 px outside the band: within the clearance
        ]
    )
    spared = shadow_spares(points, start.expand(4, 2), angle.expand(4), width.expand(4))
    assert spared.tolist() == [False, True, True, False]


def test_shadow_settings_are_checked():
    for bad in (
        {"shadow_probability": 1.5},
        {"shadow_width_fraction": (0.2, 0.1)},
        {"shadow_width_fraction": (0.0, 0.1)},
        {"shadow_transmission": (0.5, 1.2)},
    ):
        with pytest.raises(ValueError, match="shadow"):
            AugmentConfig(**bad)


def test_the_device_path_draws_no_shadow_by_default_and_shadows_batches_when_asked():
    generator = torch.Generator().manual_seed(0)
    assert draw_augmentation(AugmentConfig(), 4, (64, 64), generator).shadow is None
    still = AugmentConfig(translate_fraction=0.0, scale_range=(1.0, 1.0), gamma_range=(1.0, 1.0))
    shadowed = AugmentConfig(**{**vars(still), "shadow_probability": 1.0})
    image, kept = torch.ones(16, 1, 64, 64), torch.ones(16, 1, 64, 64)
    points = torch.full((16, 2, 2), float("nan"), dtype=torch.float64)
    points[:, 0] = torch.tensor([5.0, 60.0], dtype=torch.float64)  # a corner, rarely covered
    draw = draw_augmentation(shadowed, 16, (64, 64), torch.Generator().manual_seed(1))
    pixels, kept_out, moved = augment_batch(image, kept, points, draw)
    torch.testing.assert_close(moved, points, equal_nan=True)  # no geometric change
    torch.testing.assert_close(kept_out, kept)  # the mask is not shadowed
    darkest = pixels.amin(dim=(1, 2, 3))
    low, high = shadowed.shadow_transmission
    assert ((darkest >= low - 1e-6) & (darkest <= 1.0)).all()
    assert (darkest <= high + 1e-6).sum() >= 12  # nearly every image has its shadow
    spared = shadow_spares(moved, draw.shadow.start, draw.shadow.angle, draw.shadow.width)
    assert (darkest[~spared] == 1.0).all()  # those that would cover the corner have none


def test_the_cpu_path_adds_the_shadow_after_the_same_geometry(manifest):  # noqa: F811
    plain_config = AugmentConfig(rotation_deg=10.0)
    shadowed_config = AugmentConfig(rotation_deg=10.0, shadow_probability=1.0)
    datasets = [
        UltrasoundDataset(
            manifest,
            manifest.records[:1],
            config=CONFIG,
            codec=CODEC,
            augment=True,
            seed=7,
            augment_config=config,
        )
        for config in (plain_config, shadowed_config)
    ]
    darker = 0
    for epoch in range(8):
        for ds in datasets:
            ds.set_epoch(epoch)
        plain, shadowed = datasets[0][0], datasets[1][0]
        torch.testing.assert_close(shadowed["landmarks"], plain["landmarks"])
        assert (shadowed["image"] <= plain["image"] + 1e-6).all()
        present = shadowed["landmark_mask"] > 0
        for x, y in shadowed["landmarks"][present].numpy():  # never over a landmark
            assert shadowed["image"][0, round(y), round(x)] == plain["image"][0, round(y), round(x)]
        darker += bool((shadowed["image"] < plain["image"] - 0.05).any())
    assert darker >= 4  # most epochs' draws spare the two landmarks
