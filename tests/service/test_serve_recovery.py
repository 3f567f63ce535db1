"""Exactly-once processing of ``abdus serve``: each crash point of the processing commit replayed
in process, and a real ``kill -9`` of the ``abdus serve`` command during processing.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pydicom
import pytest

from abdus.inference.loading import open_predictor
from abdus.service import processing
from abdus.service.events import EventLog
from abdus.service.forwarder import Destination, Forwarder
from abdus.service.metrics import ServeMetrics
from abdus.service.processing import SEAL_NAME, Processor
from abdus.service.spool import Spool

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
import dicom_factory as factory
from test_serve import receiver, store, wait_for

DESTINATIONS = ("PACS@127.0.0.1:104", "ARCHIVE@127.0.0.1:105")


@pytest.fixture(scope="module")
def predictor(model: Path):
    return open_predictor(model)


@pytest.fixture
def setup(tmp_path: Path, predictor) -> tuple[Spool, Processor, Path]:
    """A spool holding one received instance, and its processor (two destinations)."""
    spool = Spool(tmp_path / "spool")
    spool.create()
    source = factory.make_us_dicom(tmp_path / "src.dcm", pixel_spacing=(0.3, 0.3))
    uid = pydicom.dcmread(source).SOPInstanceUID
    incoming = spool.incoming_file(uid)
    incoming.write_bytes(source.read_bytes())
    log = EventLog(spool.log_file, stream=io.StringIO())
    processor = Processor(spool, predictor, log, ServeMetrics(), destinations=DESTINATIONS)
    return spool, processor, incoming


def _assert_processed_once(spool: Spool, incoming: Path) -> None:
    uid = incoming.stem
    assert not incoming.exists() and spool.done_marker(uid).exists()
    assert not spool.work_folder(uid).exists()
    results = sorted(p.name for p in spool.results.rglob("*") if p.is_file())
    assert results == [f"{uid}.json", f"{uid}.sr.dcm"]
    for destination in DESTINATIONS:
        box = spool.outbox_folder(destination) / uid
        assert sorted(p.name for p in box.iterdir()) == [f"{uid}.sr.dcm"]
    sr_uids = {pydicom.dcmread(p).SOPInstanceUID for p in spool.outbox.rglob("*.sr.dcm")}
    sr_uids |= {pydicom.dcmread(p).SOPInstanceUID for p in spool.results.rglob("*.sr.dcm")}
    assert len(sr_uids) == 1  # the result, its outbox entries: one SR


def _no_prediction(*args, **kwargs):
    raise AssertionError("a sealed attempt must not be predicted again")


def test_processing_writes_results_links_outboxes_and_marks_done(setup):
    spool, processor, incoming = setup
    processor.process(incoming)
    _assert_processed_once(spool, incoming)
    done = json.loads(spool.done_marker(incoming.stem).read_text())
    assert done["results"] and done["received_at"] > 0


def test_a_crash_after_the_seal_is_committed_without_predicting_again(setup, monkeypatch):
    spool, processor, incoming = setup
    processor._attempt(incoming, spool.work_folder(incoming.stem))  # then: killed
    monkeypatch.setattr(processing, "predict_file", _no_prediction)
    processor.process(incoming)  # the restart
    _assert_processed_once(spool, incoming)


def test_a_crash_in_the_middle_of_the_commit_is_finished(setup, monkeypatch):
    spool, processor, incoming = setup
    work = spool.work_folder(incoming.stem)
    manifest = processor._attempt(incoming, work)
    real_replace, calls = os.replace, []

    def crash_on_second_move(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")  # not an Exception: the process dies here
        real_replace(src, dst)

    monkeypatch.setattr(processing.os, "replace", crash_on_second_move)
    with pytest.raises(KeyboardInterrupt):
        processor._commit(incoming, work, manifest)
    monkeypatch.setattr(processing.os, "replace", real_replace)
    monkeypatch.setattr(processing, "predict_file", _no_prediction)
    processor.process(incoming)
    _assert_processed_once(spool, incoming)


def test_an_unsealed_attempt_is_rerun_from_scratch(setup):
    spool, processor, incoming = setup
    work = spool.work_folder(incoming.stem)
    work.mkdir(parents=True)
    (work / f"{incoming.stem}.sr.dcm").write_bytes(b"half an SR")  # killed while writing
    processor.process(incoming)
    _assert_processed_once(spool, incoming)


def test_a_done_instance_is_skipped_and_cleaned_up(setup, monkeypatch):
    spool, processor, incoming = setup
    processor.process(incoming)
    incoming.write_bytes(b"sent again")
    monkeypatch.setattr(processing, "predict_file", _no_prediction)
    processor.process(incoming)
    _assert_processed_once(spool, incoming)


def test_forwarders_wait_for_the_done_marker(setup):
    spool, processor, incoming = setup
    work = spool.work_folder(incoming.stem)
    manifest = processor._attempt(incoming, work)
    assert (work / SEAL_NAME).exists()
    log, metrics = processor.log, processor.metrics
    forwarder = Forwarder(
        Destination.parse(DESTINATIONS[0]),
        spool,
        log,
        metrics,
        threading.Event(),
        calling_ae_title="ABDUS",
        retries=0,
        retry_delay_s=0.1,
    )
    box = forwarder.folder / incoming.stem
    box.mkdir(parents=True)
    os.link(work / f"{incoming.stem}.sr.dcm", box / f"{incoming.stem}.sr.dcm")
    assert forwarder.pending() == []  # linked, not committed
    processor._commit(incoming, work, manifest)
    assert [p.name for p in forwarder.pending()] == [f"{incoming.stem}.sr.dcm"]


# ------------------------------------------------------------------------------- kill -9
def _start(model: Path, spool: Path, forward: str, stderr: Path) -> subprocess.Popen:
    (spool / "serve.json").unlink(missing_ok=True)
    command = [sys.executable, "-m", "abdus.cli", "serve", str(model), "--spool", str(spool),
               "--dicom-port", "0", "--http-port", "0", "--forward", forward,
               "--retry-delay", "0.2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(stderr, "wb") as err:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
    wait_for(lambda: (spool / "serve.json").exists() or process.poll() is not None,
             "serve.json", timeout=90)  # fmt: skip
    assert process.poll() is None, "abdus serve exited"
    return process


@pytest.mark.slow  # two starts of the command (imports: ~10 s each on a shared 2-core CPU)
def test_kill_9_while_processing_then_restart_processes_each_instance_once(model, tmp_path):
    files = [
        factory.make_us_dicom(
            tmp_path / f"in{i}.dcm", rows=256, cols=320, seed=i, pixel_spacing=(0.3, 0.3)
        )
        for i in range(8)
    ]
    uids = [pydicom.dcmread(f).SOPInstanceUID for f in files]
    spool = tmp_path / "spool"
    with receiver() as (port, received):
        forward = f"RECEIVER@127.0.0.1:{port}"
        first = _start(model, spool, forward, tmp_path / "first.err")
        try:
            dicom_port = json.loads((spool / "serve.json").read_text())["dicom_port"]
            assert store(dicom_port, files) == [0] * len(files)  # durable before success
            wait_for(lambda: list((spool / "done").glob("*.json")), "the first instance done")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        left = len(list((spool / "incoming").glob("*.dcm")))
        second = _start(model, spool, forward, tmp_path / "second.err")
        try:
            wait_for(
                lambda: all((spool / "done" / f"{u}.json").exists() for u in uids),
                "every instance done after the restart",
                timeout=60,
            )
            wait_for(lambda: not any((spool / "outbox").rglob("*.dcm")), "an empty outbox")
            time.sleep(0.2)  # let the last C-STORE's dataset land in the list
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=60) == 0
    events = [json.loads(line) for line in (tmp_path / "second.err").read_text().splitlines()]
    assert events[-1]["event"] == "stopped"  # and stderr held JSON lines only
    assert not list((spool / "incoming").glob("*.dcm")) and not list((spool / "failed").iterdir())
    for uid in uids:
        assert len(list(spool.rglob(f"results/*/{uid}.json"))) == 1
        assert len(list(spool.rglob(f"results/*/{uid}.sr.dcm"))) == 1
    sources = {
        ds.SOPInstanceUID: ds.CurrentRequestedProcedureEvidenceSequence[0]
        .ReferencedSeriesSequence[0]
        .ReferencedSOPSequence[0]
        .ReferencedSOPInstanceUID
        for ds in received
    }  # SR UID -> its source; a resend after the kill carries the same SR UID
    assert Counter(sources.values()) == Counter(uids)
    print(f"{left} of {len(files)} instances were still spooled at the kill")
