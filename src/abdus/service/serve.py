"""``abdus serve``: a DICOM node and REST service that scanners and PACS can send to.

``run_serve`` (blocking) wires the parts together: the spool (``spool``), the C-STORE SCP
(``dicom_node``), N worker threads that run the ``abdus predict`` path on every received
instance (``processing``), one forwarder per destination (``forwarder``) and the REST API
(``rest``, uvicorn in a thread). Once both listeners are up it writes ``DIR/serve.json``
(pid, AE title, host, ports) atomically. SIGTERM / SIGINT (or ``stop``): stop listening, let
each worker finish the instance in hand, leave the rest spooled for the next start, exit 0.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import uvicorn

from abdus.errors import AbdusInputError
from abdus.inference.loading import open_predictor
from abdus.inference.outputs import write_overlay_capture
from abdus.inference.predictor import BasePredictor, Prediction
from abdus.io.atomic import atomic_write_json
from abdus.io.types import UltrasoundImage
from abdus.service.dicom_node import DicomNode
from abdus.service.events import EventLog, LibraryLogHandler
from abdus.service.forwarder import Forwarder
from abdus.service.listen import bind_listener
from abdus.service.metrics import ServeMetrics
from abdus.service.options import ServeOptions
from abdus.service.processing import Processor, WorkQueue, run_worker
from abdus.service.rest import RestContext, create_app, remove_stale_uploads
from abdus.service.spool import Spool

JOIN_TIMEOUT_S = 60.0


def write_secondary_capture(
    name: str, source: Path, image: UltrasoundImage, prediction: Prediction, out: Path
) -> None:
    """The ``ExtraOutput`` of ``--secondary-capture``: ``<name>.sc.dcm``, the overlay as an
    RGB Secondary Capture in the source's study (``outputs.write_overlay_capture``)."""
    write_overlay_capture(out / f"{name}.sc.dcm", source, image, prediction)


def run_serve(
    model: str | Path, spool: str | Path, *, stop: threading.Event | None = None, **options: Any
) -> int:
    """Serve until SIGTERM / SIGINT (main thread) or ``stop`` is set; returns 0.

    ``model``: run folder or model file. ``spool``: the spool folder (created). ``options``:
    the fields of ``ServeOptions`` (``ae_title``, ``dicom_port``, ``http_port``, ``host``,
    ``backend``, ``workers``, ``secondary_capture``, ``retries``, ``retry_delay``,
    ``max_upload_mb``, ``device``) and ``allow_ae`` (calling AE titles accepted; default any),
    ``forward`` (``AET@HOST:PORT`` destinations of every result), ``token_file``. Ports: 0
    picks a free one (``DIR/serve.json`` says which). Bad options or model: AbdusInputError
    before anything listens.
    """
    try:
        checked = ServeOptions.checked(**options)
    except TypeError as err:  # an unknown keyword
        raise AbdusInputError(f"run_serve: {err}") from None
    predictor = open_predictor(model, backend=checked.backend, device=checked.device)
    if not predictor.classifies:
        raise AbdusInputError("abdus serve needs a model with a view classifier", model)
    box = Spool(spool)
    box.create()
    box.status_file.unlink(missing_ok=True)
    box.remove_temporaries()
    remove_stale_uploads(box)
    log = EventLog(box.log_file)
    library_log = LibraryLogHandler(log)
    library_log.attach()
    halt = stop if stop is not None else threading.Event()
    signals: list[str] = []
    restore = _install_signal_handlers(halt, signals)
    server = _Server(box, predictor, log, checked, halt)
    try:
        server.start()
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
        predictor: BasePredictor,
        log: EventLog,
        options: ServeOptions,
        halt: threading.Event,
    ) -> None:
        self.spool, self.predictor, self.log, self.options = spool, predictor, log, options
        self.halt = halt  # set by a signal, the caller, or a dead REST thread
        self.metrics = ServeMetrics()
        self.workers_stop = threading.Event()  # set after the listeners close
        self.threads: list[threading.Thread] = []
        self.forwarders: list[Forwarder] = []
        self.work = WorkQueue()
        self.processor = Processor(
            spool,
            predictor,
            log,
            self.metrics,
            destinations=[str(d) for d in options.forward],
            extra_output=write_secondary_capture if options.secondary_capture else None,
            on_commit=self._wake_forwarders,
        )
        self.node: DicomNode | None = None
        self.http: uvicorn.Server | None = None

    def _wake_forwarders(self) -> None:
        for forwarder in self.forwarders:
            forwarder.wake.set()

    def _thread(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def start(self) -> None:
        """Queue what an earlier run left, start workers and forwarders, listen, write
        ``serve.json``."""
        o = self.options
        for path in self.spool.pending_incoming():  # left by an earlier run: exactly once
            self.work.put(path)
        for i in range(o.workers):
            self._thread(
                f"abdus-worker-{i}", run_worker, self.processor, self.work, self.workers_stop
            )
        for destination in o.forward:
            forwarder = Forwarder(
                destination,
                self.spool,
                self.log,
                self.metrics,
                self.workers_stop,
                calling_ae_title=o.ae_title,
                retries=o.retries,
                retry_delay_s=o.retry_delay,
            )
            self.forwarders.append(forwarder)
            self._thread(f"abdus-forward-{destination}", forwarder.run)
        self.node = DicomNode(
            self.spool,
            self.log,
            self.metrics,
            self.work.put,
            ae_title=o.ae_title,
            allowed_calling_aets=o.allow_ae,
        )
        dicom_port = self.node.start(o.host, o.dicom_port)
        http_port = self._start_http()
        status = {
            "pid": os.getpid(),
            "ae_title": o.ae_title,
            "host": o.host,
            "dicom_port": dicom_port,
            "http_port": http_port,
        }
        atomic_write_json(self.spool.status_file, status)
        self.log(
            "started",
            **status,
            workers=o.workers,
            model_id=self.predictor.model_id,
            backend=self.predictor.name,
            backend_reason=getattr(self.predictor.backend_choice, "reason", "named by --backend"),
            transfer_syntaxes=self.node.transfer_syntaxes,
            forward=[str(d) for d in o.forward],
            queued=self.work.depth(),
        )

    def _start_http(self) -> int:
        """Start uvicorn on a socket bound here (so port 0 is known); returns the port once
        it serves (or the server is halting)."""
        o = self.options
        sock = bind_listener(o.host, o.http_port)
        context = RestContext(
            spool=self.spool,
            predictor=self.predictor,
            metrics=self.metrics,
            log=self.log,
            queue_depth=self.work.depth,
            ae_title=o.ae_title,
            token=o.token,
            max_upload_bytes=o.max_upload_bytes,
        )
        app = create_app(context)
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self.http = uvicorn.Server(config)
        self._thread("abdus-http", self._run_http, sock)
        for _ in range(600):  # at most 60 s
            if self.http.started or self.halt.wait(0.1):
                break
        return int(sock.getsockname()[1])

    def _run_http(self, sock: socket.socket) -> None:
        try:
            self.http.run(sockets=[sock])
        except BaseException as err:  # the REST side died: stop the whole server
            self.log("error", stage="http", message=f"{type(err).__name__}: {err}")
            self.halt.set()

    def shutdown(self) -> None:
        """Close the listeners, then let workers and forwarders finish what is in hand."""
        self.log("stopping", queued=self.work.depth())
        if self.node is not None:
            self.node.stop()
        if self.http is not None:
            self.http.should_exit = True
        self.workers_stop.set()
        self._wake_forwarders()
        for thread in self.threads:
            thread.join(timeout=JOIN_TIMEOUT_S)
