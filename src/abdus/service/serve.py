"""``abdus serve``: a DICOM node and REST service that scanners and PACS can send to.

``run_serve`` (blocking) wires the parts together: the spool (``spool``), the C-STORE SCP
(``dicom_node``), N worker threads that run the ``abdus predict`` path on every received
instance (``processing``), one forwarder per destination (``forwarder``) and the REST API
(``rest``, uvicorn in a thread). Once both listeners are up it writes ``DIR/serve.json``
(pid, AE title, host, ports) atomically. SIGTERM / SIGINT (or ``stop``): stop listening, let
each worker finish the instance in hand, leave the rest spooled for the next start, exit 0.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from abdus.choices import Backend, check_choice
from abdus.errors import AbdusInputError
from abdus.inference.loading import open_predictor
from abdus.inference.outputs import write_overlay_capture
from abdus.inference.predict import ExtraOutput
from abdus.inference.predictor import Prediction
from abdus.io.atomic import atomic_write_json
from abdus.io.types import UltrasoundImage
from abdus.service.dicom_node import DicomNode
from abdus.service.events import EventLog, LibraryLogHandler
from abdus.service.forwarder import Destination, Forwarder
from abdus.service.metrics import ServeMetrics
from abdus.service.processing import Processor, WorkQueue, run_worker
from abdus.service.rest import RestContext, create_app, remove_stale_uploads
from abdus.service.spool import Spool

JOIN_TIMEOUT_S = 60.0


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback name or address (only these may go without a token)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | Path) -> str:
    """The bearer token: the file's text without surrounding white space (not empty)."""
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except OSError as err:
        raise AbdusInputError(f"cannot read the token file: {err.strerror}", token_file) from None
    if not token or any(ch.isspace() for ch in token):
        raise AbdusInputError("the token file must hold one token without spaces", token_file)
    return token


def check_ae_title(ae_title: str, what: str = "--ae-title") -> str:
    """An AE title (PS3.5 6.2: 1-16 characters, no backslash or control characters)."""
    title = ae_title.strip()
    if not 0 < len(title) <= 16 or "\\" in title or not title.isprintable():
        raise AbdusInputError(f"{what} {ae_title!r}: an AE title has 1-16 printable characters")
    return title


def write_secondary_capture(
    name: str, source: Path, image: UltrasoundImage, prediction: Prediction, out: Path
) -> None:
    """The ``ExtraOutput`` of ``--secondary-capture``: ``<name>.sc.dcm``, the overlay as an
    RGB Secondary Capture in the source's study (``outputs.write_overlay_capture``)."""
    write_overlay_capture(out / f"{name}.sc.dcm", source, image, prediction)


def _check_options(o: dict[str, Any]) -> None:
    for key in ("dicom_port", "http_port"):
        if not 0 <= o[key] <= 65535:
            raise AbdusInputError(f"--{key.replace('_', '-')} must be 0-65535, got {o[key]}")
    if o["workers"] < 1:
        raise AbdusInputError(f"--workers must be at least 1, got {o['workers']}")
    if o["retries"] < 0 or not o["retry_delay"] > 0:
        raise AbdusInputError("--retries must be 0 or more and --retry-delay positive")
    if not o["max_upload_mb"] > 0:
        raise AbdusInputError(f"--max-upload-mb must be positive, got {o['max_upload_mb']}")
    if not is_loopback(o["host"]) and o["token_file"] is None:
        raise AbdusInputError(
            f"--host {o['host']} is not loopback: give --token-file so requests need a token"
        )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise AbdusInputError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.listen(64)
    return sock


def run_serve(
    model: str | Path,
    spool: str | Path,
    *,
    ae_title: str = "ABDUS",
    dicom_port: int = 11112,
    allow_ae: Sequence[str] = (),
    forward: Sequence[str] = (),
    http_port: int = 8080,
    host: str = "127.0.0.1",
    token_file: str | Path | None = None,
    backend: str = "torch",
    workers: int = 1,
    secondary_capture: bool = False,
    retries: int = 5,
    retry_delay: float = 1.0,
    max_upload_mb: float = 64.0,
    device: str = "cpu",
    stop: threading.Event | None = None,
) -> int:
    """Serve until SIGTERM / SIGINT (main thread) or ``stop`` is set; returns 0.

    ``model``: run folder or model file. ``spool``: the spool folder (created). Ports: 0 picks
    a free one (``DIR/serve.json`` says which). ``allow_ae``: calling AE titles accepted
    (default: any). ``forward``: ``AET@HOST:PORT`` destinations of every result. ``retries``
    per result and destination, the first after ``retry_delay`` s, doubling. Bad options or
    model: AbdusInputError before anything listens.
    """
    options = dict(locals())
    _check_options(options)
    backend = check_choice(Backend, backend)
    ae_title = check_ae_title(ae_title)
    allowed = [check_ae_title(t, "--allow-ae") for t in allow_ae]
    destinations = [Destination.parse(text) for text in forward]
    token = read_token(token_file) if token_file is not None else None
    extra = write_secondary_capture if secondary_capture else None
    predictor = open_predictor(model, backend=backend, device=device)
    if not predictor.classifies:
        raise AbdusInputError("abdus serve needs a model with a view classifier", model)

    box = Spool(spool)
    box.create()
    box.status_file.unlink(missing_ok=True)
    box.remove_temporaries()
    remove_stale_uploads(box)
    log, metrics = EventLog(box.log_file), ServeMetrics()
    library_log = LibraryLogHandler(log)
    library_log.attach()
    halt = stop if stop is not None else threading.Event()
    signals: list[str] = []
    restore = _install_signal_handlers(halt, signals)
    server = _Server(box, predictor, log, metrics, halt, options, destinations, allowed, extra)
    try:
        server.start(ae_title, host, dicom_port, http_port, token)
        while not halt.wait(0.5):
            pass
        if signals:
            log("signal", signal=signals[0])
    finally:
        server.shutdown()
        box.status_file.unlink(missing_ok=True)
        log("stopped")
        library_log.detach()
        log.close()
        restore()
    return 0


