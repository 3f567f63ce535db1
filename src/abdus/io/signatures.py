"""What a file's first bytes say it is: DICOM (PS3.10 7.1), PNG or JPEG.

    read_head(path) -> bytes               the first HEAD_BYTES bytes (AbdusInputError: unreadable)
    has_dicom_magic(head) -> bool          b"DICM" after the 128-byte preamble
    looks_like_bare_dataset(head) -> bool  a DICOM dataset written without preamble or file meta

Readers decide by content, never by file name; this module is the one place that knows the bytes.
"""

from __future__ import annotations

from pathlib import Path

from abdus.errors import AbdusInputError

# PS3.10 7.1: a DICOM file starts with a 128-byte preamble, then the 4 bytes "DICM".
DICOM_PREAMBLE_BYTES = 128
DICOM_MAGIC = b"DICM"
HEAD_BYTES = DICOM_PREAMBLE_BYTES + len(DICOM_MAGIC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


def read_head(path: str | Path) -> bytes:
    """The first ``HEAD_BYTES`` bytes of ``path`` (fewer for a short file).

    AbdusInputError naming the file when it is missing, a folder, or cannot be opened.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return handle.read(HEAD_BYTES)
    except FileNotFoundError:
        raise AbdusInputError("file not found", path) from None
    except IsADirectoryError:
        raise AbdusInputError("is a folder, not a file", path) from None
    except OSError as err:
        raise AbdusInputError(f"cannot open file: {err.strerror or err}", path) from None


def has_dicom_magic(head: bytes) -> bool:
    """True when ``head`` (a file's first bytes) holds "DICM" after the 128-byte preamble."""
    return head[DICOM_PREAMBLE_BYTES:HEAD_BYTES] == DICOM_MAGIC


def looks_like_bare_dataset(head: bytes) -> bool:
    """A dataset written without preamble starts with a group 0002 or 0008 tag (PS3.10 7.1)."""
    if len(head) < 8:
        return False
    group, element = int.from_bytes(head[0:2], "little"), int.from_bytes(head[2:4], "little")
    return group in (0x0002, 0x0008) and element < 0x0200
