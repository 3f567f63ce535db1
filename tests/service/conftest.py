"""Fixtures of the ``abdus serve`` tests against real DICOM software (dcmtk, Orthanc).

Everything runs on this machine, on loopback (127.0.0.1) and free ports; every process a test
starts is stopped by its fixture's finalizer (SIGTERM to its process group, then SIGKILL), even
when the test fails. Every wait is bounded in polls and in seconds. A missing tool skips the
tests that need it with the line that installs it (``scripts/install_system_deps.sh``).

Fixtures
--------
``serve_run``          a run folder with an untrained ``tiny``-preset ``model.pt``
``us_study``           3 uncompressed ultrasound DICOMs of one generated study (one patient)
``start_serve``        ``start_serve(forward=[...], allow_ae=[...], dicom_port=0)`` -> ``Serve``
``start_storescp``     ``start_storescp(ae_title)`` -> ``Receiver`` (dcmtk storescp, its folder)
``orthanc_with_abdus`` a running Orthanc whose modality ``abdus`` is a running ``abdus serve``
                       that forwards its SRs back to Orthanc -> ``(Orthanc, Serve)``
``dcmtk_tool``         ``dcmtk_tool("echoscu")`` -> the tool's path, or skip
``bounded_wait``       ``bounded_wait(condition, timeout_s=..., what=...)``, polls bounded
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from testkit import one_thread, save_tiny_model, wait_until  # noqa: F401  (autouse fixture)

LOOPBACK = "127.0.0.1"
INSTALL_HINT = "install it with `bash scripts/install_system_deps.sh` (apt-get, as root)"
SERVE_START_S = 120.0  # importing torch and opening the model on 2 busy cores
PROCESS_STOP_S = 10.0
POLL_S = 0.25


# ---------------------------------------------------------------------------------------------
# Bounded waiting, free ports, processes


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on loopback now (the OS picks them; all are held open
    together so that it cannot hand out one twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on ``127.0.0.1:port``."""
    with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=1):
        return True
    return False


def find_tool(name: str) -> str | None:
    """The path of a system tool (``/usr/sbin`` too: Debian puts ``Orthanc`` there)."""
    found = shutil.which(name)
    if found is None and os.access(f"/usr/sbin/{name}", os.X_OK):
        found = f"/usr/sbin/{name}"
    return found


def require_tool(name: str, package: str) -> str:
    """The path of ``name``, or skip the test saying how to install ``package``."""
    path = find_tool(name)
    if path is None:
        pytest.skip(f"{name} (Debian package {package}) not found; {INSTALL_HINT}")
    return path


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, for a failure message."""
    if not path.exists():
        return f"({path} was never written)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Process:
    """A subprocess in its own process group, stdout and stderr to ``log``."""

    def __init__(self, command: list[str], log: Path, env: dict[str, str] | None = None):
        self.command, self.log = command, log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: stop() reaches its children
            )

    def running(self) -> bool:
        return self.popen.poll() is None

    def check_running(self, what: str) -> None:
        """Fail the test, with the log's tail, if the process has exited."""
        if not self.running():
            pytest.fail(
                f"{what} exited with status {self.popen.returncode}; its log {self.log}:\n"
                + log_tail(self.log)
            )

    def stop(self) -> None:
        """SIGTERM to the process group, then SIGKILL after ``PROCESS_STOP_S`` seconds."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.popen.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=PROCESS_STOP_S)
        # The leader has exited; take down anything it left in its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def processes() -> Iterator[list[Process]]:
    """Every process a module's fixtures start; all stopped (last first) when it ends."""
    started: list[Process] = []
    yield started
    for process in reversed(started):
        process.stop()


# ---------------------------------------------------------------------------------------------
# Model and images


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained ``tiny``-preset model file, one per test module."""
    return save_tiny_model(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture(scope="session")
def serve_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding only ``model.pt``: the ``tiny`` preset's MGCN_R, untrained (seed 0),
    as in ``tests/inference/conftest.py``. Its predictions are arbitrary but well formed, which
    is all a test of the service's plumbing needs."""
    run = tmp_path_factory.mktemp("serve-run")
    save_tiny_model(run / "model.pt")
    return run


