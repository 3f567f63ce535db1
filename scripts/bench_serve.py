"""Load run of ``abdus serve``: N instances over K parallel associations, every SR forwarded.

Starts ``abdus serve MODEL`` on 127.0.0.1 (free ports) forwarding to a pynetdicom storage SCP of
this script, sends N ultrasound instances of a generated cohort (``ceil(N / 13)`` patients,
real phantom images, one new study per patient) over K associations in K threads, then waits
(bounded) until each acknowledged instance's SR has come back. Reports:

- instances/s: SRs received / (last SR received - first C-STORE sent);
- latency from acknowledgement of the C-STORE (the server has spooled the instance) to receipt
  of its forwarded SR (p50, p95, max; client clock, the SR matched by its
  ReferencedSOPInstanceUID);
- counts: sent, acknowledged, processed / failed / forwarded (the server's ``/metrics``), SRs
  received, lost (acknowledged without an SR); the server's mean processing and
  receipt-to-forward seconds (``/metrics`` histograms);
- the machine (``lscpu`` model, cores, avx2 / avx512 flags).

    .venv/bin/python scripts/bench_serve.py --model /tmp/w/stab/seed-0/run \
        [--instances 200] [--associations 4] [--workers 1] [--timeout 900] [--json OUT]

The server runs until the end and is then stopped (SIGTERM, then SIGKILL) with its process
group; its spool, log and the generated images are in a temporary folder removed afterwards
(``--keep DIR`` keeps them there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

try:
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import (
        BasicTextSRStorage,
        Comprehensive3DSRStorage,
        ComprehensiveSRStorage,
        EnhancedSRStorage,
        SecondaryCaptureImageStorage,
    )
except ImportError:  # pragma: no cover - the service's own dependency
    sys.exit("bench_serve.py needs pynetdicom (installed with abdus's service dependencies)")

LOOPBACK = "127.0.0.1"
IMAGES_PER_PATIENT = 13  # abdus.phantom: one image of each standard view, and two more
SERVE_START_S = 180.0
STOP_S = 30.0
RECEIVER_AE, SENDER_AE = "BENCHRCV", "BENCHSCU"


@dataclass
class Timeline:
    """Client-side times (``time.monotonic()`` s) per source SOPInstanceUID."""

    sent: dict[str, float] = field(default_factory=dict)
    acknowledged: dict[str, float] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    sr_received: dict[str, float] = field(default_factory=dict)
    unmatched_srs: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def bounded_poll(condition, timeout_s: float, poll_s: float = 0.5) -> bool:
    """Poll until ``condition()`` is true; at most ``timeout_s`` s and ``timeout_s / poll_s + 1``
    polls. Returns whether it became true."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / poll_s) + 1):
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return False


# ---------------------------------------------------------------------------------------------
# Instances


def load_instances(count: int, folder: Path) -> list[pydicom.Dataset]:
    """``count`` datasets from a generated cohort of ``ceil(count / 13)`` patients."""
    from abdus.phantom.generate import generate_cohort

    patients = math.ceil(count / IMAGES_PER_PATIENT)
    print(f"generating {patients} phantom patients in {folder} ...", flush=True)
    generate_cohort(folder, patients=patients, seed=0, image_format="dicom", progress=False)
    files = sorted(folder.rglob("*.dcm"))
    instances = [pydicom.dcmread(path) for path in files[:count]]
    for index in range(len(instances), count):  # only if the cohort came out short
        clone = pydicom.dcmread(files[index % len(files)])
        clone.SOPInstanceUID = generate_uid()
        clone.file_meta.MediaStorageSOPInstanceUID = clone.SOPInstanceUID
        instances.append(clone)
    return instances


# ---------------------------------------------------------------------------------------------
# The receiver of the forwarded SRs, and the senders


def referenced_sop_instances(ds: pydicom.Dataset) -> set[str]:
    return {str(e.value) for e in ds.iterall() if e.keyword == "ReferencedSOPInstanceUID"}


