"""``abdus serve`` end to end, in process: a pynetdicom SCU sends, a pynetdicom SCP receives the
forwarded results, urllib talks to the REST API. Every server binds loopback on free ports and
is stopped by its test; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    ComprehensiveSRStorage,
    CTImageStorage,
    SecondaryCaptureImageStorage,
    Verification,
)

from abdus.errors import AbdusInputError
from abdus.service.serve import run_serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dicom_factory as factory

from testkit import wait_until

WAIT_S = 20.0


# ------------------------------------------------------------------------------------ helpers
def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll ``condition`` every 50 ms until it is truthy (returned); fail after ``timeout``."""
    return wait_until(condition, timeout_s=timeout, what=what, poll_s=0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(model: Path, spool: Path, **options: Any) -> Iterator[dict[str, Any]]:
    """``run_serve`` in a thread on free loopback ports; yields serve.json (+ "spool")."""
    stop = threading.Event()
    errors: list[BaseException] = []
    options = {"dicom_port": 0, "http_port": 0, **options}

    def target() -> None:
        try:
            run_serve(model, spool, stop=stop, **options)
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    status_file = spool / "serve.json"
    try:
        wait_for(lambda: status_file.exists() or errors, "serve.json", timeout=60)
        if errors:
            raise errors[0]
        yield {**json.loads(status_file.read_text()), "spool": spool}
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert not status_file.exists()  # removed on a clean stop


@contextlib.contextmanager
def receiver(port: int = 0, ae_title: str = "RECEIVER") -> Iterator[tuple[int, list[Dataset]]]:
    """A C-STORE SCP for SR and SC results; yields (port, received datasets)."""
    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        received.append(event.dataset)
        return 0x0000

    ae = AE(ae_title=ae_title)
    for sop_class in (ComprehensiveSRStorage, SecondaryCaptureImageStorage):
        ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        yield int(server.server_address[1]), received
    finally:
        server.shutdown()


def associate(port: int, contexts: list[tuple[str, str]], calling: str = "SCANNER") -> Any:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, syntax)
    return ae.associate("127.0.0.1", port, ae_title="ABDUS")