@pytest.fixture(scope="session")
def us_study(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """3 ultrasound images of one study (one generated patient, about 2 s), uncompressed, so
    that any DICOM peer accepts them without transcoding."""
    from abdus.phantom.generate import generate_cohort

    root = tmp_path_factory.mktemp("study")
    generate_cohort(root, patients=1, seed=2, image_format="dicom", progress=False)
    uncompressed = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
    files = [
        path
        for path in sorted(root.rglob("*.dcm"))
        if pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        in uncompressed
    ]
    assert len(files) >= 3, f"the generated patient has only {len(files)} uncompressed images"
    return files[:3]


@pytest.fixture(scope="session")
def bounded_wait() -> Callable[..., Any]:
    """``bounded_wait(condition, timeout_s=..., what=...)``: see ``wait_until``."""
    return wait_until


# ---------------------------------------------------------------------------------------------
# abdus serve


@dataclass
class Serve:
    """A running ``abdus serve``: what its ``serve.json`` says, its spool and its log."""

    process: Process
    spool: Path
    ae_title: str
    host: str
    dicom_port: int
    http_port: int

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.http_port}{path}"

    def get_text(self, path: str) -> str:
        with urllib.request.urlopen(self.url(path), timeout=10) as response:
            return response.read().decode()

    def done(self, sop_uid: str) -> Path:
        return self.spool / "done" / f"{sop_uid}.json"

    def failures(self) -> list[str]:
        failed = self.spool / "failed"
        return sorted(p.name for p in failed.iterdir()) if failed.is_dir() else []

    def wait_processed(self, sop_uids: list[str], timeout_s: float) -> None:
        """Wait until every instance has its ``done/`` marker; fail early on a ``failed/``
        entry or a dead server, with the server's log."""

        def all_done() -> bool:
            self.process.check_running("abdus serve")
            if self.failures():
                pytest.fail(
                    f"abdus serve failed {self.failures()}; log:\n{log_tail(self.process.log)}"
                )
            return all(self.done(uid).exists() for uid in sop_uids)

        wait_until(all_done, timeout_s=timeout_s, what=f"abdus serve to process {len(sop_uids)}")


def abdus_command() -> list[str]:
    """The ``abdus`` entry point of the interpreter running the tests."""
    script = Path(sys.executable).with_name("abdus")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from abdus.cli import main; sys.exit(main())"]


