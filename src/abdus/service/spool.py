"""The spool folder of ``abdus serve``: what survives a crash, and how files move through it.

```
DIR/serve.json                      pid, AE title, host and ports (written once both listen)
DIR/serve.log.jsonl                 one JSON line per event
DIR/incoming/<SOPInstanceUID>.dcm   received, durable, not yet processed
DIR/work/<SOPInstanceUID>/          one processing attempt; ``complete.json`` once all written
DIR/results/<StudyInstanceUID>/     <name>.json, <name>.sr.dcm (and <name>.sc.dcm)
DIR/outbox/<AET@HOST_PORT>/         results still to send to that destination
DIR/done/<SOPInstanceUID>.json      written last: the instance is processed
DIR/failed/                         what could not be processed or sent, with <name>.reason.txt
```

Exactly once after ``kill -9`` (see ``processing``): an attempt writes into ``work/`` only;
``complete.json`` seals it; the commit hard-links each result into every outbox, moves it into
``results/`` and writes the done marker last. Every step of the commit can be replayed, so a
restart finishes a sealed attempt, reruns an unsealed one from scratch, and skips a done one.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from abdus.io.atomic import atomic_path, atomic_write_text

# PS3.5 9.1: a UID is digits and dots, at most 64 characters, components without leading 0s.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_SAFE = re.compile(r"[^A-Za-z0-9._@-]")


def is_uid(text: str) -> bool:
    """Whether ``text`` is a valid DICOM UID (so it is safe as a file or folder name)."""
    return len(text) <= 64 and bool(_UID.match(text))


def safe_name(text: str) -> str:
    """``text`` with anything but letters, digits and ``._@-`` replaced by ``_``."""
    return _SAFE.sub("_", text)


def fsync_dir(folder: Path) -> None:
    """Make a rename or link inside ``folder`` durable (POSIX: fsync the directory)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``: a temporary file in the same folder, fsync, rename, fsync
    the folder. A crash leaves the old file or the whole new one."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    fsync_dir(path.parent)


class Spool:
    """The folders of one spool (see module doc); ``create`` makes them."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.incoming = self.root / "incoming"
        self.work = self.root / "work"
        self.results = self.root / "results"
        self.outbox = self.root / "outbox"
        self.done = self.root / "done"
        self.failed = self.root / "failed"
        self.status_file = self.root / "serve.json"
        self.log_file = self.root / "serve.log.jsonl"

    def create(self) -> None:
        for folder in (self.incoming, self.work, self.results, self.outbox, self.done, self.failed):
            folder.mkdir(parents=True, exist_ok=True)

    def incoming_file(self, sop_instance_uid: str) -> Path:
        return self.incoming / f"{sop_instance_uid}.dcm"

    def done_marker(self, sop_instance_uid: str) -> Path:
        return self.done / f"{sop_instance_uid}.json"

    def work_folder(self, sop_instance_uid: str) -> Path:
        return self.work / sop_instance_uid

    def study_folder(self, study_instance_uid: str) -> Path:
        return self.results / study_instance_uid

    def outbox_folder(self, destination: str) -> Path:
        return self.outbox / safe_name(destination.replace(":", "_"))

    def pending_incoming(self) -> list[Path]:
        """Spooled instances not yet processed, oldest first (temporary files left out)."""
        files = [p for p in self.incoming.glob("*.dcm") if not p.name.startswith(".")]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))

    def fail(self, path: Path, reason: str, name: str | None = None) -> Path:
        """Move ``path`` (a file or folder) into ``failed/<name>`` (default: its own name)
        beside ``<name>.reason.txt``; returns its new path. An earlier failure of the same
        name is replaced."""
        name = safe_name(name or path.name)
        target = self.failed / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(path, target)
        atomic_write_text(self.failed / f"{name}.reason.txt", reason.rstrip() + "\n")
        fsync_dir(self.failed)
        return target

    def remove_temporaries(self) -> None:
        """Remove half-written temporary files a killed server left in ``incoming/`` and the
        outboxes (their senders never got a success status, so nothing is lost)."""
        for folder in (self.incoming, *self.outbox.glob("*")):
            for stale in folder.glob(".*.tmp*"):
                stale.unlink(missing_ok=True)
