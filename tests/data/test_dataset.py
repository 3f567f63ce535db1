"""The cached Dataset: samples, landmark geometry, cache reuse / rebuild, readers, augmentation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from abdus.data.dataset import IGNORE_VIEW, AugmentConfig, UltrasoundDataset, dataset_summary
from abdus.data.heatmaps import HeatmapCodec
from abdus.data.preprocess import PreprocessConfig
from abdus.errors import AbdusInputError
from abdus.io.manifest import ImageRecord, Manifest, Read
from abdus.taxonomy import LANDMARK_INDEX, VIEW_INDEX

CONFIG = PreprocessConfig(spacing_mm=1.0, size=(96, 128))
CODEC = HeatmapCodec((96, 128), sigma_px=2.0)


def _write_png(path: Path, shape: tuple[int, int], points: list[tuple[float, float]]) -> None:
    """Dim speckle with a bright 5 px disc on each landmark (source px)."""
    rng = np.random.default_rng(len(points) + shape[0])
    pixels = rng.uniform(10, 60, shape)
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    for x, y in points:
        pixels[np.hypot(xs - x, ys - y) <= 5] = 250
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def _kidney(x1: float, y1: float, x2: float, y2: float) -> dict[str, tuple[float, float]]:
    return {"kl_la_1": (x1, y1), "kl_la_2": (x2, y2)}


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    """Four PNGs: isotropic, anisotropic, no spacing (others view), and one with reader B."""
    root = tmp_path / "data"
    root.mkdir()
    specs = [
        ("a", (120, 160), (0.5, 0.5), "kidney_right_long", _kidney(40.3, 60.7, 121.2, 58.1)),
        ("b", (150, 100), (0.8, 0.6), "kidney_left_long", _kidney(20.0, 30.0, 80.5, 120.25)),
        ("c", (90, 120), None, "others", {}),
        ("d", (100, 140), (0.7, 0.7), "kidney_right_long", _kidney(30.0, 50.0, 110.0, 52.0)),
    ]
    records = []
    for name, shape, spacing, view, landmarks in specs:
        _write_png(root / f"{name}.png", shape, list(landmarks.values()))
        second = Read(view, landmarks) if name == "d" else None
        records.append(
            ImageRecord(
                id=name,
                file=f"{name}.png",
                patient_id=f"p{name}",
                reference=Read(view, landmarks),
                second_read=second,
                spacing_mm=spacing,
                overlay_boxes=((0, 0, 10, 10),),
            )
        )
    return Manifest(root, records, name="tiny")


def test_sample_fields_shapes_and_dtypes(manifest: Manifest) -> None:
    ds = UltrasoundDataset(manifest, manifest.records, config=CONFIG, codec=CODEC)
    assert len(ds) == 4
    s = ds[0]
    assert s["image"].shape == (1, 96, 128) and s["image"].dtype == torch.float32
    assert s["class_image"].shape == (1, 96, 128)
    assert s["heatmaps"].shape == (14, 96, 128) and s["heatmaps"].dtype == torch.float32
    assert s["landmark_mask"].dtype == torch.float32 and s["landmarks"].shape == (14, 2)
    assert s["view"].dtype == torch.int64 and s["view"].item() == VIEW_INDEX["kidney_right_long"]
    assert s["has_view"].item() is True and s["index"].item() == 0
    assert s["model_spacing_mm"].item() == pytest.approx(1.0)
    kl = [LANDMARK_INDEX["kl_la_1"], LANDMARK_INDEX["kl_la_2"]]
    assert s["landmark_mask"][kl].tolist() == [1.0, 1.0] and s["landmark_mask"].sum() == 2
    absent = s["landmark_mask"] == 0
    assert (s["landmarks"][absent] == 0).all() and (s["heatmaps"][absent] == 0).all()
    assert s["image"].min() >= 0.0 and s["image"].max() <= 1.0
    assert torch.isnan(ds[2]["model_spacing_mm"]) and ds[2]["landmark_mask"].sum() == 0


def test_landmarks_follow_the_transform_and_sit_on_the_discs(manifest: Manifest) -> None:
    ds = UltrasoundDataset(manifest, manifest.records, config=CONFIG, codec=CODEC)
    for i in (0, 1, 3):
        s = ds[i]
        record = manifest.records[i]
        for name, source_xy in record.reference.landmarks.items():
            c = LANDMARK_INDEX[name]
            expected = ds.transform(i).to_model(np.array(source_xy))
            np.testing.assert_allclose(s["landmarks"][c].numpy(), expected, atol=1e-4)
            x, y = np.rint(expected).astype(int)
            assert s["image"][0, y, x] > 0.8  # the bright disc drawn at the landmark
            decoded, _ = CODEC.decode(s["heatmaps"][c].numpy()[None])
            np.testing.assert_allclose(decoded[0], expected, atol=0.1)
    # Anisotropic source spacing: 0.6 mm columns, 0.8 mm rows -> scales 0.6 and 0.8.
    assert ds.transform(1).scale_xy == pytest.approx((0.6, 0.8))


def test_default_collate_batches(manifest: Manifest) -> None:
    ds = UltrasoundDataset(manifest, manifest.records, config=CONFIG, codec=CODEC)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 1, 96, 128)
    assert batch["heatmaps"].shape == (4, 14, 96, 128)
    assert batch["view"].tolist() == [5, 7, 0, 5]
    assert batch["has_view"].dtype == torch.bool


def test_class_image_is_masked_and_image_is_not(manifest: Manifest) -> None:
    ds = UltrasoundDataset(manifest, manifest.records, config=CONFIG, codec=CODEC)
    s = ds[0]
    corner = ds.transform(0).to_model(np.array([4.0, 4.0])).round().astype(int)  # overlay box
    assert s["class_image"][0, corner[1], corner[0]] == 0
    assert s["image"][0, corner[1], corner[0]] > 0
    inside = ds.transform(0).to_model(np.array([80.0, 100.0])).round().astype(int)
    assert s["class_image"][0, inside[1], inside[0]] == s["image"][0, inside[1], inside[0]]


def test_disk_cache_is_reused_matches_memory_and_rebuilds_on_change(
    manifest: Manifest, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = UltrasoundDataset(
        manifest, manifest.records, config=CONFIG, codec=CODEC, cache_dir=cache
    )
    assert first.cache.built == 4 and len(list(cache.glob("*.npy"))) == 4
    assert not list(cache.glob(".*"))  # no temporary files left behind
    again = UltrasoundDataset(
        manifest, manifest.records, config=CONFIG, codec=CODEC, cache_dir=cache
    )
    assert again.cache.built == 0
    memory = UltrasoundDataset(manifest, manifest.records, config=CONFIG, codec=CODEC)
    for i in range(4):
        for key, value in again[i].items():
            torch.testing.assert_close(value, memory[i][key], equal_nan=True)
    # A changed image file (new mtime) and a changed config give new entries.
    path = manifest.path_of(manifest.records[1])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = UltrasoundDataset(
        manifest, manifest.records, config=CONFIG, codec=CODEC, cache_dir=cache
    )
    assert changed.cache.built == 1
    other = PreprocessConfig(spacing_mm=2.0, size=(96, 128))
    coarse = UltrasoundDataset(
        manifest, manifest.records, config=other, codec=CODEC, cache_dir=cache
    )
    assert coarse.cache.built == 4
    assert dataset_summary(coarse)["images"] == 4


def test_damaged_cache_entry_is_rebuilt(manifest: Manifest, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ds = UltrasoundDataset(
        manifest, manifest.records[:1], config=CONFIG, codec=CODEC, cache_dir=cache
    )
    (cache / f"{ds.cache.keys[0]}.json").write_text("{not json")
    again = UltrasoundDataset(
        manifest, manifest.records[:1], config=CONFIG, codec=CODEC, cache_dir=cache
    )
    assert again.cache.built == 1


def test_second_reader_labels_and_missing_reads(manifest: Manifest) -> None:
    ds = UltrasoundDataset(
        manifest, manifest.records, config=CONFIG, codec=CODEC, reader="second_read"
    )
    assert ds[0]["has_view"].item() is False and ds[0]["view"].item() == IGNORE_VIEW
    assert ds[0]["landmark_mask"].sum() == 0 and ds[0]["heatmaps"].sum() == 0
    assert ds[3]["has_view"].item() is True and ds[3]["landmark_mask"].sum() == 2
    with pytest.raises(ValueError, match="valid readers: reference, second_read, truth"):
        UltrasoundDataset(manifest, manifest.records, config=CONFIG, codec=CODEC, reader="bob")
    with pytest.raises(ValueError, match="codec size"):
        UltrasoundDataset(
            manifest, manifest.records, config=CONFIG, codec=HeatmapCodec((64, 64), 2.0)
        )


def test_augmentation_is_deterministic_and_consistent(manifest: Manifest) -> None:
    ds = UltrasoundDataset(
        manifest, manifest.records[:1], config=CONFIG, codec=CODEC, augment=True, seed=3
    )
    plain = UltrasoundDataset(manifest, manifest.records[:1], config=CONFIG, codec=CODEC)
    a, b = ds[0], ds[0]
    torch.testing.assert_close(a["image"], b["image"])
    ds.set_epoch(1)
    c = ds[0]
    assert not torch.equal(a["image"], c["image"])
    assert not torch.equal(a["image"], plain[0]["image"])
    for sample in (a, c):
        present = sample["landmark_mask"] > 0
        assert present.sum() == 2
        for x, y in sample["landmarks"][present].numpy():
            assert sample["image"][0, round(y), round(x)] > 0.7  # the disc moved with it
        zoom = 1.0 / sample["model_spacing_mm"].item()  # plain spacing is 1.0 mm
        assert 0.9 <= zoom <= 1.1
    # Landmark geometry: the distance in mm is unchanged by the zoom.
    kl = [LANDMARK_INDEX["kl_la_1"], LANDMARK_INDEX["kl_la_2"]]
    for sample in (a, c, plain[0]):
        d_px = torch.linalg.norm(sample["landmarks"][kl[0]] - sample["landmarks"][kl[1]])
        d_mm = d_px * sample["model_spacing_mm"]
        assert d_mm.item() == pytest.approx(40.5, rel=1e-3)  # 81 px at 0.5 mm, source


def test_rotation_and_gain_move_image_and_landmarks_together(manifest: Manifest) -> None:
    config = AugmentConfig(rotation_deg=30.0, gain_range=(0.8, 1.2))
    ds = UltrasoundDataset(
        manifest, manifest.records[:1], config=CONFIG, codec=CODEC, augment=True, seed=5,
        augment_config=config,
    )  # fmt: skip
    plain = UltrasoundDataset(manifest, manifest.records[:1], config=CONFIG, codec=CODEC)
    kl = [LANDMARK_INDEX["kl_la_1"], LANDMARK_INDEX["kl_la_2"]]
    axis = plain[0]["landmarks"][kl[1]] - plain[0]["landmarks"][kl[0]]
    turned = 0.0
    for epoch in range(6):
        ds.set_epoch(epoch)
        sample = ds[0]
        for x, y in sample["landmarks"][kl].numpy():
            assert sample["image"][0, round(y), round(x)] > 0.55  # still on its disc
        moved = sample["landmarks"][kl[1]] - sample["landmarks"][kl[0]]
        angle = torch.atan2(moved[1], moved[0]) - torch.atan2(axis[1], axis[0])
        turned = max(turned, abs(float(angle)))
        assert abs(float(angle)) <= np.radians(30.0) + 1e-4
    assert turned > np.radians(2.0)  # the draws do rotate
    with pytest.raises(ValueError, match="rotation_deg"):
        AugmentConfig(rotation_deg=-1.0)


def test_samples_carry_the_landmark_region(manifest: Manifest) -> None:
    sample = UltrasoundDataset(manifest, manifest.records[:1], config=CONFIG, codec=CODEC)[0]
    region = sample["region"]
    assert region.dtype == torch.bool and region.shape == (1, 96, 128)
    assert region.any() and not region.all()  # the image, not the zero padding around it
    assert not region[0, 0, 0] and region[0, 48, 64]


def test_missing_file_is_a_clean_error(manifest: Manifest) -> None:
    manifest.path_of(manifest.records[2]).unlink()
    with pytest.raises(AbdusInputError, match=r"c\.png"):
        UltrasoundDataset(manifest, manifest.records, config=CONFIG, codec=CODEC)


def test_parallel_build_matches_serial_and_reports_bad_files(
    manifest: Manifest, tmp_path: Path
) -> None:
    serial = UltrasoundDataset(manifest, manifest.records, config=CONFIG, codec=CODEC)
    parallel = UltrasoundDataset(
        manifest,
        manifest.records,
        config=CONFIG,
        codec=CODEC,
        cache_dir=tmp_path / "c",
        build_workers=2,
    )
    assert parallel.cache.built == 4
    for i in range(4):
        np.testing.assert_array_equal(parallel.cache.load(i), serial.cache.load(i))
        assert parallel.transform(i) == serial.transform(i)
    manifest.path_of(manifest.records[0]).write_bytes(b"not an image")
    with pytest.raises(AbdusInputError, match=r"a\.png"):
        UltrasoundDataset(manifest, manifest.records, config=CONFIG, codec=CODEC, build_workers=2)