def quiet_env() -> dict[str, str]:
    """One intra-op thread per server: the tests share 2 cores with everything else."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def start_serve(
    serve_run: Path, tmp_path_factory: pytest.TempPathFactory, processes: list[Process]
) -> Callable[..., Serve]:
    """``start_serve(forward=["AET@127.0.0.1:PORT"], allow_ae=["AET"], dicom_port=0,
    ae_title="ABDUS")``: start
    ``abdus serve`` on loopback and wait (bounded) for its ``serve.json``."""

    def start(
        forward: Sequence[str] = (),
        allow_ae: Sequence[str] = (),
        dicom_port: int = 0,
        ae_title: str = "ABDUS",
    ) -> Serve:
        spool = tmp_path_factory.mktemp("spool")
        command = [
            *abdus_command(), "serve", str(serve_run), "--spool", str(spool),
            "--ae-title", ae_title, "--host", LOOPBACK, "--dicom-port", str(dicom_port),
            "--http-port", "0", "--workers", "1",
        ]  # fmt: skip
        for destination in forward:
            command += ["--forward", destination]
        for calling_ae in allow_ae:
            command += ["--allow-ae", calling_ae]
        process = Process(command, spool.parent / f"{spool.name}.log", env=quiet_env())
        processes.append(process)
        info_path = spool / "serve.json"

        def listening() -> dict | None:
            process.check_running("abdus serve")
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                return json.loads(info_path.read_text())
            return None

        info = wait_until(listening, timeout_s=SERVE_START_S, what=f"{info_path}")
        return Serve(
            process=process,
            spool=spool,
            ae_title=str(info["ae_title"]),
            host=str(info["host"]),
            dicom_port=int(info["dicom_port"]),
            http_port=int(info["http_port"]),
        )

    return start


# ---------------------------------------------------------------------------------------------
# dcmtk


@pytest.fixture(scope="session")
def dcmtk_tool() -> Callable[[str], str]:
    """``dcmtk_tool(name)`` -> the path of a dcmtk tool, or skip."""
    return lambda name: require_tool(name, "dcmtk")


@dataclass
class Receiver:
    """A DICOM storage SCP on loopback that writes what it receives into ``folder``."""

    process: Process
    ae_title: str
    port: int
    folder: Path

    @property
    def destination(self) -> str:
        """How ``abdus serve --forward`` names it."""
        return f"{self.ae_title}@{LOOPBACK}:{self.port}"

    def datasets(self) -> list[pydicom.Dataset]:
        """Every complete file received so far (one still being written is skipped)."""
        found = []
        for path in sorted(self.folder.glob("*.dcm")):
            with contextlib.suppress(Exception):
                found.append(pydicom.dcmread(path, stop_before_pixels=True))
        return found

    def wait_datasets(self, count: int, timeout_s: float) -> list[pydicom.Dataset]:
        """Wait (bounded) until at least ``count`` files have arrived; returns them all."""

        def arrived() -> list[pydicom.Dataset]:
            self.process.check_running("storescp")
            received = self.datasets()
            return received if len(received) >= count else []

        return wait_until(arrived, timeout_s=timeout_s, what=f"{count} files at {self.ae_title}")


@pytest.fixture(scope="module")
def start_storescp(
    dcmtk_tool: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
    processes: list[Process],
) -> Callable[[str], Receiver]:
    """``start_storescp(ae_title)``: a dcmtk ``storescp`` on a free port, its files in a tmp
    folder (``<modality>.<SOPInstanceUID>.dcm``). dcmtk 3.6 cannot bind to one interface: it
    listens on every interface, on a random free port, for the length of one test module."""
    storescp = dcmtk_tool("storescp")

    def start(ae_title: str = "RECEIVER") -> Receiver:
        folder = tmp_path_factory.mktemp("storescp")
        (port,) = free_ports(1)
        command = [
            storescp, "--aetitle", ae_title, "--output-directory", str(folder),
            "--filename-extension", ".dcm", "--accept-all", str(port),
        ]  # fmt: skip
        process = Process(command, folder.parent / f"{folder.name}.log")
        processes.append(process)

        def ready() -> bool:
            process.check_running("storescp")
            return port_open(port)

        wait_until(ready, timeout_s=15, what=f"storescp on port {port}")
        return Receiver(process=process, ae_title=ae_title, port=port, folder=folder)

    return start


# ---------------------------------------------------------------------------------------------
# Orthanc


@dataclass
class Orthanc:
    """A running Orthanc: its REST API on loopback and its DICOM AE."""

    process: Process
    http_port: int
    dicom_port: int
    ae_title: str

    def request(self, method: str, path: str, body: Any = None, timeout_s: float = 30) -> Any:
        """One REST call; JSON in and out (bytes in for ``POST /instances``)."""
        data = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{self.http_port}{path}",
            data=data.encode() if isinstance(data, str) else data,
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:  # Orthanc says why in the body
            body = error.read().decode(errors="replace")
            pytest.fail(f"Orthanc {method} {path}: {error}: {body}")
        return json.loads(payload) if payload[:1] in (b"{", b"[") else payload


def orthanc_config(
    folder: Path, *, http_port: int, dicom_port: int, ae_title: str, abdus: dict
) -> dict:
    """A minimal Orthanc configuration (key names as in Orthanc 1.10's default
    ``/etc/orthanc/orthanc.json``): its own storage, no plugins, HTTP for local clients only,
    and DICOM stores accepted only from the known modality ``abdus`` on 127.0.0.1."""
    return {
        "Name": "abdus-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "Plugins": [],
        "LuaScripts": [],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,  # the REST API answers loopback clients only
        "AuthenticationEnabled": False,
        "HttpThreadsCount": 4,
        "DicomServerEnabled": True,
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "DicomThreadsCount": 2,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": False,  # only the modalities below may store ...
        "DicomCheckModalityHost": True,  # ... and only from their own host (127.0.0.1)
        "DicomModalities": {"abdus": abdus},
        "DicomScuTimeout": 30,
        "DicomAssociationCloseDelay": 0,
        "ConcurrentJobs": 1,
        "SaveJobs": False,
        "StorageCompression": False,
    }


def start_orthanc(folder: Path, config: dict, processes: list[Process]) -> Orthanc:
    """Start Orthanc with ``config`` written in ``folder``; wait (bounded) for its REST API."""
    binary = require_tool("Orthanc", "orthanc")
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    logs = folder / "logs"
    logs.mkdir()
    process = Process([binary, f"--logdir={logs}", str(config_path)], folder / "orthanc.out")
    processes.append(process)
    orthanc = Orthanc(
        process=process,
        http_port=config["HttpPort"],
        dicom_port=config["DicomPort"],
        ae_title=config["DicomAet"],
    )

    def ready() -> bool:
        process.check_running("Orthanc")
        with contextlib.suppress(OSError, urllib.error.URLError):
            return bool(orthanc.request("GET", "/system", timeout_s=2))
        return False

    wait_until(ready, timeout_s=60, what="Orthanc's REST API")
    return orthanc


@pytest.fixture(scope="module")
def orthanc_with_abdus(
    start_serve: Callable[..., Serve],
    tmp_path_factory: pytest.TempPathFactory,
    processes: list[Process],
) -> tuple[Orthanc, Serve]:
    """Orthanc (AE ``ORTHANC``) knowing ``abdus serve`` as modality ``abdus``, and that
    ``abdus serve`` forwarding its SRs to Orthanc. The abdus DICOM port is chosen first, since
    each configuration names the other's."""
    require_tool("Orthanc", "orthanc")
    abdus_port, http_port, dicom_port = free_ports(3)
    abdus_ae = "ABDUS"
    folder = tmp_path_factory.mktemp("orthanc")
    modality = {"AET": abdus_ae, "Host": LOOPBACK, "Port": abdus_port, "AllowStore": True}
    config = orthanc_config(
        folder, http_port=http_port, dicom_port=dicom_port, ae_title="ORTHANC", abdus=modality
    )
    orthanc = start_orthanc(folder, config, processes)
    serve = start_serve(
        forward=[f"{orthanc.ae_title}@{LOOPBACK}:{orthanc.dicom_port}"],
        dicom_port=abdus_port,
        ae_title=abdus_ae,
    )
    return orthanc, serve
