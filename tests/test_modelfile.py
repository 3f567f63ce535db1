"""The model-file module: the search for a run's model and the one header check."""

from __future__ import annotations

import pytest

from abdus.errors import AbdusInputError
from abdus.modelfile import (
    CHECKPOINT_NAME,
    MODEL_NAME,
    PBT_NAME,
    ModelKind,
    check_header,
    find_model,
    is_pbt_model,
    taxonomy_header,
)


def _check(header):
    return check_header(header, "m.pt", formats=("abdus-model",), version=1, what="abdus model")


def test_a_run_folder_gives_its_model_then_its_checkpoint_then_pbt(tmp_path):
    (tmp_path / PBT_NAME).write_bytes(b"")
    assert find_model(tmp_path).kind is ModelKind.PBT and is_pbt_model(tmp_path)
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"")
    assert find_model(tmp_path).path.name == CHECKPOINT_NAME
    (tmp_path / MODEL_NAME).write_bytes(b"")
    ref = find_model(tmp_path)
    assert (ref.kind, ref.path.name) == (ModelKind.NETWORK, MODEL_NAME)
    assert not is_pbt_model(tmp_path)


def test_files_are_told_apart_by_their_kind(tmp_path):
    for name, kind in (
        ("a.onnx", ModelKind.ONNX),
        ("b.pbt", ModelKind.PBT),
        ("c.pt", ModelKind.NETWORK),
    ):
        (tmp_path / name).write_bytes(b"")
        assert find_model(tmp_path / name).kind is kind


def test_nothing_to_load_names_the_path(tmp_path):
    with pytest.raises(AbdusInputError, match=r"no model\.pt, checkpoint\.pt or model\.pbt"):
        find_model(tmp_path)
    with pytest.raises(AbdusInputError, match="model not found"):
        find_model(tmp_path / "missing.pt")


def test_the_header_check_accepts_a_good_header_and_refuses_each_bad_one():
    good = {"format": "abdus-model", "version": 1, "taxonomy": taxonomy_header()}
    assert _check(good) is good
    bad = {
        "not a dict": (None, "expected format"),
        "another format": ({**good, "format": "x"}, "expected format"),
        "a version that is no number": ({**good, "version": "1"}, "format version '1'"),
        "a newer abdus": ({**good, "version": 2}, "newer abdus"),
        "no taxonomy": ({**good, "taxonomy": "views"}, "no view/landmark taxonomy"),
        "another taxonomy": ({**good, "taxonomy": {"views": [], "landmarks": []}}, "different"),
    }
    for header, message in bad.values():
        with pytest.raises(AbdusInputError, match=message):
            _check(header)
