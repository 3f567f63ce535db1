"""Import COCO-keypoints annotations (CVAT, Label Studio, ... exports) as an abdus manifest.

COCO keypoints JSON: ``images[]`` (id, file_name, width, height), ``categories[]`` (id, name,
``keypoints``: the names of the keypoint slots) and ``annotations[]`` (image_id, category_id,
``keypoints`` = [x, y, v, ...] with v = 0 for "not labelled").

Rules (docs/data-format.md, "Importing COCO keypoints"):

* view: the annotation's category name (``view_from="category"``) or the image's ``view``
  attribute (``view_from="image"``), through ``view_names_map`` when given, must be an abdus
  view name. An image with no view (no annotation) is skipped and counted in the manifest meta.
* landmarks: keypoint names, through ``keypoint_names_map`` (keys "name" or
  "category/name"; a value of None drops that keypoint), must be abdus landmarks of the view's
  task. Only keypoints with v > 0 are imported. Several annotations of one image are merged
  when they share the view and do not label the same landmark twice.
* coordinates: COCO puts (0, 0) at the top-left *corner* of the top-left pixel; abdus puts it at
  that pixel's *centre*, so every coordinate is shifted by -0.5 px.
* patient id: the image's ``patient_id`` attribute, else the name of the folder that holds the
  file (``file_name`` "p017/img3.png" -> "p017"), else the COCO image id.
* record id: the COCO image id (as a string); ``size`` from width/height; ``spacing_mm`` from
  an image ``spacing_mm`` attribute when present.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from abdus.errors import AbdusInputError
from abdus.io.manifest import (
    ImageRecord,
    Manifest,
    ProblemList,
    Read,
    check_manifest_files,
    manifest_from_json,
    manifest_to_json,
    save_manifest,
)
from abdus.taxonomy import LANDMARK_INDEX, VIEW_INDEX, VIEW_NAMES, landmarks_of_view

VIEW_SOURCES = ("category", "image")
COCO_PIXEL_SHIFT = -0.5  # pixel-corner origin (COCO) -> pixel-centre origin (abdus)


def _read_coco(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AbdusInputError("COCO file not found", path) from None
    except json.JSONDecodeError as error:
        raise AbdusInputError(f"malformed JSON: {error}", path) from None
    except (OSError, UnicodeDecodeError) as error:
        raise AbdusInputError(f"cannot read COCO file ({error})", path) from None
    if not isinstance(obj, dict):
        raise AbdusInputError("not a COCO file: the top level must be an object", path)
    for key in ("images", "annotations", "categories"):
        if not isinstance(obj.get(key), list):
            raise AbdusInputError(f"not a COCO keypoints file: {key!r} must be a list", path)
    return obj


def _by_id(items: list[Any], kind: str, path: Path) -> dict[Any, dict[str, Any]]:
    table: dict[Any, dict[str, Any]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict) or "id" not in item:
            raise AbdusInputError(f"{kind} #{index} is not an object with an 'id'", path)
        if item["id"] in table:
            raise AbdusInputError(f"{kind} id {item['id']!r} appears twice", path)
        table[item["id"]] = item
    return table


def _view_name(raw: Any, view_map: Mapping[str, str]) -> str:
    """The abdus view for a COCO category name / image attribute; ValueError if none fits."""
    name = view_map.get(raw, raw) if isinstance(raw, str) else raw
    if name not in VIEW_INDEX:
        mapped = f" (mapped to {name!r})" if name != raw else ""
        raise ValueError(
            f"view {raw!r}{mapped} is not an abdus view; valid views: {', '.join(VIEW_NAMES)} "
            "(or pass a view_names_map)"
        )
    return name


def _landmark_name(category: str, keypoint: str, names_map: Mapping[str, str | None]) -> str | None:
    """The abdus landmark of a COCO keypoint slot (None: dropped by the map)."""
    for key in (f"{category}/{keypoint}", keypoint):
        if key in names_map:
            return names_map[key]
    return keypoint


class _Importer:
    """Turns one COCO file into manifest records, collecting problems as it goes."""

    def __init__(
        self,
        root: Path,
        view_from: str,
        keypoint_names_map: Mapping[str, str | None],
        view_names_map: Mapping[str, str],
    ) -> None:
        self.root, self.view_from = root, view_from
        self.keypoint_map, self.view_map = keypoint_names_map, view_names_map
        self.problems = ProblemList()
        self.patient_rule_counts = {"attribute": 0, "folder": 0, "image_id": 0}
        self.skipped: list[str] = []

    def annotation_view(self, ann: dict[str, Any], category: dict[str, Any]) -> str | None:
        try:
            return _view_name(category.get("name"), self.view_map)
        except ValueError as error:
            self.report(ann, "category", str(error))
            return None

    def report(self, ann: dict[str, Any], field: str, message: str) -> None:
        where = f"annotation {ann.get('id')!r} (image {ann.get('image_id')!r})"
        self.problems.add(None, f"{where}: {field}", message)

    def image_view(
        self, image: dict[str, Any], anns: list[dict[str, Any]], cats: dict
    ) -> str | None:
        """The view of an image from its annotations' categories or its own attribute."""
        if self.view_from == "image":
            if image.get("view") is None:
                return None
            try:
                return _view_name(image["view"], self.view_map)
            except ValueError as error:
                self.problems.add(None, f"image {image['id']!r}: view", str(error))
                return None
        views = {ann["id"]: self.annotation_view(ann, cats[ann["category_id"]]) for ann in anns}
        distinct = {v for v in views.values() if v is not None}
        if len(distinct) > 1:
            pairs = ", ".join(f"annotation {aid!r}: {v}" for aid, v in views.items())
            self.problems.add(None, f"image {image['id']!r}", f"annotations disagree ({pairs})")
        return distinct.pop() if len(distinct) == 1 and None not in views.values() else None

    def keypoints(self, view: str, anns: list[dict[str, Any]], cats: dict) -> dict[str, tuple]:
        """Labelled keypoints (v > 0) of all annotations, as abdus landmarks in abdus px."""
        points: dict[str, tuple[float, float]] = {}
        for ann in anns:
            category = cats[ann["category_id"]]
            slots, values = category.get("keypoints") or [], ann.get("keypoints") or []
            if not isinstance(values, list) or len(values) != 3 * len(slots):
                expected = f"expected {3 * len(slots)} numbers [x, y, v, ...]"
                count = len(values) if isinstance(values, list) else repr(values)
                got = f"for category {category.get('name')!r}, got {count}"
                self.report(ann, "keypoints", f"{expected} {got}")
                continue
            for slot, (x, y, v) in zip(slots, zip(*[iter(values)] * 3, strict=True), strict=True):
                if not v:
                    continue  # v = 0: not labelled
                name = _landmark_name(str(category.get("name")), slot, self.keypoint_map)
                if name is None:
                    continue
                problem = self.landmark_problem(name, view, points, x, y)
                if problem:
                    self.report(ann, f"keypoint {slot!r}", problem)
                    continue
                points[name] = (x + COCO_PIXEL_SHIFT, y + COCO_PIXEL_SHIFT)
        return points

    @staticmethod
    def landmark_problem(name: str, view: str, points: dict, x: Any, y: Any) -> str | None:
        if name not in LANDMARK_INDEX:
            return f"{name!r} is not an abdus landmark (pass a keypoint_names_map)"
        if name not in landmarks_of_view(view):
            return f"landmark {name!r} does not fit view {view!r}"
        if name in points:
            return f"landmark {name!r} is labelled twice for this image"
        numeric = all(isinstance(c, int | float) and not isinstance(c, bool) for c in (x, y))
        if not numeric or not (math.isfinite(x) and math.isfinite(y)):
            return f"coordinates must be finite numbers, got {[x, y]!r}"
        return None

    def patient_id(self, image: dict[str, Any]) -> str:
        if image.get("patient_id") not in (None, ""):
            self.patient_rule_counts["attribute"] += 1
            return str(image["patient_id"])
        parent = PurePosixPath(str(image["file_name"]).replace("\\", "/")).parent.name
        if parent:
            self.patient_rule_counts["folder"] += 1
            return parent
        self.patient_rule_counts["image_id"] += 1
        return str(image["id"])

    def relative_file(self, image: dict[str, Any]) -> str | None:
        file_name = image.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            self.problems.add(None, f"image {image['id']!r}: file_name", "missing")
            return None
        file_path = Path(file_name.replace("\\", "/"))
        if file_path.is_absolute():
            try:
                file_path = file_path.relative_to(self.root)
            except ValueError:
                where = f"image {image['id']!r}: file_name"
                outside = f"{file_name!r} is not under images_root {str(self.root)!r}"
                self.problems.add(None, where, outside)
                return None
        return file_path.as_posix()

    def record(self, image: dict[str, Any], anns: list[dict[str, Any]], cats: dict):
        """One ImageRecord, or None (skipped: no view; or a problem was reported)."""
        before = len(self.problems.items)
        view = self.image_view(image, anns, cats)
        file = self.relative_file(image)
        if view is None or file is None:
            if len(self.problems.items) == before:
                self.skipped.append(str(image["id"]))
            return None
        landmarks = self.keypoints(view, anns, cats)
        if len(self.problems.items) != before:
            return None
        size = (image.get("height"), image.get("width"))
        meta = {"coco_image_id": image["id"], "coco_annotation_ids": [a["id"] for a in anns]}
        return ImageRecord(
            id=str(image["id"]),
            file=file,
            patient_id=self.patient_id(image),
            reference=Read(view, landmarks),
            spacing_mm=image.get("spacing_mm"),
            size=size if all(isinstance(s, int) and s > 0 for s in size) else None,
            meta=meta,
        )


