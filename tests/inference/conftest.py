"""Fixtures of the inference tests: a tiny untrained model file, scanner-like DICOMs, a cohort.

Nothing is downloaded: the model is ``build_model`` of the ``tiny`` preset (seed 0, saved with
``save_model``), the DICOMs come from ``tests/io/dicom_factory.py``, the cohort from
``abdus.phantom.generate``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.uid import JPEG2000

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dicom_factory as factory

from testkit import one_thread, save_tiny_model  # noqa: F401  (one_thread: autouse fixture)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding only ``model.pt`` (tiny MGCN_R, untrained)."""
    run = tmp_path_factory.mktemp("run")
    save_tiny_model(run / "model.pt")
    return run


@pytest.fixture(scope="session")
def scanner_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real-looking scanner files: a dual-view multi-region DICOM (two tissue regions of
    0.2 and 0.3 mm), a 3-frame clip of it, palette colour, JPEG 2000 with PixelSpacing, a DICOM
    without any calibration, a PNG and a JPEG (no spacing)."""
    folder = tmp_path_factory.mktemp("scanner")
    rows, cols = factory.DUAL_VIEW_SHAPE
    regions = factory.dual_view_regions()
    one_region = [factory.RegionSpec(box=(0, 0, 79, 63), delta=(0.025, 0.025))]
    png = folder / "screen.png"
    Image.fromarray(factory.speckle_pattern(96, 128)[0]).save(png)
    jpeg = folder / "photo.jpg"
    Image.fromarray(factory.speckle_pattern(72, 96, seed=3)[0]).save(jpeg, quality=90)
    return {
        "dual": factory.make_us_dicom(folder / "dual.dcm", rows=rows, cols=cols, regions=regions),
        "clip": factory.make_us_dicom(
            folder / "clip.dcm", rows=rows, cols=cols, frames=3, regions=regions
        ),
        "palette": factory.make_us_dicom(
            folder / "palette.dcm", photometric="PALETTE COLOR", regions=one_region
        ),
        "j2k": factory.make_us_dicom(
            folder / "j2k.dcm", transfer_syntax=JPEG2000, pixel_spacing=(0.3, 0.3)
        ),
        "uncalibrated": factory.make_us_dicom(folder / "uncalibrated.dcm"),
        "png": png,
        "jpeg": jpeg,
    }


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated DICOM cohort (3 patients x 13 images) with its manifest."""
    from abdus.phantom.generate import generate_cohort

    root = tmp_path_factory.mktemp("cohort")
    generate_cohort(root, patients=3, seed=2, image_format="dicom", progress=False)
    return root


def _random_batch(size: tuple[int, int], batch: int = 2, seed: int = 0) -> tuple:
    """(image, class_image) float32 tensors (B, 1, H, W) in [0, 1]."""
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(rng.random((batch, 1, *size), dtype=np.float32))
    return image, image * (torch.from_numpy(rng.random((batch, 1, *size))) > 0.2)


@pytest.fixture
def random_batch():
    """``random_batch(size, batch=2, seed=0)`` -> (image, class_image) (B, 1, H, W)."""
    return _random_batch


@pytest.fixture
def make_model_file():
    """``make_model_file(path, model_name="mgcn_r", seed=0)`` -> an untrained tiny model file."""
    return save_tiny_model