def _install_signal_handlers(halt: threading.Event, received: list[str]) -> Any:
    """SIGTERM / SIGINT set ``halt`` and note their name in ``received`` (main thread only);
    returns the function restoring the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handle(signum: int, _frame: Any) -> None:
        received.append(signal.Signals(signum).name)  # no lock taken in a signal handler
        halt.set()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
    return lambda: [signal.signal(s, h) for s, h in previous.items()]


class _Server:
    """The running parts of one ``run_serve``: threads, listeners, and their shutdown."""

    def __init__(
        self,
        spool: Spool,
        predictor: Any,
        log: EventLog,
        metrics: ServeMetrics,
        halt: threading.Event,
        options: dict[str, Any],
        destinations: list[Destination],
        allowed: list[str],
        extra: ExtraOutput | None,
    ) -> None:
        self.spool, self.predictor, self.log, self.metrics = spool, predictor, log, metrics
        self.options, self.destinations, self.allowed = options, destinations, allowed
        self.workers_stop = threading.Event()  # set after the listeners close
        self.threads: list[threading.Thread] = []
        self.forwarders: list[Forwarder] = []
        self.work = WorkQueue()
        self.processor = Processor(
            spool,
            predictor,
            log,
            metrics,
            destinations=[str(d) for d in destinations],
            extra_output=extra,
            on_commit=self._wake_forwarders,
        )
        self.node: DicomNode | None = None
        self.http: uvicorn.Server | None = None
        self.halt = halt

    def _wake_forwarders(self) -> None:
        for forwarder in self.forwarders:
            forwarder.wake.set()

    def _thread(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def start(self, ae_title: str, host: str, dicom_port: int, http_port: int, token: Any) -> None:
        o = self.options
        for path in self.spool.pending_incoming():  # left by an earlier run: exactly once
            self.work.put(path)
        for i in range(o["workers"]):
            self._thread(
                f"abdus-worker-{i}", run_worker, self.processor, self.work, self.workers_stop
            )
        for destination in self.destinations:
            forwarder = Forwarder(
                destination,
                self.spool,
                self.log,
                self.metrics,
                self.workers_stop,
                calling_ae_title=ae_title,
                retries=o["retries"],
                retry_delay_s=o["retry_delay"],
            )
            self.forwarders.append(forwarder)
            self._thread(f"abdus-forward-{destination}", forwarder.run)
        self.node = DicomNode(
            self.spool,
            self.log,
            self.metrics,
            self.work.put,
            ae_title=ae_title,
            allowed_calling_aets=self.allowed,
        )
        dicom_port = self.node.start(host, dicom_port)
        sock = _bind(host, http_port)
        context = RestContext(
            spool=self.spool,
            predictor=self.predictor,
            metrics=self.metrics,
            log=self.log,
            queue_depth=self.work.depth,
            ae_title=ae_title,
            token=token,
            max_upload_bytes=int(o["max_upload_mb"] * (1 << 20)),
        )
        config = uvicorn.Config(
            create_app(context), log_config=None, access_log=False, lifespan="off"
        )
        self.http = uvicorn.Server(config)
        self._thread("abdus-http", self._run_http, sock)
        status = {
            "pid": os.getpid(),
            "ae_title": ae_title,
            "host": host,
            "dicom_port": dicom_port,
            "http_port": int(sock.getsockname()[1]),
        }
        self._wait_http_started()
        atomic_write_json(self.spool.status_file, status)
        self.log(
            "started",
            **status,
            workers=o["workers"],
            model_id=self.predictor.model_id,
            transfer_syntaxes=self.node.transfer_syntaxes,
            forward=[str(d) for d in self.destinations],
            queued=self.work.depth(),
        )

    def _run_http(self, sock: socket.socket) -> None:
        try:
            self.http.run(sockets=[sock])
        except BaseException as err:  # the REST side died: stop the whole server
            self.log("error", stage="http", message=f"{type(err).__name__}: {err}")
            self.halt.set()

    def _wait_http_started(self) -> None:
        for _ in range(600):  # at most 60 s
            if self.http.started or self.halt.wait(0.1):
                return

    def shutdown(self) -> None:
        self.log("stopping", queued=self.work.depth())
        if self.node is not None:
            self.node.stop()
        if self.http is not None:
            self.http.should_exit = True
        self.workers_stop.set()
        self._wake_forwarders()
        for thread in self.threads:
            thread.join(timeout=JOIN_TIMEOUT_S)
