"""The event log of ``abdus serve``: one JSON object per line, to stderr and to a file.

Every line has ``time`` (UTC, ISO 8601), ``event`` (association, received, rejected,
processed, result, forward, forward_retry, error, ...) and the fields of that event. Lines
from many threads never interleave (one lock).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO


class EventLog:
    """Writes events to ``stream`` (default stderr) and appends them to ``path``."""

    def __init__(self, path: Path | None, stream: TextIO | None = None) -> None:
        self._lock = threading.Lock()
        self._stream = stream if stream is not None else sys.stderr
        self._file = open(path, "a", encoding="utf-8") if path is not None else None  # noqa: SIM115

    def __call__(self, event: str, **fields: Any) -> None:
        record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event}
        record.update(fields)
        line = json.dumps(record, default=str) + "\n"
        with self._lock:
            for out in (self._stream, self._file):
                if out is None:
                    continue
                try:
                    out.write(line)
                    out.flush()
                except (OSError, ValueError):  # a closed stream must not stop the server
                    pass

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class LibraryLogHandler(logging.Handler):
    """Turns the warnings and errors of the libraries under the server (pynetdicom, uvicorn)
    into ``library`` events, so stderr stays one JSON object per line."""

    LOGGERS = ("pynetdicom", "uvicorn")  # uvicorn.error propagates to uvicorn

    def __init__(self, log: EventLog) -> None:
        super().__init__(level=logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        message = " ".join(record.getMessage().split())[:1000]
        self.log("library", logger=record.name, level=record.levelname, message=message)

    def attach(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)

    def detach(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)
