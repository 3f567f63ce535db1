"""DICOM Secondary Capture: the overlay as an RGB image in the source's study, valid DICOM."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from abdus.errors import AbdusInputError
from abdus.inference.outputs import LONG_AXIS_RGB, draw_overlay, write_overlay_capture
from abdus.inference.predictor import Prediction
from abdus.io.dicom import read_dicom
from abdus.io.secondary_capture import (
    SECONDARY_CAPTURE_SOP_CLASS,
    build_secondary_capture,
    write_secondary_capture,
)
from abdus.io.sr import read_source_header

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dicom_factory as factory

DCIODVFY = shutil.which("dciodvfy")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sc_sources")
    return factory.make_us_dicom(folder / "clip.dcm", rows=96, cols=128, frames=3)


def _prediction() -> Prediction:
    """A kidney long view: KL_LA measured from (20, 30) to (100, 30) px (horizontal)."""
    mark = {"confidence": 0.9}
    return Prediction(
        view="kidney_right_long",
        view_probabilities=None,
        landmarks={
            "kl_la_1": {"x": 20.0, "y": 30.0, **mark},
            "kl_la_2": {"x": 100.0, "y": 30.0, **mark},
        },
        measurements_mm={"KL_LA": 80.0},
        measurement_notes={},
        spacing_mm=(1.0, 1.0),
        spacing_source="user",
    )


def test_overlay_capture_is_the_drawn_frame_in_the_source_study(clip, tmp_path):
    image = read_dicom(clip)[2]
    prediction = _prediction()
    path = write_overlay_capture(tmp_path / "clip_f2.sc.dcm", clip, image, prediction)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_f2.sc.dcm"]  # no temp file left
    ds = pydicom.dcmread(path)
    source = pydicom.dcmread(clip, stop_before_pixels=True)
    assert ds.SOPClassUID == SECONDARY_CAPTURE_SOP_CLASS == ds.file_meta.MediaStorageSOPClassUID
    assert (ds.PhotometricInterpretation, ds.SamplesPerPixel) == ("RGB", 3)
    expected = np.asarray(draw_overlay(image, prediction))
    assert np.array_equal(ds.pixel_array, expected)
    assert tuple(ds.pixel_array[30, 60]) == LONG_AXIS_RGB  # the caliper line is burned in
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate"):
        assert ds.data_element(keyword).value == source.data_element(keyword).value, keyword
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert ds.SOPInstanceUID != source.SOPInstanceUID
    assert ds.BurnedInAnnotation == "YES" and "calipers" in ds.DerivationDescription
    (reference,) = ds.SourceImageSequence
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert reference.ReferencedSOPClassUID == source.SOPClassUID
    assert reference.ReferencedFrameNumber == 3  # frame 2, 0-based


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (dicom3tools) not installed")
def test_secondary_capture_passes_dciodvfy(clip, tmp_path):
    odd = np.full((95, 127, 3), 7, dtype=np.uint8)  # an odd pixel data length, padded
    single = factory.make_us_dicom(tmp_path / "odd.dcm", rows=95, cols=127)
    written = [
        write_overlay_capture(tmp_path / "a.sc.dcm", clip, read_dicom(clip)[0], _prediction()),
        write_secondary_capture(tmp_path / "b.sc.dcm", single, odd),
    ]
    for path in written:
        result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True)
        lines = (result.stdout + result.stderr).splitlines()
        assert [ln for ln in lines if ln.startswith("Error")] == [], path.name
    assert np.array_equal(pydicom.dcmread(written[1]).pixel_array, odd)


def test_bad_pictures_and_sources_are_clear_errors(clip, tmp_path):
    header = read_source_header(clip)
    with pytest.raises(ValueError, match="uint8 RGB"):
        build_secondary_capture(header, np.zeros((96, 128), dtype=np.uint8))
    with pytest.raises(ValueError, match="source frame"):
        build_secondary_capture(header, np.zeros((10, 10, 3), dtype=np.uint8))
    not_dicom = tmp_path / "x.dcm"
    not_dicom.write_text("hello")
    with pytest.raises(AbdusInputError):
        write_secondary_capture(tmp_path / "y.sc.dcm", not_dicom, np.zeros((1, 1, 3), np.uint8))
    assert not (tmp_path / "y.sc.dcm").exists()
