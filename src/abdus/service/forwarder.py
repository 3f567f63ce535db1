"""Forwarding of results (SR, SC) to DICOM destinations, persisted under ``outbox/``.

One thread per destination ``AET@HOST:PORT`` sends what ``outbox/<AET@HOST_PORT>/<uid>/``
holds, once ``done/<uid>.json`` exists (see ``processing``), and removes each file after a
success status. While a destination is down, the file in hand is retried after
``retry_delay * 2**(k-1)`` s (k = 1, 2, ...; at most ``MAX_DELAY_S``); after ``retries`` retries
it moves to ``failed/`` with the reason. A restart resumes whatever the outbox holds (a file
sent just before a kill, not yet removed, is sent again: same SOP Instance UID, which a
PACS stores once).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (
    BasicTextSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
    SecondaryCaptureImageStorage,
)

from abdus.errors import AbdusInputError
from abdus.service.events import EventLog
from abdus.service.metrics import ServeMetrics
from abdus.service.spool import Spool

MAX_DELAY_S = 300.0
RESULT_SOP_CLASSES = (
    ComprehensiveSRStorage,
    EnhancedSRStorage,
    BasicTextSRStorage,
    SecondaryCaptureImageStorage,
)
# PS3.7 C.4.2.1.4 (Annex C): 0x0000 success; 0xB000, 0xB006, 0xB007 warnings (stored).
STORED_STATUSES = (0x0000, 0xB000, 0xB006, 0xB007)
_DESTINATION = re.compile(r"^([^@]{1,16})@([^:@]+):([0-9]{1,5})$")


@dataclass(frozen=True)
class Destination:
    """A DICOM C-STORE SCP: ``AET@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        match = _DESTINATION.match(text.strip())
        if not match or not 0 < int(match[3]) < 65536 or not match[1].strip():
            raise AbdusInputError(
                f"--forward {text!r}: expected AET@HOST:PORT (AE title of 1-16 characters, "
                "port 1-65535)"
            )
        return cls(match[1].strip(), match[2], int(match[3]))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


class Forwarder:
    """Sends one destination's outbox (see module doc); ``run`` until ``stop`` is set."""

    def __init__(
        self,
        destination: Destination,
        spool: Spool,
        log: EventLog,
        metrics: ServeMetrics,
        stop: threading.Event,
        *,
        calling_ae_title: str,
        retries: int,
        retry_delay_s: float,
    ) -> None:
        self.destination, self.spool, self.log, self.metrics = destination, spool, log, metrics
        self.stop, self.retries, self.retry_delay_s = stop, retries, retry_delay_s
        self.folder = spool.outbox_folder(str(destination))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.wake = threading.Event()
        self.ae = AE(ae_title=calling_ae_title)
        for sop_class in RESULT_SOP_CLASSES:
            self.ae.add_requested_context(
                sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
            )
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = 30
        self._failures: dict[Path, int] = {}

    def pending(self) -> list[Path]:
        """Committed outbox files, oldest instance first (empty instance folders removed)."""
        files: list[Path] = []
        for box in sorted(self.folder.iterdir(), key=lambda p: p.stat().st_mtime):
            if not box.is_dir() or not self.spool.done_marker(box.name).exists():
                continue  # not yet committed: its processing may still be replayed
            entries = sorted(p for p in box.iterdir() if not p.name.startswith("."))
            if not entries:
                box.rmdir()
            files.extend(entries)
        return files

    def run(self) -> None:
        while not self.stop.is_set():
            files = self.pending()
            if not files:
                self.wake.wait(timeout=1.0)
                self.wake.clear()
                continue
            try:
                failed = self._send_all(files)
            except Exception as err:  # a network or toolkit failure: the first file waits
                failed = files[0], f"{type(err).__name__}: {err}"
            if failed is not None:
                self._retry_later(*failed)

    def _send_all(self, files: list[Path]) -> tuple[Path, str] | None:
        """Send ``files`` over one association; (file, reason) of the first failure."""
        d = self.destination
        assoc = self.ae.associate(d.host, d.port, ae_title=d.ae_title)
        if not assoc.is_established:
            return files[0], f"no association with {d} (refused, aborted or unreachable)"
        try:
            for path in files:
                if self.stop.is_set():
                    return None
                reason = self._send(assoc, path)
                if reason is not None:
                    return path, reason
        finally:
            if assoc.is_established:
                assoc.release()
        return None

    def _send(self, assoc, path: Path) -> str | None:
        """C-STORE one file; None on success (file removed), else the reason."""
        try:
            ds = pydicom.dcmread(path)
            status = assoc.send_c_store(ds)
        except Exception as err:  # an unreadable result, no context for it, a lost peer
            return f"C-STORE to {self.destination} failed: {type(err).__name__}: {err}"
        code = int(status.Status) if status and "Status" in status else None
        if code not in STORED_STATUSES:
            return f"C-STORE to {self.destination} failed with status " + (
                "none (timeout or abort)" if code is None else f"0x{code:04X}"
            )
        received_at = self._received_at(path.parent.name)
        path.unlink(missing_ok=True)
        self._failures.pop(path, None)
        self.metrics.forwarded.labels(str(self.destination)).inc()
        if received_at is not None:
            self.metrics.receipt_to_forward_seconds.observe(max(0.0, time.time() - received_at))
        self.log(
            "forward",
            destination=str(self.destination),
            file=path.name,
            sop_instance_uid=str(ds.SOPInstanceUID),
            source_sop_instance_uid=path.parent.name,
        )
        return None

    def _received_at(self, uid: str) -> float | None:
        try:
            return float(json.loads(self.spool.done_marker(uid).read_text())["received_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _retry_later(self, path: Path, reason: str) -> None:
        """Count a failure of ``path``: wait its back-off, or move it to ``failed/``."""
        failures = self._failures.get(path, 0) + 1
        self._failures[path] = failures
        if failures > self.retries:
            self._failures.pop(path, None)
            target = self.spool.fail(
                path,
                f"{reason} (gave up after {self.retries} retries)",
                name=f"{self.folder.name}__{path.name}",
            )
            self.metrics.forward_failed.labels(str(self.destination)).inc()
            self.log(
                "forward_failed",
                destination=str(self.destination),
                file=str(target),
                reason=reason,
                retries=self.retries,
            )
            return
        delay = min(self.retry_delay_s * 2 ** (failures - 1), MAX_DELAY_S)
        self.log(
            "forward_retry",
            destination=str(self.destination),
            file=path.name,
            reason=reason,
            attempt=failures,
            retry_in_s=round(delay, 3),
        )
        self.stop.wait(delay)
