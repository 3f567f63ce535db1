"""COCO-keypoints import (abdus.io.coco)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from abdus.errors import AbdusInputError
from abdus.io.coco import import_coco_keypoints, write_manifest_from_coco
from abdus.io.manifest import load_manifest

SPLEEN_MAP = {"spleen axial": "spleen_trans"}
SPLEEN_KEYPOINTS = {
    "spleen axial/a": "st_la_1",
    "spleen axial/b": "st_la_2",
    "c": "st_sa_1",
    "d": "st_sa_2",
    "centre": None,
}


def _coco() -> dict[str, Any]:
    return {
        "images": [
            {"id": 1, "file_name": "p1/a.png", "width": 60, "height": 40},
            {"id": 2, "file_name": "p1/b.png", "width": 60, "height": 40},
            {
                "id": 3,
                "file_name": "c.png",
                "width": 60,
                "height": 40,
                "patient_id": "P-7",
                "spacing_mm": 0.3,
            },
            {"id": 4, "file_name": "d.png", "width": 60, "height": 40},
            {"id": 5, "file_name": "p2/e.png", "width": 60, "height": 40},
        ],
        "categories": [
            {"id": 1, "name": "kidney_left_long", "keypoints": ["kl_la_1", "kl_la_2"]},
            {"id": 2, "name": "spleen axial", "keypoints": ["a", "b", "c", "d", "centre"]},
            {"id": 3, "name": "liver_right_trans", "keypoints": []},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "keypoints": [10, 20, 2, 0, 0, 0]},
            {
                "id": 11,
                "image_id": 2,
                "category_id": 2,
                "keypoints": [1, 2, 2, 3, 4, 1, 0, 0, 0, 7.5, 8.5, 2, 30, 30, 2],
            },
            {"id": 12, "image_id": 3, "category_id": 3, "keypoints": []},
            {"id": 13, "image_id": 5, "category_id": 1, "keypoints": [0, 0, 0, 60, 40, 2]},
        ],
    }


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    """A folder with coco.json and its five 40x60 PNGs."""
    for image in _coco()["images"]:
        target = tmp_path / image["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((40, 60), np.uint8)).save(target)
    (tmp_path / "coco.json").write_text(json.dumps(_coco()))
    return tmp_path


def _import(coco_dir: Path, change=None, **kwargs: Any):
    obj = _coco()
    if change is not None:
        change(obj)
    (coco_dir / "coco.json").write_text(json.dumps(obj))
    kwargs.setdefault("view_names_map", SPLEEN_MAP)
    kwargs.setdefault("keypoint_names_map", SPLEEN_KEYPOINTS)
    return import_coco_keypoints(coco_dir / "coco.json", **kwargs)


def test_import_maps_views_landmarks_patients_and_shifts_half_a_pixel(coco_dir: Path) -> None:
    manifest = _import(coco_dir)
    assert manifest.root == coco_dir
    by_id = {r.id: r for r in manifest.records}
    assert sorted(by_id) == ["1", "2", "3", "5"]  # image 4 has no annotation: skipped
    assert manifest.meta["skipped_unlabelled_images"] == ["4"]
    kidney = by_id["1"]
    assert kidney.view == "kidney_left_long" and kidney.file == "p1/a.png"
    assert kidney.reference.landmarks == {"kl_la_1": (9.5, 19.5)}  # v=0 slot not imported
    assert kidney.size == (40, 60)
    spleen = by_id["2"].reference
    assert spleen.view == "spleen_trans"
    # category-qualified and plain keys both map; v=1 (labelled, hidden) is imported;
    # the slot mapped to None is dropped.
    assert spleen.landmarks == {
        "st_la_1": (0.5, 1.5),
        "st_la_2": (2.5, 3.5),
        "st_sa_2": (7.0, 8.0),
    }
    assert by_id["3"].view == "liver_right_trans" and by_id["3"].reference.landmarks == {}
    assert by_id["3"].spacing_mm == (0.3, 0.3)
    # the far corner of a 60x40 image in COCO is the far pixel centre + 0.5 in abdus
    assert by_id["5"].reference.landmarks == {"kl_la_2": (59.5, 39.5)}


def test_patient_id_rule(coco_dir: Path) -> None:
    manifest = _import(coco_dir)
    patients = {r.id: r.patient_id for r in manifest.records}
    assert patients == {"1": "p1", "2": "p1", "3": "P-7", "5": "p2"}
    assert manifest.meta["patient_id_rule_counts"] == {"attribute": 1, "folder": 3, "image_id": 0}

    def flatten(obj: dict) -> None:
        for image in obj["images"]:
            image["file_name"] = Path(image["file_name"]).name
            image.pop("patient_id", None)

    flat = _import(coco_dir, flatten, check_files=False)
    assert {r.id: r.patient_id for r in flat.records} == {"1": "1", "2": "2", "3": "3", "5": "5"}


def test_view_from_image_attribute(coco_dir: Path) -> None:
    def tag(obj: dict) -> None:
        obj["images"][3]["view"] = "RT LIVER LONG"
        obj["images"][2]["view"] = "liver_right_trans"

    manifest = _import(
        coco_dir, tag, view_from="image", view_names_map={"RT LIVER LONG": "liver_right_long"}
    )
    assert {r.id: r.view for r in manifest.records} == {
        "3": "liver_right_trans",
        "4": "liver_right_long",
    }
    assert manifest.meta["skipped_unlabelled_images"] == ["1", "2", "5"]
    with pytest.raises(ValueError, match="valid: category, image"):
        _import(coco_dir, view_from="filename")


def _expect_error(coco_dir: Path, change, *parts: str, **kwargs: Any) -> None:
    with pytest.raises(AbdusInputError) as info:
        _import(coco_dir, change, **kwargs)
    message = str(info.value)
    assert message.startswith(str(coco_dir / "coco.json")) and "\n" not in message
    for part in parts:
        assert part in message, message


def test_unknown_category_names_the_annotation(coco_dir: Path) -> None:
    _expect_error(
        coco_dir,
        None,
        "annotation 11 (image 2)",
        "'spleen axial' is not an abdus view",
        view_names_map={},
    )


def test_unknown_keypoint_names_the_annotation(coco_dir: Path) -> None:
    _expect_error(
        coco_dir,
        None,
        "annotation 11",
        "keypoint 'a'",
        "not an abdus landmark",
        keypoint_names_map={},
    )


def test_keypoint_of_another_task(coco_dir: Path) -> None:
    def wrong(obj: dict) -> None:
        obj["categories"][0]["name"] = "spleen_long"

    _expect_error(coco_dir, wrong, "annotation 10", "'kl_la_1' does not fit view 'spleen_long'")


def test_conflicting_and_duplicate_annotations(coco_dir: Path) -> None:
    def two_views(obj: dict) -> None:
        obj["annotations"].append({"id": 20, "image_id": 1, "category_id": 3, "keypoints": []})

    _expect_error(coco_dir, two_views, "image 1", "annotations disagree")

    def twice(obj: dict) -> None:
        obj["annotations"].append(
            {"id": 21, "image_id": 1, "category_id": 1, "keypoints": [1, 1, 2, 0, 0, 0]}
        )

    _expect_error(coco_dir, twice, "annotation 21", "'kl_la_1' is labelled twice")

    def merged(obj: dict) -> None:
        obj["annotations"].append(
            {"id": 22, "image_id": 1, "category_id": 1, "keypoints": [0, 0, 0, 5, 5, 2]}
        )

    record = next(r for r in _import(coco_dir, merged).records if r.id == "1")
    assert record.reference.landmarks == {"kl_la_1": (9.5, 19.5), "kl_la_2": (4.5, 4.5)}
    assert record.meta["coco_annotation_ids"] == [10, 22]


def test_bad_annotations(coco_dir: Path) -> None:
    def short(obj: dict) -> None:
        obj["annotations"][0]["keypoints"] = [1, 2, 2]

    _expect_error(coco_dir, short, "annotation 10", "expected 6 numbers")

    def orphan(obj: dict) -> None:
        obj["annotations"][0]["image_id"] = 99

    _expect_error(coco_dir, orphan, "annotation 10 (image 99)", "no image with this id")

    def text(obj: dict) -> None:
        obj["annotations"][0]["keypoints"] = ["10", 20, 2, 0, 0, 0]

    _expect_error(coco_dir, text, "annotation 10", "finite numbers")

    def outside(obj: dict) -> None:
        obj["annotations"][0]["keypoints"] = [61, 20, 2, 0, 0, 0]

    _expect_error(coco_dir, outside, "image '1'", "outside the 40x60")

    def missing(obj: dict) -> None:
        obj["images"][0]["file_name"] = "p1/zzz.png"

    _expect_error(coco_dir, missing, "image '1'", "missing file 'p1/zzz.png'")


def test_not_a_coco_file(coco_dir: Path) -> None:
    (coco_dir / "coco.json").write_text(json.dumps({"images": []}))
    with pytest.raises(AbdusInputError, match="'annotations' must be a list"):
        import_coco_keypoints(coco_dir / "coco.json")
    (coco_dir / "coco.json").write_text("{")
    with pytest.raises(AbdusInputError, match="malformed JSON"):
        import_coco_keypoints(coco_dir / "coco.json")


def test_write_manifest_elsewhere_relocates_files(coco_dir: Path) -> None:
    out = coco_dir / "datasets" / "mine"
    saved = write_manifest_from_coco(
        coco_dir / "coco.json",
        out,
        keypoint_names_map=SPLEEN_KEYPOINTS,
        view_names_map=SPLEEN_MAP,
    )
    assert (out / "manifest.json").is_file()
    loaded = load_manifest(out)  # checks the relocated files exist
    assert loaded == saved
    assert loaded.records[0].file == "../../p1/a.png"
    assert loaded.path_of(loaded.records[0]).resolve() == (coco_dir / "p1" / "a.png").resolve()
