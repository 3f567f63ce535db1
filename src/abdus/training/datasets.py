"""The data of a training run: split by patient, checked, cached, and loaded in resume-exact order.

Stage 1 (landmarks) uses only the training images with at least one annotated landmark; the
organs are shuffled together in every batch (paper 2.2: "each batch can include a mixture of
different organs"). Images whose view has no landmark task ("others", liver trans, left liver)
are left out of stage 1: they would contribute no loss (Eq. 2 sums over the landmarks an image
has) and only cost time. Stage 2 (views) trains on every training image.

After every epoch the model is scored on the validation patients (``config.val_fraction``),
never on the test patients: the test split is for ``abdus evaluate`` alone.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from abdus.choices import DataPlacement, Model
from abdus.data.dataset import UltrasoundDataset
from abdus.data.heatmaps import HeatmapCodec
from abdus.data.splits import split_by_patient
from abdus.errors import AbdusInputError
from abdus.io.manifest import load_manifest
from abdus.taxonomy import LANDMARK_INDEX, LANDMARK_TASK, NUM_LANDMARKS, TASK_BY_NAME
from abdus.training.config import TrainConfig
from abdus.training.device_data import (
    DeviceBatches,
    DeviceSamples,
    fits_on_device,
    shard_positions,
)
from abdus.training.distributed import DistributedContext, barrier
from abdus.training.runtime import seed_worker
from abdus.training.stages import LANDMARKS, STAGES, task_of

CACHE_NAME = "cache"  # the run folder's preprocessed-sample cache (when cache_dir is None)


@dataclass
class TrainingData:
    """The datasets of a run. ``train`` / ``val`` hold every image of their split;
    ``*_landmark_indices`` index the images with at least one annotated landmark."""

    manifest_path: Path
    train: Dataset
    val: Dataset | None
    train_landmark_indices: list[int]
    val_landmark_indices: list[int]
    landmark_weights: torch.Tensor | None = None  # (L,), ``landmark_channel_weights``

    def stage_train_set(self, stage: str) -> Dataset:
        """Training images of ``stage``: annotated ones for landmarks, all for views (whose
        samples then skip the heat-map targets they do not use)."""
        if hasattr(self.train, "with_heatmaps"):
            self.train.with_heatmaps = task_of(stage) == LANDMARKS
        if task_of(stage) == LANDMARKS:
            return Subset(self.train, self.train_landmark_indices)
        return self.train

    def stage_train_indices(self, stage: str) -> list[int]:
        """Positions in ``train`` of the training images of ``stage``."""
        if task_of(stage) == LANDMARKS:
            return list(self.train_landmark_indices)
        return list(range(len(self.train)))

    def stage_val_set(self, stage: str) -> Dataset | None:
        """Validation images scored after each epoch of ``stage`` (None: none to score)."""
        if self.val is None:
            return None
        if task_of(stage) == LANDMARKS:
            idx = self.val_landmark_indices
            return Subset(self.val, idx) if idx else None
        return self.val


def landmark_channel_weights(records, balance: float) -> torch.Tensor | None:
    """Per-landmark loss weights (L,) from how many training images have each landmark:
    ``count ** -balance``, scaled so that the mean over the annotated images of each image's
    mean weight over its landmarks is 1 (the loss keeps its scale). ``balance`` 0: None (every
    landmark alike, the paper's Eq. 2); 1: every landmark weighs as much in the sum over an
    epoch, so that the liver's and spleen's landmarks, on half as many images as the kidneys'
    (which both kidney views share), count as much. Landmarks no image has get weight 0."""
    if balance == 0:
        return None
    counts = torch.zeros(NUM_LANDMARKS, dtype=torch.float64)
    for r in records:
        for name in r.reference.landmarks:
            counts[LANDMARK_INDEX[name]] += 1
    seen = counts > 0
    weight = torch.where(seen, counts.clamp_min(1) ** -balance, torch.zeros_like(counts))
    per_image = [
        sum(float(weight[LANDMARK_INDEX[n]]) for n in r.reference.landmarks)
        / len(r.reference.landmarks)
        for r in records
        if r.reference.landmarks
    ]
    if not per_image:
        return None
    return (weight * len(per_image) / sum(per_image)).to(torch.float32)


def _tasks_with_landmarks(records) -> set[str]:
    return {LANDMARK_TASK[name] for r in records for name in r.reference.landmarks}


def check_landmark_coverage(records, config: TrainConfig, stages: tuple[str, ...], path) -> None:
    """Landmark models need annotations: ``sfcn`` in every task it builds, the multi-task
    models in at least one (a warning names the tasks without any). AbdusInputError otherwise."""
    if LANDMARKS not in stages:
        return
    have = _tasks_with_landmarks(records)
    task = config.model_options.task  # sfcn: the one task it builds (None: all)
    wanted = [task] if task else list(TASK_BY_NAME)
    missing = [t for t in wanted if t not in have]
    if config.model == Model.SFCN and missing:
        raise AbdusInputError(
            f"no training image has landmarks of task(s) {', '.join(missing)}; the sfcn model "
            "trains one network per task and needs annotations for each",
            path,
        )
    if not have:
        raise AbdusInputError(
            f"no training image has landmarks; the {config.model} model needs landmark "
            "annotations (or train the stl view classifier)",
            path,
        )
    if missing:
        warnings.warn(
            f"{path}: no training landmarks for task(s) {', '.join(missing)}; the model "
            "will not learn them",
            stacklevel=2,
        )


def cache_dir_of(config: TrainConfig, run_dir: Path) -> Path:
    """Where a run keeps its preprocessed-sample cache (``config.cache_dir`` or <run>/cache)."""
    return Path(config.cache_dir) if config.cache_dir else Path(run_dir) / CACHE_NAME


def cache_build_workers(config: TrainConfig, images: int, most: int = 8) -> int:
    """Processes that preprocess the missing samples of ``images`` into the cache (rank 0):
    the loader's ``num_workers`` when set, else, for 200 images or more, one per CPU this
    process may use (at most ``most``; 0 = this process). The cache is the same either way."""
    if config.num_workers > 0:
        return config.num_workers
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = min(most, cpus or 1)
    return cpus if cpus > 1 and images >= 200 else 0


def load_training_data(
    data: str | Path,
    config: TrainConfig,
    codec: HeatmapCodec,
    run_dir: Path,
    stages: tuple[str, ...],
    ctx: DistributedContext,
) -> TrainingData:
    """Load and split the manifest (by patient), check it, build the cached datasets.

    Rank 0 builds the preprocessed-sample cache first; the other ranks then read it.
    """
    manifest = load_manifest(data)
    path = Path(data)
    split = split_by_patient(
        manifest.records,
        test_fraction=config.test_fraction,
        val_fraction=config.val_fraction,
        seed=config.seed,
    )
    if not split["train"]:
        raise AbdusInputError("no training images (empty manifest or training split)", path)
    check_landmark_coverage(split["train"], config, stages, path)
    cache = cache_dir_of(config, run_dir)
    images = len(split["train"]) + len(split["val"])

    def build() -> tuple[Dataset, Dataset | None]:
        common = {
            "config": config.preprocess,
            "codec": codec,
            "cache_dir": cache,
            "build_workers": cache_build_workers(config, images) if ctx.is_main else 0,
        }
        train = UltrasoundDataset(
            manifest,
            split["train"],
            augment=config.augment,
            augment_config=config.augmentation,
            seed=config.seed,
            **common,
        )
        train.with_region = False  # training decodes nothing
        val = UltrasoundDataset(manifest, split["val"], **common) if split["val"] else None
        return train, val

    if ctx.is_main:
        train, val = build()
    barrier(ctx)
    if not ctx.is_main:
        train, val = build()

    def annotated(records) -> list[int]:
        return [i for i, r in enumerate(records) if r.reference.landmarks]

    return TrainingData(
        path,
        train,
        val,
        annotated(split["train"]),
        annotated(split["val"]),
        landmark_channel_weights(split["train"], config.landmark_balance),
    )


def make_loader(
    dataset: Dataset, batch_size: int, config: TrainConfig, ctx: DistributedContext, shuffle: bool
) -> DataLoader:
    """A loader whose order depends only on (seed, epoch): ``DistributedSampler`` (also in one
    process) and a generator reseeded each epoch by ``start_epoch``."""
    sampler = DistributedSampler(
        dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=config.seed
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        worker_init_fn=seed_worker,
        generator=torch.Generator(),
        pin_memory=ctx.device.type == "cuda",
        # A final batch of one image would break BatchNorm's batch statistics.
        drop_last=len(sampler) % batch_size == 1 and len(sampler) > 1,
    )


def data_on_device(data: TrainingData, stage: str, config: TrainConfig, ctx) -> bool:
    """Whether ``stage`` trains from ``DeviceBatches`` (``config.data_on_device``): "on" and
    "off" say so; "auto" when the cache-backed training set fits the CUDA device
    (``device_data.fits_on_device``). "on" needs the cache-backed ``UltrasoundDataset``."""
    placement = config.data_on_device
    if placement == DataPlacement.OFF:
        return False
    cached = isinstance(data.train, UltrasoundDataset)
    if placement == DataPlacement.ON:
        if not cached:
            raise ValueError("data_on_device 'on' needs the cached UltrasoundDataset")
        return True
    count = len(data.stage_train_indices(stage))
    return cached and fits_on_device(
        -(-count // ctx.world_size), config.preprocess.size, ctx.device
    )


def train_batches(
    data: TrainingData, stage: str, batch_size: int, config: TrainConfig, ctx: DistributedContext
) -> DataLoader | DeviceBatches:
    """The training batches of ``stage``: on the device (``device_data``, this rank's shard)
    or from the CPU loader (``make_loader``), as ``data_on_device`` decides."""
    if not data_on_device(data, stage, config, ctx):
        return make_loader(data.stage_train_set(stage), batch_size, config, ctx, True)
    indices = data.stage_train_indices(stage)
    shard = shard_positions(len(indices), config.seed, ctx.rank, ctx.world_size)
    samples = DeviceSamples.from_dataset(
        data.train, [indices[p] for p in shard.tolist()], ctx.device
    )
    return DeviceBatches(
        samples,
        data.train.codec,
        batch_size,
        seed=config.seed,
        rank=ctx.rank,
        augment=config.augment,
        augmentation=config.augmentation,
        with_heatmaps=task_of(stage) == LANDMARKS,
    )


def start_epoch(loader: DataLoader | DeviceBatches, seed: int, stage: str, epoch: int) -> None:
    """Set the data order and the worker seeds of ``epoch`` of ``stage`` (resume-exact)."""
    key = STAGES.index(stage) * 100_000 + epoch
    if isinstance(loader, DeviceBatches):
        loader.set_epoch(key)
        return
    loader.sampler.set_epoch(key)
    loader.generator.manual_seed(seed * 1_000_003 + key)
    dataset = loader.dataset
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    if hasattr(dataset, "set_epoch"):  # augmentation draws depend on (seed, epoch, index)
        dataset.set_epoch(key)
