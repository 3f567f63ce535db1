"""The device-resident data path: the loader's batches bit for bit without augmentation, heat-map
peaks that follow the augmented image, per-rank shards, and where "auto" puts the data."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from training_synthetic import synthetic_data, tiny_config, with_epochs

from abdus.data.dataset import AugmentConfig
from abdus.data.heatmaps import HeatmapCodec
from abdus.training.datasets import (
    data_on_device,
    load_training_data,
    make_loader,
    start_epoch,
    train_batches,
)
from abdus.training.device_data import (
    DeviceBatches,
    DeviceSamples,
    samples_nbytes,
    shard_positions,
)
from abdus.training.distributed import DistributedContext, init_distributed
from abdus.training.runlog import read_metrics
from abdus.training.stages import LANDMARKS, REFIT, STAGES, VIEWS, codec_of
from abdus.training.trainer import Trainer


@pytest.fixture(scope="module")
def cohort_data(cohort, cohort_cache, tmp_path_factory):
    """The tiny preset's training data of the shared cohort (CPU, cached samples)."""
    config = tiny_config(cache_dir=str(cohort_cache), data_on_device="on")
    run = tmp_path_factory.mktemp("run")
    ctx = init_distributed("cpu")
    return config, load_training_data(cohort, config, codec_of(config), run, STAGES, ctx), ctx


@pytest.mark.parametrize("stage", [LANDMARKS, VIEWS])
def test_device_batches_equal_the_loader_bit_for_bit_without_augmentation(cohort_data, stage):
    config, data, ctx = cohort_data
    assert not config.augment
    loader = make_loader(data.stage_train_set(stage), 4, config, ctx, True)
    device = train_batches(data, stage, 4, config, ctx)
    assert isinstance(device, DeviceBatches) and len(device) == len(loader)
    for epoch in (0, 1):
        start_epoch(loader, config.seed, stage, epoch)
        start_epoch(device, config.seed, stage, epoch)
        batches = 0
        for expected, got in zip(loader, device, strict=True):
            assert set(got) == set(expected)
            assert ("heatmaps" in got) == (stage == LANDMARKS)
            for key, value in expected.items():
                assert got[key].dtype == value.dtype, key
                assert torch.equal(got[key], value), f"{stage} epoch {epoch}: {key} differs"
            batches += 1
        assert batches == len(loader)
    orders = []
    for epoch in (0, 1):  # a new order every epoch, as the loader's
        start_epoch(device, config.seed, stage, epoch)
        orders.append(torch.cat([b["index"] for b in device]))
    assert not torch.equal(*orders)
    assert sorted(orders[0].tolist()) == sorted(orders[1].tolist())


def _spots(points: np.ndarray, size: int, sigma: float = 2.0) -> torch.Tensor:
    """(N, 2, H, W) uint8 cache entries: a Gaussian spot at each point (x, y) model px, kept
    mask all 1."""
    yy, xx = np.mgrid[0:size, 0:size]
    stored = np.zeros((len(points), 2, size, size), np.uint8)
    for i, (x, y) in enumerate(points):
        spot = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
        stored[i, 0] = np.rint(255 * spot)
        stored[i, 1] = 1
    return torch.from_numpy(stored)


def test_augmented_heat_map_peak_follows_the_image_spot():
    size, n = 64, 16
    rng = np.random.default_rng(0)
    centres = rng.uniform(20, 44, (n, 2))  # (x, y) model px, inside after any draw below
    points = np.full((n, 14, 2), np.nan)
    points[:, 3] = centres  # one landmark per image, the others absent
    samples = DeviceSamples(
        stored=_spots(centres, size),
        points=torch.from_numpy(points),
        views=torch.zeros(n, dtype=torch.int64),
        spacing_mm=torch.full((n,), 2.0, dtype=torch.float64),
        index=torch.arange(n),
    )
    codec = HeatmapCodec((size, size), sigma_px=2.0)
    augmentation = AugmentConfig(0.1, (0.8, 1.2), 30.0, (0.7, 1.4), (1.0, 1.0))
    batches = DeviceBatches(samples, codec, n, seed=3, augment=True, augmentation=augmentation)
    batches.set_epoch(1)
    (batch,) = list(batches)
    order = batch["index"]
    image_spot, _ = codec.decode(batch["image"])  # (B, 1, 2): the spot's centre in the image
    heat_peak, _ = codec.decode(batch["heatmaps"][:, 3:4])  # (B, 1, 2)
    moved = (heat_peak[:, 0] - torch.from_numpy(centres[order]).float()).norm(dim=-1)
    assert (moved > 1.0).sum() >= n - 2, "the augmentation barely moved the landmarks"
    error = (image_spot[:, 0] - heat_peak[:, 0]).norm(dim=-1)  # model px
    assert error.max() < 0.5, error
    assert torch.allclose(heat_peak[:, 0], batch["landmarks"][:, 3], atol=0.05)
    assert batch["landmark_mask"][:, 3].all() and not batch["landmark_mask"][:, 4].any()
    zoom = 2.0 / batch["model_spacing_mm"]  # spacing / zoom: the mm per px of the new image
    assert ((zoom >= 0.8) & (zoom <= 1.2)).all() and zoom.std() > 0.01
    batches.set_epoch(1)
    assert torch.equal(next(iter(batches))["image"], batch["image"])  # seeded by the epoch
    batches.set_epoch(2)
    assert not torch.equal(next(iter(batches))["image"], batch["image"])