def _annotations_by_image(coco: dict, images: dict, cats: dict, importer: _Importer) -> dict:
    grouped: dict[Any, list[dict[str, Any]]] = {}
    for index, ann in enumerate(coco["annotations"]):
        if not isinstance(ann, dict):
            importer.problems.add(None, f"annotation #{index}", "not an object")
        elif ann.get("image_id") not in images:
            importer.report(ann, "image_id", "no image with this id")
        elif ann.get("category_id") not in cats:
            importer.report(ann, "category_id", f"no category {ann.get('category_id')!r}")
        else:
            grouped.setdefault(ann["image_id"], []).append(ann)
    return grouped


def import_coco_keypoints(
    coco_json_path: str | Path,
    *,
    images_root: str | Path | None = None,
    view_from: str = "category",
    keypoint_names_map: Mapping[str, str | None] | None = None,
    view_names_map: Mapping[str, str] | None = None,
    check_files: bool = True,
) -> Manifest:
    """Read a COCO keypoints file into a validated Manifest (rules in the module docstring).

    ``images_root`` (default: the COCO file's folder) is what ``file_name`` is relative to and
    becomes ``Manifest.root``. Landmarks come out in abdus source px (COCO x, y - 0.5).
    ``check_files`` also checks the image files like ``load_manifest`` does. Problems raise one
    AbdusInputError naming the COCO file and each annotation (or image) at fault.
    """
    if view_from not in VIEW_SOURCES:
        raise ValueError(f"unknown view_from {view_from!r}; valid: {', '.join(VIEW_SOURCES)}")
    path = Path(coco_json_path).absolute()
    root = Path(images_root).absolute() if images_root is not None else path.parent
    coco = _read_coco(path)
    importer = _Importer(root, view_from, keypoint_names_map or {}, view_names_map or {})
    images = _by_id(coco["images"], "image", path)
    cats = _by_id(coco["categories"], "category", path)
    grouped = _annotations_by_image(coco, images, cats, importer)
    records = [importer.record(image, grouped.get(iid, []), cats) for iid, image in images.items()]
    importer.problems.raise_if_any(path)
    meta = {
        "imported_from": "coco-keypoints",
        "coco_file": str(path),
        "view_from": view_from,
        "patient_id_rule_counts": importer.patient_rule_counts,
        "skipped_unlabelled_images": importer.skipped,
    }
    manifest = Manifest(root, [r for r in records if r is not None], name=path.stem, meta=meta)
    # Same validation as a manifest on disk: spacing, ids, points inside width x height.
    manifest = manifest_from_json(manifest_to_json(manifest), root=root, source=path)
    if check_files:
        check_manifest_files(manifest, source=path)
    return manifest


def write_manifest_from_coco(
    coco_json: str | Path,
    out_manifest_path: str | Path,
    images_root: str | Path | None = None,
    **options: Any,
) -> Manifest:
    """Import ``coco_json`` and save it as an abdus manifest at ``out_manifest_path`` (a JSON
    path or a folder). ``file`` entries are rewritten relative to the manifest's folder (they
    may start with "../"), so the images need not move. Returns the saved Manifest."""
    manifest = import_coco_keypoints(coco_json, images_root=images_root, **options)
    target = Path(out_manifest_path).absolute()
    out_dir = target.parent if target.suffix.lower() == ".json" else target
    relocated = [
        _with_file(r, os.path.relpath(manifest.root / r.file, out_dir)) for r in manifest.records
    ]
    saved = Manifest(out_dir, relocated, name=manifest.name, meta=manifest.meta)
    save_manifest(saved, target)
    return saved


def _with_file(record: ImageRecord, file: str) -> ImageRecord:
    return replace(record, file=Path(file).as_posix())