def start_receiver(port: int, timeline: Timeline):
    """A pynetdicom storage SCP on 127.0.0.1 recording when each source's SR arrives."""

    def on_store(event) -> int:
        now = time.monotonic()
        ds = event.dataset
        with timeline.lock:
            sources = referenced_sop_instances(ds) & timeline.sent.keys()
            if not sources:
                timeline.unmatched_srs += 1
            for uid in sources:
                timeline.sr_received.setdefault(uid, now)
        return 0x0000

    ae = AE(ae_title=RECEIVER_AE)
    for sop_class in (
        BasicTextSRStorage,
        EnhancedSRStorage,
        ComprehensiveSRStorage,
        Comprehensive3DSRStorage,
        SecondaryCaptureImageStorage,
    ):
        ae.add_supported_context(sop_class)
    ae.maximum_associations = 16
    server = ae.start_server(
        (LOOPBACK, port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    return ae, server


def send_share(
    instances: list[pydicom.Dataset], serve: dict, timeline: Timeline, errors: list[str]
) -> None:
    """One association sending ``instances`` one after the other (one thread)."""
    ae = AE(ae_title=SENDER_AE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    contexts = {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in instances}
    for sop_class, syntax in sorted(contexts):
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(serve["host"], int(serve["dicom_port"]), ae_title=serve["ae_title"])
    if not assoc.is_established:
        errors.append("association refused or failed")
        return
    try:
        for ds in instances:
            uid = str(ds.SOPInstanceUID)
            with timeline.lock:
                timeline.sent[uid] = time.monotonic()
            try:
                status = assoc.send_c_store(ds)
            except ValueError as error:  # the server accepted no context for this syntax
                with timeline.lock:
                    timeline.refused[uid] = str(error)
                continue
            now = time.monotonic()
            code = getattr(status, "Status", None)
            with timeline.lock:
                if code == 0x0000:
                    timeline.acknowledged[uid] = now
                else:
                    timeline.refused[uid] = "no response" if code is None else f"0x{code:04X}"
    finally:
        assoc.release()


# ---------------------------------------------------------------------------------------------
# The server


def start_serve(args, spool: Path, receiver_port: int) -> tuple[subprocess.Popen, dict]:
    abdus = Path(sys.executable).with_name("abdus")
    command = [
        str(abdus), "serve", str(args.model), "--spool", str(spool), "--host", LOOPBACK,
        "--dicom-port", "0", "--http-port", "0", "--workers", str(args.workers),
        "--forward", f"{RECEIVER_AE}@{LOOPBACK}:{receiver_port}",
    ]  # fmt: skip
    log = (spool.parent / "serve.out").open("ab")
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    info_path = spool / "serve.json"

    def listening() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"abdus serve exited ({process.returncode}); see {log.name}")
        return info_path.exists() and bool(info_path.read_text().strip())

    if not bounded_poll(listening, SERVE_START_S):
        stop(process)
        raise SystemExit(f"abdus serve did not write {info_path} in {SERVE_START_S:.0f} s")
    return process, json.loads(info_path.read_text())


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after ``STOP_S`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_S)


def metric_totals(serve: dict) -> dict[str, float]:
    """Each sample of ``GET /metrics`` summed over its labels (counters as ``*_total``,
    histograms as ``*_sum`` and ``*_count``; buckets skipped)."""
    url = f"http://{serve['host']}:{serve['http_port']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        name = sample.split("{")[0]
        if line.startswith("#") or not name.endswith(("_total", "_sum", "_count")):
            continue
        totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def mean_seconds(totals: dict[str, float], histogram: str) -> float | None:
    count = totals.get(f"{histogram}_count", 0.0)
    return round(totals[f"{histogram}_sum"] / count, 3) if count else None


# ---------------------------------------------------------------------------------------------
# Report


def machine() -> dict:
    """CPU model, core count and the vector extensions torch can use (from ``lscpu``)."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    flags = fields.get("Flags", "").split()
    return {
        "cpu": fields.get("Model name", platform.processor()),
        "cpus": int(fields.get("CPU(s)", os.cpu_count() or 0)),
        "usable_cores": len(os.sched_getaffinity(0)),
        "vector_flags": sorted(f for f in flags if f == "avx2" or f.startswith("avx512")),
    }


def summarise(
    args, timeline: Timeline, totals: dict[str, float], wall_s: float, send_s: float
) -> dict:
    acknowledged = timeline.acknowledged
    done = [uid for uid in acknowledged if uid in timeline.sr_received]
    latencies = np.array([timeline.sr_received[u] - acknowledged[u] for u in done])
    first_sent = min(timeline.sent.values(), default=0.0)
    last_sr = max((timeline.sr_received[u] for u in done), default=first_sent)
    span = last_sr - first_sent
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "model": str(args.model),
        "instances": args.instances,
        "associations": args.associations,
        "workers": args.workers,
        "sent": len(timeline.sent),
        "acknowledged": len(acknowledged),
        "refused": len(timeline.refused),
        "processed": int(totals.get("abdus_instances_processed_total", -1)),
        "failed": int(totals.get("abdus_instances_failed_total", -1)),
        "forwarded": int(totals.get("abdus_results_forwarded_total", -1)),
        "srs_received": len(done),
        "unmatched_srs": timeline.unmatched_srs,
        "lost": len(acknowledged) - len(done),
        "instances_per_s": round(len(done) / span, 3) if span > 0 else None,
        "latency_s": {
            "p50": round(float(np.percentile(latencies, 50)), 3) if len(done) else None,
            "p95": round(float(np.percentile(latencies, 95)), 3) if len(done) else None,
            "max": round(float(latencies.max()), 3) if len(done) else None,
        },
        "server_mean_s": {
            "processing": mean_seconds(totals, "abdus_processing_seconds"),
            "receipt_to_forward": mean_seconds(totals, "abdus_receipt_to_forward_seconds"),
        },
        "send_s": round(send_s, 1),
        "wall_s": round(wall_s, 1),
        "machine": machine(),
    }


def run(args, workdir: Path) -> dict:
    instances = load_instances(args.instances, workdir / "images")
    timeline = Timeline()
    receiver_port = free_port()
    receiver_ae, receiver = start_receiver(receiver_port, timeline)
    spool = workdir / "spool"
    process, serve = start_serve(args, spool, receiver_port)
    print(f"abdus serve {serve['ae_title']} on {LOOPBACK}:{serve['dicom_port']}", flush=True)
    try:
        started = time.monotonic()
        errors: list[str] = []
        shares = [instances[k :: args.associations] for k in range(args.associations)]
        threads = [
            threading.Thread(target=send_share, args=(share, serve, timeline, errors))
            for share in shares
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=args.timeout)
        sent_s = time.monotonic() - started
        print(f"sent {len(timeline.acknowledged)} acknowledged in {sent_s:.1f} s", flush=True)

        def all_back() -> bool:
            with timeline.lock:
                return timeline.acknowledged.keys() <= timeline.sr_received.keys()

        remaining = max(1.0, args.timeout - (time.monotonic() - started))
        if not bounded_poll(all_back, remaining):
            print(f"timed out after {args.timeout:.0f} s waiting for the SRs", flush=True)
        totals = metric_totals(serve)
        result = summarise(args, timeline, totals, time.monotonic() - started, sent_s)
        result["errors"] = errors
        return result
    finally:
        stop(process)
        receiver.shutdown()
        receiver_ae.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="trained run or model file")
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--associations", type=int, default=4, help="parallel C-STORE senders")
    parser.add_argument("--workers", type=int, default=1, help="abdus serve --workers")
    parser.add_argument("--timeout", type=float, default=900.0, help="whole run, seconds")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--keep", type=Path, help="keep images, spool and log in this folder")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
        result = run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
            result = run(args, Path(tmp))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
