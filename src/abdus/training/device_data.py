"""A stage's training images held on the training device, batched, augmented and given their
heat-map targets there (``TrainConfig.data_on_device``).

The preprocessed cache (``abdus.data.dataset.SampleCache``: uint8 pixels and kept mask, model
px) of the stage's images moves onto the device once, with the landmarks (model px, float64,
NaN where absent), views and pixel spacings. Each batch is then gathered by index, converted
and masked as ``UltrasoundDataset.__getitem__`` does, its heat maps rendered from the
coordinates by the same ``HeatmapCodec.encode_torch``, and, with ``augment``, changed by
``device_augment``: no CPU worker, no host-to-device copy and no host sync per step.

Order. In one process the batches are those of ``datasets.make_loader`` (the
``DistributedSampler`` order of (seed, stage, epoch), the same short-last-batch rule); with
augmentation off every tensor is bit for bit the loader's (tests/training/test_device_data.py).
Under DDP each rank holds only its shard: the stage's images are partitioned once, by a
permutation of ``seed``, padded as ``DistributedSampler`` pads, and each epoch shuffles within
the shard. So every rank sees ceil(N / world) images per epoch, as with the loader, but the
partition stays fixed (the loader re-deals the images every epoch).

Batches carry the keys of the loader's (``loops`` module doc) without ``region`` (training
decodes nothing); ``heatmaps`` only while ``with_heatmaps``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from abdus.data.dataset import IGNORE_VIEW, AugmentConfig, UltrasoundDataset
from abdus.data.heatmaps import HeatmapCodec
from abdus.training.device_augment import augment_batch, draw_augmentation

# "auto" places the data on a CUDA device when its bytes are at most this fraction of the
# device's free memory: the rest is for the network's activations (the paper preset at batch 4
# peaked at 19 GiB of an H100's 80, docs/benchmarks.md).
AUTO_MEMORY_FRACTION = 0.25


@dataclass(frozen=True)
class DeviceSamples:
    """N samples as tensors on one device.

    stored (N, 2, H, W) uint8: pixels 0-255 and kept mask 0/1 (model px, the cache's layout);
    points (N, C, 2) float64 model px, NaN where absent; views (N,) int64 (``IGNORE_VIEW``
    where unread); spacing_mm (N,) float64 mm per model px (NaN unknown); index (N,) int64,
    the sample's position in its dataset.
    """

    stored: torch.Tensor
    points: torch.Tensor
    views: torch.Tensor
    spacing_mm: torch.Tensor
    index: torch.Tensor

    def __len__(self) -> int:
        return int(self.stored.shape[0])

    @classmethod
    def from_dataset(
        cls, dataset: UltrasoundDataset, indices: Sequence[int], device: torch.device
    ) -> DeviceSamples:
        """The samples ``indices`` of ``dataset``, read from its cache onto ``device``."""
        idx = list(indices)
        H, W = dataset.config.size
        stored = torch.empty((len(idx), 2, H, W), dtype=torch.uint8)
        for row, i in enumerate(idx):
            stored[row] = torch.from_numpy(dataset.cache.load(i))
        spacing = [dataset.transform(i).model_spacing_mm for i in idx]
        spacing = [math.nan if s is None else float(s) for s in spacing]
        points = dataset.landmarks[idx] if idx else np.zeros((0, *dataset.landmarks.shape[1:]))
        return cls(
            stored=stored.to(device),
            points=torch.as_tensor(points, dtype=torch.float64).to(device),
            views=torch.as_tensor(dataset.views[idx], dtype=torch.int64).to(device),
            spacing_mm=torch.tensor(spacing, dtype=torch.float64).to(device),
            index=torch.tensor(idx, dtype=torch.int64).to(device),
        )


def samples_nbytes(count: int, size: tuple[int, int]) -> int:
    """Device bytes of ``count`` samples on an (H, W) canvas (the uint8 images dominate)."""
    return count * (2 * size[0] * size[1] + 14 * 2 * 8 + 3 * 8)


def fits_on_device(count: int, size: tuple[int, int], device: torch.device) -> bool:
    """``DataPlacement.AUTO``: True on a CUDA device whose free memory holds the samples
    ``1 / AUTO_MEMORY_FRACTION`` times over; False on the CPU (the loader stays the default
    there: it overlaps loading with the step in worker processes)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return samples_nbytes(count, size) <= AUTO_MEMORY_FRACTION * free


def shard_positions(count: int, seed: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's positions among ``count`` samples (CPU int64): all of them, in order, in one
    process; else a ``seed`` permutation padded to a multiple of ``world_size`` (by repeating
    its start, as ``DistributedSampler``) and dealt out, ``rank::world_size``."""
    if world_size == 1:
        return torch.arange(count)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    total = math.ceil(count / world_size) * world_size
    padded = torch.cat([order] * math.ceil(total / max(count, 1)))[:total]
    return padded[rank:total:world_size]


class DeviceBatches:
    """Training batches of one stage from ``DeviceSamples`` (module doc): iterate after
    ``set_epoch``; ``len`` is the number of batches of an epoch.

    Args:
        samples: this rank's shard, on the training device.
        codec: heat-map targets (the loader's codec).
        batch_size: images per step of this process.
        seed: the run's seed (order as ``DistributedSampler(seed=seed)``, augmentation draws).
        rank: this process's rank (its augmentation stream).
        augment: apply ``augmentation`` (default ranges when None) on the device.
        with_heatmaps: render heat-map targets (the landmark stage).
    """

    def __init__(
        self,
        samples: DeviceSamples,
        codec: HeatmapCodec,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        augment: bool = False,
        augmentation: AugmentConfig | None = None,
        with_heatmaps: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.samples, self.codec, self.batch_size = samples, codec, batch_size
        self.seed, self.rank = seed, rank
        self.augment, self.with_heatmaps = augment, with_heatmaps
        self.augmentation = augmentation or AugmentConfig()
        self.device = samples.stored.device
        self.epoch = 0
        n = len(samples)
        # A final batch of one image would break BatchNorm's statistics (as make_loader).
        self.drop_last = n % batch_size == 1 and n > 1

    def __len__(self) -> int:
        n = len(self.samples)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """The order and the augmentation draws of ``epoch`` (``datasets.start_epoch``'s key)."""
        self.epoch = int(epoch)

    def epoch_order(self) -> torch.Tensor:
        """Positions in ``samples`` of this epoch, CPU int64 (``DistributedSampler``'s
        ``randperm`` of seed + epoch)."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(len(self.samples), generator=g)

    def _generator(self) -> torch.Generator:
        seed = np.random.SeedSequence([self.seed, self.epoch, self.rank]).generate_state(1)[0]
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = self.epoch_order().to(self.device)  # one small copy per epoch
        generator = self._generator() if self.augment else None
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield self.batch(order[start : start + self.batch_size], generator)

    def batch(
        self, positions: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """The batch of ``positions`` (device int64) as ``UltrasoundDataset`` samples stacked;
        augmented with draws from ``generator`` when given."""
        s = self.samples
        stored = s.stored[positions]  # (B, 2, H, W) uint8
        image = stored[:, :1].float().div_(255.0)  # (B, 1, H, W) [0, 1]
        kept = stored[:, 1:].float()
        points = s.points[positions]  # (B, C, 2) float64 model px, NaN where absent
        spacing = s.spacing_mm[positions]
        if generator is not None:
            draw = draw_augmentation(self.augmentation, len(positions), self.codec.size, generator)
            image, kept, points = augment_batch(image, kept, points, draw)
            spacing = spacing / draw.zoom
        present = self.codec.inside_torch(points)  # (B, C)
        views = s.views[positions]
        batch = {
            "image": image,
            "class_image": image * (kept >= 0.5),
            "landmark_mask": present.float(),
            "landmarks": torch.where(present[..., None], points, 0.0).float(),
            "view": views,
            "has_view": views != IGNORE_VIEW,
            "index": s.index[positions],
            "model_spacing_mm": spacing.float(),
        }
        if self.with_heatmaps:
            finite = torch.isfinite(points).all(dim=-1)
            batch["heatmaps"] = self.codec.encode_torch(points, finite)  # (B, C, H, W)
        return batch
