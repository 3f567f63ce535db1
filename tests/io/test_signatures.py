"""File signatures: the DICM magic, bare DICOM datasets, PNG / JPEG, unreadable paths."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

from abdus.errors import AbdusInputError
from abdus.io.reader import sniff_format
from abdus.io.signatures import (
    HEAD_BYTES,
    PNG_SIGNATURE,
    has_dicom_magic,
    looks_like_bare_dataset,
    read_head,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dicom_factory as factory


def test_magic_marks_dicom_files_and_only_them(tmp_path: Path) -> None:
    with_preamble = read_head(factory.make_us_dicom(tmp_path / "a.dcm"))
    assert len(with_preamble) == HEAD_BYTES
    assert has_dicom_magic(with_preamble) and not looks_like_bare_dataset(with_preamble)
    bare = read_head(factory.make_us_dicom(tmp_path / "b.dcm", preamble=False))
    assert not has_dicom_magic(bare) and looks_like_bare_dataset(bare)
    Image.new("L", (8, 8)).save(tmp_path / "c.png")
    png = read_head(tmp_path / "c.png")
    assert png.startswith(PNG_SIGNATURE)
    assert not has_dicom_magic(png) and not looks_like_bare_dataset(png)
    assert has_dicom_magic(b"\xff" * 128 + b"DICM")  # the preamble's content does not matter
    assert not has_dicom_magic(b"DICM") and not has_dicom_magic(b"\0" * 128 + b"DICX")


def test_unreadable_paths_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(AbdusInputError, match="file not found"):
        read_head(tmp_path / "missing.dcm")
    with pytest.raises(AbdusInputError, match="is a folder"):
        read_head(tmp_path)
    (tmp_path / "short.dcm").write_bytes(b"\0" * 128 + b"DI")  # cut inside the magic
    assert read_head(tmp_path / "short.dcm") == b"\0" * 128 + b"DI"
    with pytest.raises(AbdusInputError, match="truncated"):
        sniff_format(tmp_path / "short.dcm")