def store(port: int, files: list[Path], calling: str = "SCANNER") -> list[int]:
    """C-STORE each file over one association; their status codes."""
    datasets = [pydicom.dcmread(f) for f in files]
    contexts = sorted({(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets})
    assoc = associate(port, contexts, calling)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def http(
    status: dict[str, Any],
    path: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{status['http_port']}{path}"
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def multipart(filename: str, content: bytes) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body with one field "file", and its Content-Type header."""
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; "
        f'name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    body = head.encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def log_events(spool: Path, event: str) -> list[dict[str, Any]]:
    lines = (spool / "serve.log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def us_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three calibrated ultrasound images, each its own study."""
    folder = tmp_path_factory.mktemp("us")
    return [
        factory.make_us_dicom(folder / f"us{i}.dcm", pixel_spacing=(0.3, 0.3), seed=i)
        for i in range(3)
    ]


# -------------------------------------------------------------------------------------- tests
def test_echo_store_process_and_forward_the_sr(model: Path, us_files: list[Path], tmp_path):
    with (
        receiver() as (port, received),
        serving(
            model, tmp_path / "spool", forward=[f"RECEIVER@127.0.0.1:{port}"], workers=2
        ) as status,
    ):
        assoc = associate(status["dicom_port"], [])
        assert assoc.is_established and int(assoc.send_c_echo().Status) == 0
        assoc.release()
        assert store(status["dicom_port"], us_files[:2]) == [0, 0]
        wait_for(lambda: len(received) >= 2, "two forwarded SRs")
        spool = status["spool"]
        for path in us_files[:2]:
            source = pydicom.dcmread(path)
            uid, study = source.SOPInstanceUID, source.StudyInstanceUID
            folder = spool / "results" / study
            assert (folder / f"{uid}.json").exists() and (folder / f"{uid}.sr.dcm").exists()
            assert json.loads((folder / f"{uid}.json").read_text())["view"] is not None
            done = json.loads((spool / "done" / f"{uid}.json").read_text())
            assert done["study_instance_uid"] == study
            code, body = http(status, f"/studies/{study}")
            assert code == 200
            assert [r["name"] for r in json.loads(body)["results"]] == [uid]
        # an instance's incoming file goes just after its done marker, which its forward awaits
        wait_for(lambda: not list((spool / "incoming").iterdir()), "an empty incoming folder")
        sources = sorted(
            ds.CurrentRequestedProcedureEvidenceSequence[0]
            .ReferencedSeriesSequence[0]
            .ReferencedSOPSequence[0]
            .ReferencedSOPInstanceUID
            for ds in received
        )
        assert sources == sorted(pydicom.dcmread(p).SOPInstanceUID for p in us_files[:2])
        wait_for(lambda: not any((spool / "outbox").rglob("*.dcm")), "an empty outbox")
        # a forward is counted and logged just after its outbox file goes
        wanted = (
            "abdus_instances_received_total 2.0",
            "abdus_instances_processed_total 2.0",
            "abdus_receipt_to_forward_seconds_count 2.0",
        )
        assert http(status, "/metrics")[0] == 200
        wait_for(
            lambda: all(w in http(status, "/metrics")[1].decode() for w in wanted),
            "the counts in /metrics",
        )
        wait_for(lambda: len(log_events(spool, "forward")) == 2, "two forward events")
        events = {r["event"] for r in map(json.loads, (spool / "serve.log.jsonl").open())}
        assert {"association", "received", "processed", "result", "forward"} <= events


def test_other_sop_classes_are_refused_at_negotiation(model: Path, tmp_path):
    with serving(model, tmp_path / "spool") as status:
        assoc = associate(status["dicom_port"], [(CTImageStorage, ExplicitVRLittleEndian)])
        try:
            accepted = [cx.abstract_syntax for cx in assoc.accepted_contexts]
            assert CTImageStorage not in accepted
            assert CTImageStorage in [cx.abstract_syntax for cx in assoc.rejected_contexts]
        finally:
            if assoc.is_established:
                assoc.release()


def test_unknown_calling_ae_title_is_rejected(model: Path, us_files: list[Path], tmp_path):
    with serving(model, tmp_path / "spool", allow_ae=["SCANNER"]) as status:
        answers: list[Any] = []
        ae = AE(ae_title="STRANGER")
        ae.add_requested_context(Verification)
        assoc = ae.associate(
            "127.0.0.1",
            status["dicom_port"],
            ae_title="ABDUS",
            evt_handlers=[(evt.EVT_ACSE_RECV, lambda event: answers.append(event.primitive))],
        )
        assert assoc.is_rejected
        # PS3.8 7.1.1.9: rejected-permanent (1), by the service-user (1), calling AE title
        # not recognised (3)
        reject = answers[-1]
        assert (reject.result, reject.result_source, reject.diagnostic) == (1, 1, 3)
        rejected = [
            r for r in log_events(status["spool"], "association") if r["state"] == "rejected"
        ]
        assert rejected and rejected[0]["calling_ae_title"] == "STRANGER"
        assert store(status["dicom_port"], us_files[:1], calling="SCANNER") == [0]


def _truncated_pixels(path: Path, out: Path) -> Path:
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(out, enforce_file_format=True)
    return out


def _no_pixels(path: Path, out: Path) -> Path:
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(out, enforce_file_format=True)
    return out


def test_unreadable_instances_get_a_failure_status_and_the_server_goes_on(
    model: Path, us_files: list[Path], tmp_path
):
    bad = [
        _truncated_pixels(us_files[0], tmp_path / "half.dcm"),
        _no_pixels(us_files[0], tmp_path / "nopixels.dcm"),
    ]
    with serving(model, tmp_path / "spool") as status:
        statuses = store(status["dicom_port"], [*bad, us_files[1]])
        assert statuses[:2] == [0xC000, 0xC000] and statuses[2] == 0
        # a file cut in the middle of an element, sent as its bytes
        cut = tmp_path / "cut.dcm"
        cut.write_bytes(us_files[2].read_bytes()[:700])
        ds = pydicom.dcmread(us_files[2], stop_before_pixels=True)
        assoc = associate(status["dicom_port"], [(ds.SOPClassUID, ExplicitVRLittleEndian)])
        assert int(assoc.send_c_store(cut).Status) in (0xC000, 0xC210, 0xC211)
        assoc.release()
        assert store(status["dicom_port"], us_files[2:]) == [0]
        spool = status["spool"]
        errors = [r for r in log_events(spool, "error") if r.get("stage") == "c-store"]
        assert len(errors) >= 2 and "truncated" in errors[0]["message"]
        uid = pydicom.dcmread(us_files[2]).SOPInstanceUID
        wait_for(lambda: (spool / "done" / f"{uid}.json").exists(), "the good file processed")
        # the incoming file goes just after the done marker is written, not before
        wait_for(lambda: not list((spool / "incoming").iterdir()), "an empty incoming folder")


def test_a_destination_down_then_up_gets_the_result(model: Path, us_files: list[Path], tmp_path):
    port = free_port()
    spool = tmp_path / "spool"
    forward = [f"RECEIVER@127.0.0.1:{port}"]
    with serving(model, spool, forward=forward, retries=8, retry_delay=0.2) as status:
        assert store(status["dicom_port"], us_files[:1]) == [0]
        wait_for(lambda: log_events(spool, "forward_retry"), "a failed forward")
        assert list((spool / "outbox").rglob("*.sr.dcm"))  # kept while the destination is down
        with receiver(port) as (_, received):
            wait_for(lambda: received, "the forward after the destination came up")
            # the outbox file goes once the C-STORE's response is back, after the receipt
            wait_for(lambda: not list((spool / "outbox").rglob("*.sr.dcm")), "an empty outbox")


def test_a_result_goes_to_failed_after_the_last_retry(model: Path, us_files: list[Path], tmp_path):
    spool = tmp_path / "spool"
    forward = [f"GONE@127.0.0.1:{free_port()}"]
    with serving(model, spool, forward=forward, retries=1, retry_delay=0.05) as status:
        assert store(status["dicom_port"], us_files[:1]) == [0]
        reasons = wait_for(lambda: list((spool / "failed").glob("*.reason.txt")), "a failed file")
        assert "gave up after 1 retries" in reasons[0].read_text()
        assert (spool / "failed" / reasons[0].name.removesuffix(".reason.txt")).exists()
        assert len(log_events(spool, "forward_retry")) == 1


def test_rest_health_info_predict_and_studies(model: Path, us_files: list[Path], tmp_path):
    with serving(model, tmp_path / "spool", max_upload_mb=0.05) as status:
        assert http(status, "/health") == (200, b'{"status":"ok"}')
        code, body = http(status, "/info")
        info = json.loads(body)
        assert code == 200 and info["queue_depth"] == 0 and len(info["views"]) == 11
        assert info["model_id"] and info["abdus_version"] and len(info["landmarks"]) == 14
        data, headers = multipart("us0.dcm", us_files[0].read_bytes())
        code, body = http(status, "/predict", data=data, headers=headers)
        records = json.loads(body)
        assert code == 200 and len(records) == 1
        assert records[0]["source"]["file"] == "us0.dcm" and records[0]["view"] is not None
        png = io.BytesIO()
        Image.fromarray(factory.speckle_pattern(96, 128)[0]).save(png, format="PNG")
        data, headers = multipart("screen.png", png.getvalue())
        code, body = http(status, "/predict", data=data, headers=headers)
        records = json.loads(body)
        assert code == 200 and len(records) == 1 and records[0]["view"] is not None
        assert records[0]["measurements_mm"] == {} or all(
            value is None for value in records[0]["measurements_mm"].values()
        )  # a PNG has no spacing: no mm
        data, headers = multipart("junk.dcm", b"not an image at all" * 10)
        code, body = http(status, "/predict", data=data, headers=headers)
        assert code == 400 and "\n" not in json.loads(body)["detail"]
        data, headers = multipart("big.dcm", b"\0" * 80_000)
        assert http(status, "/predict", data=data, headers=headers)[0] == 413
        assert http(status, "/studies/1.2.3.4")[0] == 404
        assert http(status, "/studies/..")[0] == 400
        assert http(status, "/studies/1.2.x")[0] == 400


def test_a_token_guards_every_endpoint(model: Path, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with serving(model, tmp_path / "spool", token_file=token_file) as status:
        assert http(status, "/health")[0] == 401
        assert http(status, "/metrics", headers={"Authorization": "Bearer wrong"})[0] == 401
        good = {"Authorization": "Bearer s3cret-token"}
        assert http(status, "/health", headers=good)[0] == 200
        assert http(status, "/info", headers=good)[0] == 200


def test_off_loopback_without_a_token_refuses_to_start(model: Path, tmp_path):
    with pytest.raises(AbdusInputError, match="token-file"):
        run_serve(model, tmp_path / "spool", host="0.0.0.0", dicom_port=0, http_port=0)
    assert not (tmp_path / "spool").exists()


def test_secondary_capture_is_written_and_forwarded(model: Path, us_files: list[Path], tmp_path):
    spool = tmp_path / "spool"
    with (
        receiver() as (port, received),
        serving(
            model, spool, forward=[f"RECEIVER@127.0.0.1:{port}"], secondary_capture=True
        ) as status,
    ):
        assert store(status["dicom_port"], us_files[:1]) == [0]
        wait_for(lambda: len(received) >= 2, "the forwarded SR and SC")
    source = pydicom.dcmread(us_files[0])
    folder = spool / "results" / source.StudyInstanceUID
    sc = pydicom.dcmread(folder / f"{source.SOPInstanceUID}.sc.dcm")
    assert sc.StudyInstanceUID == source.StudyInstanceUID
    assert sorted(str(ds.SOPClassUID) for ds in received) == sorted(
        [ComprehensiveSRStorage, SecondaryCaptureImageStorage]
    )


def test_a_port_in_use_is_a_clear_error(model: Path, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(AbdusInputError, match=f"cannot listen on 127.0.0.1:{port}"):
            run_serve(model, tmp_path / "spool", dicom_port=port, http_port=0)
    assert not (tmp_path / "spool" / "serve.json").exists()


@pytest.mark.parametrize(
    "syntax",
    [
        pydicom.uid.JPEGBaseline8Bit,
        pydicom.uid.JPEG2000,
        pydicom.uid.JPEG2000Lossless,
        pydicom.uid.RLELossless,
        pydicom.uid.ImplicitVRLittleEndian,
    ],
    ids=lambda uid: uid.name,
)
def test_compressed_and_implicit_instances_are_stored_as_sent_and_processed(
    model: Path, tmp_path, syntax
):
    source = factory.make_us_dicom(
        tmp_path / "in.dcm", transfer_syntax=syntax, pixel_spacing=(0.3, 0.3)
    )
    spool = tmp_path / "spool"
    with serving(model, spool) as status:
        assert store(status["dicom_port"], [source]) == [0]
        uid = pydicom.dcmread(source).SOPInstanceUID
        wait_for(lambda: (spool / "done" / f"{uid}.json").exists(), "processing")
    study = pydicom.dcmread(source).StudyInstanceUID
    record = json.loads((spool / "results" / study / f"{uid}.json").read_text())
    assert record["view"] is not None and record["error"] is None
    log = log_events(spool, "received")
    assert log[0]["transfer_syntax"] == syntax


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workers": 0}, "--workers"),
        ({"forward": ["PACS@host"]}, "AET@HOST:PORT"),
        ({"forward": ["PACS@127.0.0.1:70000"]}, "AET@HOST:PORT"),
        ({"allow_ae": ["A" * 17]}, "--allow-ae"),
        ({"ae_title": "BAD\\AE"}, "--ae-title"),
        ({"retry_delay": 0}, "--retry-delay"),
        ({"max_upload_mb": -1}, "--max-upload-mb"),
        ({"dicom_port": 70000}, "--dicom-port"),
        ({"backend": "tensorrt"}, "backend"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_options_are_one_clear_error_before_anything_starts(
    model: Path, tmp_path, options, message
):
    with pytest.raises(AbdusInputError, match=message):
        run_serve(model, tmp_path / "spool", **options)
    assert not (tmp_path / "spool").exists()


def test_an_empty_token_file_is_refused(model: Path, tmp_path):
    (tmp_path / "token").write_text("\n")
    with pytest.raises(AbdusInputError, match="one token"):
        run_serve(model, tmp_path / "spool", token_file=tmp_path / "token")