def test_shards_deal_out_every_sample_as_distributed_sampler_counts():
    assert torch.equal(shard_positions(7, 0, 0, 1), torch.arange(7))
    for count, world in ((7, 2), (9, 3), (10, 4)):
        shards = [shard_positions(count, 5, rank, world) for rank in range(world)]
        assert all(len(s) == math.ceil(count / world) for s in shards)
        assert set(torch.cat(shards).tolist()) == set(range(count))
        assert len(torch.cat(shards)) - count == (-count) % world  # only the padding repeats
    assert not torch.equal(shard_positions(10, 1, 0, 2), shard_positions(10, 2, 0, 2))


def test_auto_keeps_the_cpu_loader_and_on_needs_the_cached_dataset():
    config = tiny_config()
    ctx = init_distributed("cpu")
    assert config.data_on_device == "auto"
    assert not data_on_device(synthetic_data(config, 12, 2), LANDMARKS, config, ctx)
    on = dataclasses.replace(config, data_on_device="on")
    with pytest.raises(ValueError, match="needs the cached UltrasoundDataset"):
        data_on_device(synthetic_data(config, 12, 2), LANDMARKS, on, ctx)
    off = dataclasses.replace(config, data_on_device="off")
    assert not data_on_device(synthetic_data(config, 12, 2), VIEWS, off, ctx)


def test_each_rank_holds_its_shard(cohort_data):
    config, data, _ = cohort_data
    seen = []
    for rank in (0, 1):
        ctx = DistributedContext(rank, 2, rank, torch.device("cpu"))
        batches = train_batches(data, LANDMARKS, 4, config, ctx)
        assert len(batches.samples) == math.ceil(len(data.train_landmark_indices) / 2)
        start_epoch(batches, config.seed, LANDMARKS, 0)
        seen.append(torch.cat([b["index"] for b in batches]).tolist())
    assert set(seen[0]) | set(seen[1]) == set(data.train_landmark_indices)


def test_auto_is_the_loader_on_the_cpu_even_for_the_cached_dataset(cohort_data):
    config, data, ctx = cohort_data
    auto = dataclasses.replace(config, data_on_device="auto")
    assert not data_on_device(data, LANDMARKS, auto, ctx)
    assert isinstance(train_batches(data, LANDMARKS, 4, auto, ctx), torch.utils.data.DataLoader)
    assert samples_nbytes(10, (512, 512)) > 10 * 2 * 512 * 512  # the uint8 pair, plus labels


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_batches_on_cuda_match_the_loader(cohort_data):
    config, data, _ = cohort_data
    cuda = DistributedContext(0, 1, 0, torch.device("cuda"))
    loader = make_loader(data.stage_train_set(LANDMARKS), 4, config, cuda, True)
    device = train_batches(data, LANDMARKS, 4, config, cuda)
    start_epoch(loader, config.seed, LANDMARKS, 0)
    start_epoch(device, config.seed, LANDMARKS, 0)
    for expected, got in zip(loader, device, strict=True):
        for key, value in expected.items():
            assert got[key].device.type == "cuda", key
            # exp on the GPU may differ in the last bit: heat maps to float32 resolution.
            tolerance = 1e-6 * config.heatmap_amplitude if key == "heatmaps" else 0.0
            torch.testing.assert_close(got[key].cpu(), value, rtol=0, atol=tolerance)


def test_the_demos_fast_path_trains_every_stage_on_the_cpu(cohort_data, tmp_path, one_thread):
    """The ``demo`` preset's CPU settings on the tiny network: channels-last, the images on the
    device, the PatchGAN at half the input size; landmarks, views and the refit all train."""
    config, data, ctx = cohort_data
    critic = dataclasses.replace(config.discriminator_options, downsample=2)
    fast = dataclasses.replace(config, channels_last=True, discriminator_options=critic)
    config = with_epochs(fast, 1, 1, 1)
    assert all(data_on_device(data, stage, config, ctx) for stage in (LANDMARKS, VIEWS, REFIT))
    trainer = Trainer(config, tmp_path, data, ctx)
    trainer.run()
    trainer.finish()
    records = read_metrics(tmp_path)
    assert [r["stage"] for r in records] == [LANDMARKS, VIEWS, REFIT]
    assert all(math.isfinite(r["train"]["loss"]) for r in records)
    assert isinstance(trainer.discriminator.model[0], torch.nn.AvgPool2d)
