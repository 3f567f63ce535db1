"""Manifest load/save/validation (abdus.io.manifest, docs/data-format.md)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

from abdus.errors import AbdusInputError
from abdus.io.manifest import (
    ImageRecord,
    Manifest,
    Read,
    image_geometry,
    landmark_array,
    landmarks_from_array,
    load_manifest,
    manifest_from_json,
    record_from_json,
    record_to_json,
    save_manifest,
)
from abdus.taxonomy import LANDMARKS


def _write_dicom(path: Path, rows: int, cols: int, frames: int) -> None:
    """A tiny multi-frame MONOCHROME2 DICOM (header is all the manifest reads)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality = "US"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.zeros((frames, rows, cols), np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _base_json() -> dict[str, Any]:
    return {
        "format": "abdus-manifest",
        "version": 1,
        "name": "tiny",
        "meta": {"source": "test", "nested": {"a": [1, 2.5]}},
        "images": [
            {
                "id": "p1_kl",
                "file": "p1/kl.png",
                "patient_id": "p1",
                "view": "kidney_left_long",
                "landmarks": {"kl_la_1": [3.25, 4.0], "kl_la_2": [59.5, 39.5]},
                "spacing_mm": [0.3, 0.25],
                "overlay_boxes": [[0, 0, 10, 5]],
                "second_read": {"view": "kidney_left_long", "landmarks": {"kl_la_1": [3, 5]}},
                "truth": {"view": "kidney_left_long", "landmarks": {"kl_la_2": [58.0, 38.0]}},
                "meta": {"depth_cm": 16},
            },
            {
                "id": "p2_st",
                "file": "p2/cine.dcm",
                "frame": 2,
                "patient_id": "p2",
                "view": "spleen_trans",
                "landmarks": {"st_sa_1": [10.0, 11.0]},  # incomplete labels are allowed
                "size": [30, 50],
            },
            {"id": "p2_other", "file": "p2/cine.dcm", "patient_id": "p2", "view": "others"},
        ],
    }


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A dataset folder: one 40x60 PNG and one 3-frame 30x50 DICOM, plus manifest.json."""
    (tmp_path / "p1").mkdir()
    (tmp_path / "p2").mkdir()
    Image.fromarray(np.zeros((40, 60), np.uint8)).save(tmp_path / "p1" / "kl.png")
    _write_dicom(tmp_path / "p2" / "cine.dcm", rows=30, cols=50, frames=3)
    (tmp_path / "manifest.json").write_text(json.dumps(_base_json()))
    return tmp_path


def _load_modified(dataset: Path, change, **kwargs: Any) -> Manifest:
    obj = _base_json()
    change(obj)
    (dataset / "manifest.json").write_text(json.dumps(obj))
    return load_manifest(dataset, **kwargs)


def test_load_reads_every_field(dataset: Path) -> None:
    manifest = load_manifest(dataset)
    assert manifest.root == dataset and manifest.name == "tiny" and len(manifest) == 3
    first, cine, other = manifest.records
    assert first.view == "kidney_left_long"
    assert first.reference.landmarks == {"kl_la_1": (3.25, 4.0), "kl_la_2": (59.5, 39.5)}
    assert first.second_read == Read("kidney_left_long", {"kl_la_1": (3.0, 5.0)})
    assert first.truth is not None and first.truth.landmarks == {"kl_la_2": (58.0, 38.0)}
    assert first.spacing_mm == (0.3, 0.25) and first.overlay_boxes == ((0, 0, 10, 5),)
    assert first.meta == {"depth_cm": 16} and first.frame == 0
    assert cine.frame == 2 and cine.size == (30, 50) and cine.spacing_mm is None
    assert other.reference == Read("others", {}) and other.second_read is None
    assert manifest.path_of(cine) == dataset / "p2" / "cine.dcm"


def test_folder_and_json_path_load_the_same(dataset: Path) -> None:
    assert load_manifest(dataset) == load_manifest(dataset / "manifest.json")


def test_save_then_load_round_trips_exactly(dataset: Path) -> None:
    manifest = load_manifest(dataset)
    written = save_manifest(manifest, dataset)
    assert written == dataset / "manifest.json"
    again = load_manifest(dataset)
    assert again == manifest
    save_manifest(again, dataset / "manifest.json")
    assert load_manifest(dataset) == manifest
    assert not [p for p in dataset.iterdir() if p.name.startswith(".")]  # no temp files left


def test_in_memory_record_round_trips(dataset: Path) -> None:
    record = ImageRecord(
        id="x",
        file="p1/kl.png",
        patient_id="p9",
        reference=Read("spleen_long", {"sl_la_2": [1, 2], "sl_la_1": (0.1 + 0.2, 7 / 3)}),
        spacing_mm=0.5,
        truth=Read("spleen_long", {}),
    )
    assert record.spacing_mm == (0.5, 0.5)
    assert list(record.reference.landmarks) == ["sl_la_1", "sl_la_2"]  # taxonomy order
    assert record_from_json(json.loads(json.dumps(record_to_json(record)))) == record
    manifest = Manifest(dataset, [record], name="mem", meta={"k": 1})
    save_manifest(manifest, dataset)
    assert load_manifest(dataset) == manifest  # floats such as 0.1 + 0.2 survive exactly


def test_single_number_spacing_is_isotropic(dataset: Path) -> None:
    def change(obj: dict) -> None:
        obj["images"][0]["spacing_mm"] = 0.4

    assert _load_modified(dataset, change).records[0].spacing_mm == (0.4, 0.4)


def _set(path: str, value: Any):
    """A change that sets obj['images'][i][key]... addressed as 'i.key.key'."""

    def change(obj: dict) -> None:
        keys = path.split(".")
        target = obj["images"][int(keys[0])]
        for key in keys[1:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


BAD_CASES = {
    "unknown view": (_set("0.view", "kidney_long"), ["'p1_kl'", "view", "valid views: others"]),
    "unknown landmark": (
        _set("0.landmarks.kl_la_3", [1, 1]),
        ["'p1_kl'", "landmarks.kl_la_3", "unknown landmark", "valid landmarks: kl_la_1"],
    ),
    "landmark of another task": (
        _set("0.view", "spleen_long"),
        ["landmarks.kl_la_1", "does not fit view 'spleen_long'", "sl_la_1, sl_la_2"],
    ),
    "landmark on a view without task": (
        _set("0.view", "liver_left_long"),
        ["landmarks.kl_la_1", "that view has no landmarks"],
    ),
    "second read checked against its own view": (
        _set("0.second_read.view", "kidney_right_trans"),
        ["second_read.landmarks.kl_la_1", "does not fit view 'kidney_right_trans'"],
    ),
    "truth checked": (
        _set("0.truth.landmarks", {"st_la_1": [1, 1]}),
        ["truth.landmarks.st_la_1", "does not fit"],
    ),
    "non-numeric coordinate": (
        _set("0.landmarks.kl_la_1", ["3", 4]),
        ["landmarks.kl_la_1", "x must be a number"],
    ),
    "boolean coordinate": (_set("0.landmarks.kl_la_1", [True, 4]), ["x must be a number"]),
    "three coordinates": (_set("0.landmarks.kl_la_1", [1, 2, 3]), ["must be [x, y]"]),
    "non-finite coordinate": (
        _set("0.landmarks.kl_la_2", [1.0, float("nan")]),
        ["landmarks.kl_la_2", "y must be finite"],
    ),
    "point outside size": (
        _set("1.landmarks.st_sa_1", [49.6, 3]),
        ["'p2_st'", "landmarks.st_sa_1", "outside the 30x50"],
    ),
    "point outside file": (
        _set("0.landmarks.kl_la_2", [59.5, 39.6]),
        ["'p1_kl'", "landmarks.kl_la_2", "outside the 40x60"],
    ),
    "negative point": (_set("0.truth.landmarks.kl_la_2", [-0.6, 0]), ["truth.landmarks.kl_la_2"]),
    "box outside file": (_set("0.overlay_boxes", [[50, 0, 61, 5]]), ["overlay_boxes", "outside"]),
    "empty box": (_set("0.overlay_boxes", [[5, 0, 5, 5]]), ["overlay_boxes", "empty"]),
    "frame out of range (DICOM)": (_set("1.frame", 3), ["'p2_st'", "frame 3", "3 frames"]),
    "frame out of range (PNG)": (_set("0.frame", 1), ["'p1_kl'", "frame 1", "1 frames"]),
    "negative frame": (_set("0.frame", -1), ["frame", ">= 0"]),
    "size differs from file": (_set("1.size", [50, 30]), ["'p2_st'", "size", "[30, 50]"]),
    "missing file": (_set("0.file", "p1/nope.png"), ["'p1_kl'", "file", "missing file"]),
    "absolute file": (_set("0.file", "/etc/passwd"), ["file", "relative"]),
    "duplicate id": (_set("1.id", "p1_kl"), ["'p1_kl'", "duplicate id"]),
    "zero spacing": (_set("0.spacing_mm", [0.3, 0]), ["spacing_mm", "> 0"]),
    "negative spacing": (_set("0.spacing_mm", -0.2), ["spacing_mm", "> 0"]),
    "infinite spacing": (_set("0.spacing_mm", [float("inf"), 1]), ["spacing_mm", "finite"]),
    "missing patient": (_set("0.patient_id", ""), ["patient_id", "non-empty"]),
    "unknown field": (_set("0.landmark", {}), ["'p1_kl'", "landmark", "unknown field"]),
    "bad second_read": (_set("0.second_read", [1]), ["second_read", "must be"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_manifest_gives_one_clear_line(dataset: Path, case: str) -> None:
    change, expected = BAD_CASES[case]
    with pytest.raises(AbdusInputError) as info:
        _load_modified(dataset, change)
    message = str(info.value)
    assert message.startswith(f"{dataset / 'manifest.json'}: ")
    assert "\n" not in message
    for part in expected:
        assert part in message, (case, message)


def test_top_level_problems(dataset: Path) -> None:
    path = dataset / "manifest.json"
    cases = {
        '{"format": "abdus-manifest", ': "malformed JSON",
        "[]": "top level must be a JSON object",
        json.dumps({**_base_json(), "format": "coco"}): "expected 'abdus-manifest'",
        json.dumps({**_base_json(), "version": 2}): "unsupported 2",
        json.dumps({**_base_json(), "images": {}}): "images: must be a list",
        json.dumps({**_base_json(), "extra": 1}): "unknown top-level field",
    }
    for text, expected in cases.items():
        path.write_text(text)
        with pytest.raises(AbdusInputError, match=expected) as info:
            load_manifest(dataset)
        assert str(info.value).startswith(str(path))
    with pytest.raises(AbdusInputError, match=r"no manifest\.json"):
        load_manifest(dataset / "p1")
    with pytest.raises(AbdusInputError, match="manifest not found"):
        load_manifest(dataset / "missing.json")


def test_many_problems_are_cut_to_ten(dataset: Path) -> None:
    def change(obj: dict) -> None:
        obj["images"] = [
            {"id": f"i{k}", "file": "p1/kl.png", "patient_id": "p", "view": "liver"}
            for k in range(15)
        ]

    with pytest.raises(AbdusInputError) as info:
        _load_modified(dataset, change)
    message = str(info.value)
    assert message.count("unknown view") == 10
    assert "'i9'" in message and "'i10'" not in message
    assert message.endswith("... and 5 more problem(s)")


def test_check_files_false_skips_file_checks(dataset: Path) -> None:
    manifest = _load_modified(dataset, _set("0.file", "p1/nope.png"), check_files=False)
    assert manifest.records[0].file == "p1/nope.png"
    # size-based bounds are still checked without files
    with pytest.raises(AbdusInputError, match="outside"):
        _load_modified(dataset, _set("1.landmarks.st_sa_1", [1, 30]), check_files=False)


def test_save_refuses_invalid_and_writes_nothing(tmp_path: Path) -> None:
    bad_point = Read("kidney_left_long", {"kl_la_1": (np.nan, 1.0)})
    manifest = Manifest(tmp_path, [ImageRecord("a", "a.png", "p", bad_point)])
    with pytest.raises(AbdusInputError, match=r"refusing to save.*kl_la_1.*finite"):
        save_manifest(manifest, tmp_path)
    misfit = Read("spleen_long", {"kl_la_1": (1.0, 1.0)})
    manifest = Manifest(tmp_path, [ImageRecord("a", "a.png", "p", misfit)])
    with pytest.raises(AbdusInputError, match="does not fit"):
        save_manifest(manifest, tmp_path / "m.json")
    manifest = Manifest(tmp_path, [], meta={"bad": float("inf")})
    with pytest.raises(AbdusInputError, match="not JSON-serialisable"):
        save_manifest(manifest, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_landmark_array_and_inverse() -> None:
    read = Read("kidney_right_trans", {"kt_sa_2": (5.5, 6.0), "kt_la_1": (1.0, 2.0)})
    points = landmark_array(read)
    assert points.shape == (14, 2) and points.dtype == np.float64
    assert np.array_equal(points[LANDMARKS.index("kt_la_1")], [1.0, 2.0])
    assert np.array_equal(points[LANDMARKS.index("kt_sa_2")], [5.5, 6.0])
    assert np.isnan(points).all(axis=1).sum() == 12
    assert np.isnan(landmark_array(None)).all()
    assert landmarks_from_array(points) == read.landmarks
    assert Read("kidney_right_trans", landmarks_from_array(points)) == read
    with pytest.raises(ValueError, match=r"\(14, 2\)"):
        landmarks_from_array(np.zeros((13, 2)))


def test_by_patient_groups_sorted(dataset: Path) -> None:
    manifest = load_manifest(dataset)
    groups = manifest.by_patient()
    assert list(groups) == ["p1", "p2"]
    assert [r.id for r in groups["p2"]] == ["p2_st", "p2_other"]


def test_image_geometry(dataset: Path) -> None:
    assert image_geometry(dataset / "p1" / "kl.png") == (40, 60, 1)
    assert image_geometry(dataset / "p2" / "cine.dcm") == (30, 50, 3)
    # a DICOM without the 128-byte preamble is still recognised
    ds = pydicom.dcmread(dataset / "p2" / "cine.dcm")
    ds.preamble = None
    raw = dataset / "raw.dcm"
    ds.save_as(raw, enforce_file_format=False)
    assert raw.read_bytes()[128:132] != b"DICM"
    assert image_geometry(raw) == (30, 50, 3)
    junk = dataset / "junk.png"
    junk.write_bytes(b"not an image at all" * 20)
    with pytest.raises(AbdusInputError, match="not a readable"):
        image_geometry(junk)


def test_unreadable_image_is_reported(dataset: Path) -> None:
    (dataset / "p1" / "kl.png").write_bytes(b"garbage" * 50)
    with pytest.raises(AbdusInputError, match=r"'p1_kl': file: 'p1/kl\.png': not a readable"):
        load_manifest(dataset)


def test_record_from_json_names_source_and_field() -> None:
    entry = copy.deepcopy(_base_json()["images"][0])
    del entry["view"]
    with pytest.raises(AbdusInputError, match=r"^src\.json: image 'p1_kl': view: missing"):
        record_from_json(entry, source="src.json")


def test_the_documented_example_is_valid() -> None:
    doc = Path(__file__).parents[2] / "docs" / "data-format.md"
    example = doc.read_text().split("```json\n", 1)[1].split("```", 1)[0]
    manifest = manifest_from_json(json.loads(example), root=".")
    assert [r.id for r in manifest.records] == ["p017_003", "p017_009"]
    assert manifest.records[1].spacing_mm == (0.21, 0.21)
