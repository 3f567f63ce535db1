"""Processing of spooled instances: the same prediction as ``abdus predict --sr``, exactly once.

One attempt (``Processor.process``) on ``incoming/<uid>.dcm``:

1. ``done/<uid>.json`` exists: processed before (a restart, or a resend): remove the incoming
   file, stop.
2. ``work/<uid>/complete.json`` missing: (re)run from scratch: ``predict_file`` writes the
   JSON, SR (and SC) into ``work/<uid>/``; an instance none of whose images could be predicted
   moves to ``failed/``; else ``complete.json`` seals the attempt (names of its files, study,
   time of receipt).
3. Commit (replayable): hard-link every SR / SC into ``outbox/<destination>/<uid>/`` (an
   existing link is kept), move every file into ``results/<study>/`` (an overwrite of the same
   name), write ``done/<uid>.json``, remove the incoming file and ``work/<uid>/``.

The forwarders send an outbox entry only once its done marker exists, so a replayed commit
never queues a result twice, and a result is never sent before it is in ``results/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pydicom

from abdus.inference.predict import ExtraOutput, one_line, predict_file
from abdus.inference.predictor import BasePredictor
from abdus.io.atomic import atomic_write_json
from abdus.service.events import EventLog
from abdus.service.metrics import ServeMetrics
from abdus.service.spool import Spool, fsync_dir, is_uid

SEAL_NAME = "complete.json"
FORWARDED_SUFFIXES = (".sr.dcm", ".sc.dcm")


class Processor:
    """Processes spooled instances of one spool with one predictor (thread-safe)."""

    def __init__(
        self,
        spool: Spool,
        predictor: BasePredictor,
        log: EventLog,
        metrics: ServeMetrics,
        *,
        destinations: Sequence[str] = (),
        extra_output: ExtraOutput | None = None,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.spool, self.predictor, self.log, self.metrics = spool, predictor, log, metrics
        self.destinations = tuple(destinations)
        self.extra_output, self.on_commit = extra_output, on_commit

    def process(self, path: Path) -> None:
        """Process ``incoming/<uid>.dcm`` (see module doc); never raises for a bad file."""
        uid = path.stem
        if self.spool.done_marker(uid).exists():
            path.unlink(missing_ok=True)
            self.log("skipped", sop_instance_uid=uid, reason="already processed")
            return
        if not path.exists():
            return  # taken by another worker, or removed
        started = time.monotonic()
        work = self.spool.work_folder(uid)
        seal = work / SEAL_NAME
        try:
            manifest = json.loads(seal.read_text()) if seal.exists() else self._attempt(path, work)
            if manifest is None:
                return  # failed, moved to failed/
            self._commit(path, work, manifest)
        except Exception as err:  # a bug or a full disk: to failed/ with the reason, go on
            problem, _ = one_line(err)
            self.log("error", sop_instance_uid=uid, stage="processing", message=problem)
            self._fail(path, work, f"processing failed: {problem}")
            return
        seconds = time.monotonic() - started
        self.metrics.processed.inc()
        self.metrics.processing_seconds.observe(seconds)
        self.log(
            "processed",
            sop_instance_uid=uid,
            study_instance_uid=manifest["study_instance_uid"],
            images=manifest["images"],
            errors=manifest["errors"],
            seconds=round(seconds, 4),
        )

    def _attempt(self, path: Path, work: Path) -> dict[str, Any] | None:
        """Predict into a fresh ``work`` folder and seal it; None when the instance failed."""
        uid = path.stem
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        header = pydicom.dcmread(path, stop_before_pixels=True)
        study = str(header.get("StudyInstanceUID", "")).strip()
        if not is_uid(study):
            self._fail(path, work, f"StudyInstanceUID {study!r} is not a valid UID")
            return None

        def say(line: str) -> None:
            kind, _, message = line.partition(": ")
            self.log(kind, sop_instance_uid=uid, message=message)

        results = predict_file(
            self.predictor, path, work, sr=True, say=say, extra_output=self.extra_output
        )
        errors = [r.record["error"] for r in results if r.record.get("error")]
        if all(r.record.get("view") is None for r in results):  # no image predicted
            self._fail(path, work, "; ".join(errors) or "no image in the file")
            return None
        manifest = {
            "sop_instance_uid": uid,
            "study_instance_uid": study,
            "received_at": path.stat().st_mtime,
            "images": len(results),
            "errors": len(errors),
            "files": sorted(p.name for p in work.iterdir() if not p.name.startswith(".")),
        }
        atomic_write_json(work / SEAL_NAME, manifest)
        fsync_dir(work)
        return manifest

    def _commit(self, path: Path, work: Path, manifest: dict[str, Any]) -> None:
        """Link results into the outboxes, move them into ``results/``, mark done (replayable)."""
        uid, study = manifest["sop_instance_uid"], manifest["study_instance_uid"]
        study_dir = self.spool.study_folder(study)
        study_dir.mkdir(parents=True, exist_ok=True)
        for name in manifest["files"]:
            source = work / name
            if not source.exists():
                continue  # moved by an earlier commit of this attempt
            if name.endswith(FORWARDED_SUFFIXES):
                for destination in self.destinations:
                    box = self.spool.outbox_folder(destination) / uid
                    box.mkdir(parents=True, exist_ok=True)
                    with contextlib.suppress(FileExistsError):
                        os.link(source, box / name)
                    fsync_dir(box)
            os.replace(source, study_dir / name)
            self.log("result", sop_instance_uid=uid, file=str(study_dir / name))
        fsync_dir(study_dir)
        done = {
            **{k: manifest[k] for k in ("sop_instance_uid", "study_instance_uid", "received_at")},
            "processed_at": time.time(),
            "results": [f"results/{study}/{name}" for name in manifest["files"]],
        }
        atomic_write_json(self.spool.done_marker(uid), done)
        fsync_dir(self.spool.done)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
        shutil.rmtree(work, ignore_errors=True)
        self.on_commit()

    def _fail(self, path: Path, work: Path, reason: str) -> None:
        shutil.rmtree(work, ignore_errors=True)
        if path.exists():
            self.spool.fail(path, reason)
        self.metrics.failed.inc()
        self.log("failed", sop_instance_uid=path.stem, reason=reason)


class WorkQueue:
    """Spooled instances waiting for a worker; each SOP instance at most once in flight."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Path] = queue.Queue()
        self._lock = threading.Lock()
        self._waiting: set[str] = set()  # queued or being processed

    def put(self, path: Path) -> None:
        with self._lock:
            if path.stem in self._waiting:
                return
            self._waiting.add(path.stem)
        self._queue.put(path)

    def get(self, timeout: float) -> Path | None:
        """The next instance, or None after ``timeout`` s; call ``finished`` when done."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def finished(self, path: Path) -> None:
        with self._lock:
            self._waiting.discard(path.stem)

    def depth(self) -> int:
        return self._queue.qsize()


def run_worker(processor: Processor, work: WorkQueue, stop: threading.Event) -> None:
    """Take instances from ``work`` until ``stop`` is set; the one in hand is finished."""
    while not stop.is_set():
        path = work.get(timeout=0.2)
        if path is not None:
            try:
                processor.process(path)
            except Exception as err:  # e.g. failed/ cannot be written: report, keep working
                processor.log("error", stage="worker", file=str(path), message=repr(err))
            finally:
                work.finished(path)
