"""Errors that abdus reports to users as one clear line (no traceback)."""

from __future__ import annotations

from pathlib import Path


class AbdusInputError(ValueError):
    """Bad user input: a file, manifest, option or value abdus cannot use.

    The message names the file (when there is one) and what is wrong, in one line. The CLI
    prints ``error: <message>`` and exits non-zero.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
