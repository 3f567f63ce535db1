"""A torch Dataset over a cache of preprocessed images, with Gaussian heat-map targets.

Each image is read once (``abdus.io.reader.read_frame``), preprocessed (``preprocess_image``:
0.5 mm, 512 x 512 by default, paper 2.1) and stored as uint8 ``(2, H, W)`` = (pixels, kept mask)
in model pixels, so later epochs only load 2 x H x W bytes per sample. On disk, one
``<key>.npy`` and ``<key>.json`` (the source <-> model transform) per image, where ``key``
hashes what the stored pixels depend on: the file (path, size, mtime), frame, manifest spacing
and overlay boxes, the preprocessing config and ``CACHE_VERSION``. A change of any of these gives
a new key, so the sample is rebuilt; labels are not part of the key (landmarks are mapped through
the stored transform on every load). Writes are atomic. ``cache_dir=None`` keeps the cache in
memory.

Sample (``__getitem__``), all tensors; H, W model px; the default collate stacks them:
    image (1, H, W) float32 [0, 1]       landmark input, every pixel kept
    class_image (1, H, W) float32        classification input, icons / text zeroed (paper 2.1)
    region (1, H, W) bool                where a landmark may be decoded (``landmark_region``;
                                         only while ``with_region``)
    heatmaps (14, H, W) float32          Gaussian targets from ``codec`` (zeros where absent;
                                         only while ``with_heatmaps``)
    landmark_mask (14,) float32          1 where the landmark exists and lies on the canvas
    landmarks (14, 2) float32            (x, y) model px, 0 where absent
    view int64                           class index; -100 (torch's ignore_index) if no view
    has_view bool                        False when the chosen reader did not read this image
    index int64                          position in this dataset
    model_spacing_mm float32             mm per model px (NaN without spacing)
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from abdus.data.heatmaps import HeatmapCodec
from abdus.data.masking import landmark_region
from abdus.data.preprocess import PreprocessConfig, SourceToModel, preprocess_image
from abdus.data.shadows import (
    MAX_TURN_DEG,
    START_X_FRACTION,
    START_Y_FRACTION,
    shadow_factor,
    shadow_spares,
)
from abdus.io.atomic import atomic_path, atomic_write_json
from abdus.io.manifest import ImageRecord, Manifest, landmark_array
from abdus.io.reader import read_frame
from abdus.io.types import UltrasoundImage
from abdus.progress import progress
from abdus.taxonomy import NUM_LANDMARKS, VIEW_INDEX

CACHE_VERSION = 1  # bump when preprocessing or masking changes what is stored
READERS = ("reference", "second_read", "truth")
IGNORE_VIEW = -100  # torch.nn.functional.cross_entropy's default ignore_index


@dataclass(frozen=True)
class AugmentConfig:
    """Small random changes for training: translation, isotropic scaling, rotation, intensity
    gamma and gain, acoustic shadows.

    ``translate_fraction``: max shift as a fraction of the canvas side (model px).
    ``scale_range``: zoom factor range about the canvas centre. ``rotation_deg``: max rotation
    about the canvas centre, degrees either way (a probe held a little turned).
    ``gamma_range``: exponent range, drawn log-uniformly (pixels ** gamma on [0, 1]).
    ``gain_range``: brightness factor range after gamma (a scanner's overall gain), clipped to
    [0, 1]. ``shadow_probability``: the chance that an image gets one acoustic shadow
    (``abdus.data.shadows``: a dark band behind a rib, never over a landmark),
    ``shadow_width_fraction`` its width range as a fraction of the canvas width and
    ``shadow_transmission`` the range of the echo it keeps. The defaults (no rotation, gain 1,
    no shadows) are the augmentation of abdus 0.1 runs.
    """

    translate_fraction: float = 0.05
    scale_range: tuple[float, float] = (0.9, 1.1)
    rotation_deg: float = 0.0
    gamma_range: tuple[float, float] = (0.7, 1.4)
    gain_range: tuple[float, float] = (1.0, 1.0)
    shadow_probability: float = 0.0
    shadow_width_fraction: tuple[float, float] = (0.04, 0.12)
    shadow_transmission: tuple[float, float] = (0.05, 0.35)

    def __post_init__(self) -> None:
        positive = (*self.scale_range, *self.gamma_range, *self.gain_range)
        if not (0.0 <= self.translate_fraction < 0.5 and 0.0 <= self.rotation_deg <= 180.0):
            raise ValueError("augmentation needs 0 <= translate_fraction < 0.5 and "
                             f"0 <= rotation_deg <= 180, got {self}")  # fmt: skip
        if min(positive) <= 0:
            raise ValueError(f"augmentation scale, gamma and gain ranges must be > 0, got {self}")
        (w_low, w_high), (t_low, t_high) = self.shadow_width_fraction, self.shadow_transmission
        if not (
            0.0 <= self.shadow_probability <= 1.0
            and 0.0 < w_low <= w_high < 0.5
            and 0.0 <= t_low <= t_high <= 1.0
        ):
            raise ValueError(
                "augmentation needs shadow_probability in [0, 1], shadow_width_fraction within "
                f"(0, 0.5) and shadow_transmission within [0, 1], each low <= high, got {self}"
            )


def read_record_image(manifest: Manifest, record: ImageRecord) -> UltrasoundImage:
    """Read a record's frame; the manifest spacing is used only when the file has none."""
    spacing = record.spacing_mm
    isotropic = spacing is not None and spacing[0] == spacing[1]
    image = read_frame(
        manifest.path_of(record),
        record.frame,
        spacing_mm=spacing[0] if isotropic else None,
        spacing_source="manifest",
    )
    if spacing is not None and image.spacing_mm is None:  # anisotropic manifest spacing
        image = replace(image, spacing_mm=spacing, spacing_source="manifest", warnings=[])
    return image


def cache_key(manifest: Manifest, record: ImageRecord, config: PreprocessConfig) -> str:
    """Hash of everything the cached pixels of ``record`` depend on (see module doc)."""
    path = manifest.path_of(record)
    stat = path.stat() if path.exists() else None
    content = {
        "version": CACHE_VERSION,
        "config": {"spacing_mm": config.spacing_mm, "size": list(config.size)},
        "file": str(path.resolve()),
        "file_stat": None if stat is None else [stat.st_size, stat.st_mtime_ns],
        "frame": record.frame,
        "spacing_mm": None if record.spacing_mm is None else list(record.spacing_mm),
        "overlay_boxes": [list(box) for box in record.overlay_boxes],
    }
    blob = json.dumps(content, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:32]


def build_sample(
    manifest: Manifest, record: ImageRecord, config: PreprocessConfig
) -> tuple[np.ndarray, SourceToModel]:
    """Read and preprocess one record -> ((2, H, W) uint8 (pixels 0-255, kept 0/1), transform)."""
    image = read_record_image(manifest, record)
    out = preprocess_image(image, config, overlay_boxes=record.overlay_boxes or None)
    stored = np.stack((np.rint(out.pixels * 255.0), out.mask)).astype(np.uint8)
    return stored, out.transform


# What the build processes share: (manifest, config), set by _start_worker. With the "fork"
# start method the child inherits it, so no job carries the manifest (megabytes) again.
_WORKER_INPUTS: tuple[Manifest, PreprocessConfig] | None = None


def _start_worker(manifest: Manifest, config: PreprocessConfig) -> None:
    global _WORKER_INPUTS
    torch.set_num_threads(1)  # as DataLoader workers: no OpenMP pool in forked children
    _WORKER_INPUTS = (manifest, config)


def _build_one(record: ImageRecord) -> tuple[np.ndarray, SourceToModel]:
    manifest, config = _WORKER_INPUTS
    return build_sample(manifest, record, config)


class SampleCache:
    """The stored (2, H, W) uint8 samples and transforms, on disk or in memory.

    ``workers`` > 0 preprocesses missing samples in that many processes (the results are
    written by this process, atomically).
    """

    def __init__(
        self,
        manifest: Manifest,
        records: Sequence[ImageRecord],
        config: PreprocessConfig,
        cache_dir: Path | None,
        workers: int = 0,
    ) -> None:
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.keys = [cache_key(manifest, r, config) for r in records]
        self._memory: list[np.ndarray] = [np.empty(0, np.uint8)] * len(records)
        found = [self._load_transform(key) for key in self.keys]
        missing = [i for i, transform in enumerate(found) if transform is None]
        self.built = len(missing)  # samples preprocessed by this call (the rest were on disk)
        jobs = [records[i] for i in missing]
        if workers > 0 and len(jobs) > 1:
            context = multiprocessing.get_context("fork")
            start = {"initializer": _start_worker, "initargs": (manifest, config)}
            with ProcessPoolExecutor(workers, mp_context=context, **start) as pool:
                self._store_all(found, missing, pool.map(_build_one, jobs, chunksize=8))
        else:
            self._store_all(found, missing, (build_sample(manifest, r, config) for r in jobs))
        self.transforms: list[SourceToModel] = [t for t in found if t is not None]

    def _store_all(
        self,
        found: list[SourceToModel | None],
        missing: list[int],
        results: Iterable[tuple[np.ndarray, SourceToModel]],
    ) -> None:
        """Store each built sample as it arrives, with a progress bar on a terminal."""
        built = zip(missing, results, strict=True)
        for i, (stored, transform) in progress(
            built, "sample cache", total=len(missing), unit="img"
        ):
            found[i] = self._store(i, stored, transform)

    def _store(self, i: int, stored: np.ndarray, transform: SourceToModel) -> SourceToModel:
        if self.cache_dir is None:
            self._memory[i] = stored
            return transform
        key = self.keys[i]
        with atomic_path(self.cache_dir / f"{key}.npy") as tmp:
            np.save(tmp, stored)
        # The JSON is written last: its presence marks a complete entry.
        atomic_write_json(self.cache_dir / f"{key}.json", transform.to_dict())
        return transform

    def _load_transform(self, key: str) -> SourceToModel | None:
        if self.cache_dir is None:
            return None
        meta, data = self.cache_dir / f"{key}.json", self.cache_dir / f"{key}.npy"
        if not (meta.is_file() and data.is_file()):
            return None
        try:
            return SourceToModel.from_dict(json.loads(meta.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError):
            return None  # damaged entry: rebuilt

    def load(self, i: int) -> np.ndarray:
        """(2, H, W) uint8 of sample ``i``."""
        if self.cache_dir is None:
            return self._memory[i]
        return np.load(self.cache_dir / f"{self.keys[i]}.npy")


class UltrasoundDataset(Dataset):
    """Preprocessed images with view labels and heat-map targets (see module doc for a sample).

    Args:
        manifest: the dataset (``root`` resolves ``ImageRecord.file``).
        records: the images of this split.
        config: preprocessing (spacing, canvas).
        codec: heat-map codec; its ``size`` must equal ``config.size``.
        cache_dir: folder of the sample cache, or None to keep it in memory.
        augment: random translation / scale / gamma (off by default), deterministic given
            ``seed``, the epoch (``set_epoch``) and the index.
        seed: augmentation seed.
        reader: which read supplies the labels: "reference", "second_read" or "truth".
        augment_config: augmentation ranges.
        build_workers: processes that preprocess missing cache entries (0: this process).
    """

    def __init__(
        self,
        manifest: Manifest,
        records: Sequence[ImageRecord],
        *,
        config: PreprocessConfig,
        codec: HeatmapCodec,
        cache_dir: Path | None = None,
        augment: bool = False,
        seed: int = 0,
        reader: str = "reference",
        augment_config: AugmentConfig = AugmentConfig(),
        build_workers: int = 0,
    ) -> None:
        if reader not in READERS:
            raise ValueError(f"unknown reader {reader!r}; valid readers: {', '.join(READERS)}")
        if tuple(codec.size) != tuple(config.size):
            raise ValueError(f"codec size {codec.size} differs from the canvas {config.size}")
        self.records = list(records)
        self.config, self.codec, self.reader = config, codec, reader
        self.augment, self.seed, self.augment_config = augment, seed, augment_config
        self.epoch = 0
        # What a sample carries besides the images and labels: heat-map targets (the landmark
        # stage) and the landmark region (decoding). A training loop that needs neither turns
        # them off: they are ~1 ms of the ~2 ms a sample costs.
        self.with_heatmaps = True
        self.with_region = True
        self.cache = SampleCache(manifest, self.records, config, cache_dir, build_workers)
        reads = [getattr(r, reader) for r in self.records]
        self.views = np.array([IGNORE_VIEW if rd is None else VIEW_INDEX[rd.view] for rd in reads])
        transforms = self.cache.transforms
        points = [t.to_model(landmark_array(rd)) for t, rd in zip(transforms, reads, strict=True)]
        # (N, 14, 2) model px, NaN where absent.
        self.landmarks = np.stack(points) if points else np.zeros((0, NUM_LANDMARKS, 2))

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentation draw; call before creating the epoch's DataLoader iterator."""
        self.epoch = int(epoch)

    def transform(self, i: int) -> SourceToModel:
        """Source px <-> model px map of sample ``i`` (without augmentation)."""
        return self.cache.transforms[i]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        stored = torch.from_numpy(self.cache.load(i))
        image = stored[0].float().div_(255.0)  # (H, W)
        kept = stored[1].float()
        points = self.landmarks[i].copy()  # (14, 2) model px, NaN where absent
        spacing = self.cache.transforms[i].model_spacing_mm
        spacing = float("nan") if spacing is None else spacing
        if self.augment:
            image, kept, points, zoom = self._augment(i, image, kept, points)
            spacing /= zoom
        present = self.codec.inside(points)
        kept_mask = kept >= 0.5
        sample = {
            "image": image[None],
            "class_image": (image * kept_mask)[None],
            "landmark_mask": torch.from_numpy(present.astype(np.float32)),
            "landmarks": torch.from_numpy(
                np.where(present[:, None], points, 0.0).astype(np.float32)
            ),
            "view": torch.tensor(int(self.views[i]), dtype=torch.int64),
            "has_view": torch.tensor(bool(self.views[i] != IGNORE_VIEW)),
            "index": torch.tensor(i, dtype=torch.int64),
            "model_spacing_mm": torch.tensor(spacing, dtype=torch.float32),
        }
        if self.with_heatmaps:
            sample["heatmaps"] = torch.from_numpy(self.codec.encode(points)[0])
        if self.with_region:
            sample["region"] = torch.from_numpy(landmark_region(kept_mask.numpy()))[None]
        return sample

    def _augment(
        self, i: int, image: torch.Tensor, kept: torch.Tensor, points: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, float]:
        """Same zoom / rotation / shift for image, mask and landmarks (model px); gamma and gain
        on the image. Returns (image, kept, points, zoom)."""
        cfg = self.augment_config
        rng = np.random.default_rng([self.seed, self.epoch, i])
        H, W = image.shape
        zoom = float(rng.uniform(*cfg.scale_range))
        shift = rng.uniform(-cfg.translate_fraction, cfg.translate_fraction, 2) * (W, H)
        gamma = float(np.exp(rng.uniform(np.log(cfg.gamma_range[0]), np.log(cfg.gamma_range[1]))))
        # Draws only for the changes configured, so 0.1 runs resume with the same draws.
        turn = cfg.rotation_deg
        angle = np.radians(rng.uniform(-turn, turn)) if turn else 0.0
        gain = float(rng.uniform(*cfg.gain_range)) if cfg.gain_range != (1.0, 1.0) else 1.0
        # Forward map of model px: p' = centre + A (p - centre) + shift, A = zoom * rotation.
        cos, sin = np.cos(angle), np.sin(angle)
        forward = zoom * np.array([[cos, -sin], [sin, cos]])
        centre = np.array([(W - 1) / 2, (H - 1) / 2])
        points = centre + (points - centre) @ forward.T + shift
        # Output pixel q samples the input at centre + A^-1 (q - centre - shift). With
        # align_corners=True the normalised coordinate is u = S (q - centre), S = diag(2/(n-1)).
        to_unit = np.diag([2.0 / (W - 1), 2.0 / (H - 1)])
        inverse = np.linalg.inv(forward)
        matrix = to_unit @ inverse @ np.linalg.inv(to_unit)
        offset = -(to_unit @ inverse @ shift)
        theta = torch.tensor(np.concatenate([matrix, offset[:, None]], axis=1), dtype=torch.float32)
        grid = F.affine_grid(theta[None], [1, 2, H, W], align_corners=True)
        both = torch.stack((image, kept))[None]  # (1, 2, H, W)
        warped = F.grid_sample(both, grid, mode="bilinear", align_corners=True)[0]
        pixels = warped[0].clamp_(0.0, 1.0).pow_(gamma)
        if gain != 1.0:
            pixels = pixels.mul_(gain).clamp_(0.0, 1.0)
        if cfg.shadow_probability > 0 and rng.uniform() < cfg.shadow_probability:
            pixels = self._shadow(rng, pixels, points)
        return pixels, warped[1], points, zoom

    def _shadow(self, rng: np.random.Generator, pixels: torch.Tensor, points: np.ndarray):
        """``pixels`` (H, W) with one acoustic shadow drawn from ``rng``, unless it would cover
        a landmark of ``points`` (C, 2) model px (``abdus.data.shadows``)."""
        cfg, (H, W) = self.augment_config, pixels.shape
        start = torch.tensor(
            [[rng.uniform(*START_X_FRACTION) * W, rng.uniform(*START_Y_FRACTION) * H]]
        )
        angle = torch.tensor([np.radians(rng.uniform(-MAX_TURN_DEG, MAX_TURN_DEG))])
        width = torch.tensor([rng.uniform(*cfg.shadow_width_fraction) * W])
        transmission = torch.tensor([rng.uniform(*cfg.shadow_transmission)])
        if not bool(shadow_spares(torch.from_numpy(points)[None], start, angle, width)[0]):
            return pixels
        return pixels * shadow_factor((H, W), start, angle, width, transmission)[0, 0]


def dataset_summary(dataset: UltrasoundDataset) -> dict[str, Any]:
    """Counts for logs: images, images with a view, labelled landmarks, samples built now."""
    labelled = np.isfinite(dataset.landmarks).all(axis=-1)
    return {
        "images": len(dataset),
        "with_view": int((dataset.views != IGNORE_VIEW).sum()),
        "labelled_landmarks": int(labelled.sum()),
        "cache_built": dataset.cache.built,
    }
