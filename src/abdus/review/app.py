"""The ``abdus review`` server (FastAPI + uvicorn): the page, its API and the exports.

=================================  ==============================================================
``GET /``                          the page (``static/index.html``)
``GET /static/{path}``             files of ``static/`` (nothing outside it: 404)
``GET /api/taxonomy``              views, the landmarks of each view, the measurements
``GET /api/items?view=&status=``   the work list in priority order
``GET /api/items/{id}``            one item: view, landmarks (source px), mm, version, original
``GET /api/items/{id}/image``      the frame as PNG, full resolution (encoded once, cached)
``POST /api/items/{id}``           save a review: 200 new version and mm, 409 stale version,
                                   400 bad body, 413 body over the limit
``POST /api/export``               CSV, COCO keypoints and verified SRs under REVIEWED/exports/
=================================  ==============================================================

Only loopback without a token; any other host needs ``--token-file`` and then every API request
``Authorization: Bearer <token>`` (401 otherwise, compared in constant time). The page and its
static files hold no data and are public: a browser opening the page cannot send the header, so
the page reads the token from the URL fragment (``/#token=...``) and sends it with each call.
Files are served only by item id or from ``static/``, never by a client-given path.
"""

from __future__ import annotations

import getpass
import hmac
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from abdus.errors import AbdusInputError
from abdus.io.atomic import atomic_write_json
from abdus.review.exports import export_review
from abdus.review.store import ReviewError, ReviewStore, VersionConflictError
from abdus.service.listen import bind_listener
from abdus.service.options import is_loopback, read_token
from abdus.taxonomy import MEASUREMENTS, VIEWS, landmarks_of_view

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 1 << 20  # a save is a few hundred bytes; 1 MiB is generous
STATUS_NAME = "review.json"


def taxonomy_json() -> dict[str, Any]:
    """Views, each view's landmarks, and each measurement with its landmarks and task."""
    return {
        "views": [v.name for v in VIEWS],
        "tasks": {v.name: list(landmarks_of_view(v.name)) for v in VIEWS},
        "measurements": [
            {"code": m.code, "landmarks": list(m.landmarks), "view_task": m.task}
            for m in MEASUREMENTS
        ],
    }


def _is_page(request: Request) -> bool:
    """A GET of the page or one of its static files (public: they hold no data)."""
    path = request.url.path
    return request.method == "GET" and (path == "/" or path.startswith("/static/"))


def _authorised(request: Request, token: str | None) -> bool:
    if token is None:
        return True
    given = request.headers.get("authorization", "").encode()
    return hmac.compare_digest(given, f"Bearer {token}".encode())


def _static_file(path: str) -> Path:
    """The file ``static/<path>``; 404 for anything outside ``static/`` or missing."""
    root = STATIC.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise HTTPException(404, "no such file")
    return target


def create_review_app(
    store: ReviewStore, *, token: str | None = None, max_body_bytes: int = MAX_BODY_BYTES
) -> FastAPI:
    """The FastAPI application serving ``store``."""
    app = FastAPI(title="abdus review", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if not _is_page(request) and not _authorised(request, token):
            return JSONResponse(
                {"detail": "missing or wrong bearer token"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body_bytes:
            detail = f"request body of {length} bytes over the limit of {max_body_bytes} bytes"
            return JSONResponse({"detail": detail}, status_code=413)
        return await call_next(request)

    @app.exception_handler(AbdusInputError)
    async def unreadable(request: Request, error: AbdusInputError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)  # e.g. an image gone

    def item_or_404(item_id: str) -> str:
        if item_id not in store.by_id:
            raise HTTPException(404, f"no item {item_id!r}")
        return item_id

    async def json_body(request: Request) -> Any:
        body = b""
        async for chunk in request.stream():  # counted, for bodies sent without a length
            body += chunk
            if len(body) > max_body_bytes:
                raise HTTPException(413, f"request body over the limit of {max_body_bytes} bytes")
        try:
            return json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise HTTPException(400, f"malformed JSON body: {error}") from None

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(_static_file("index.html"))

    @app.get("/static/{path:path}")
    def static(path: str) -> FileResponse:
        return FileResponse(_static_file(path))

    @app.get("/api/taxonomy")
    def taxonomy() -> dict[str, Any]:
        return taxonomy_json()

    @app.get("/api/items")
    def items(view: str | None = None, status: str | None = None) -> dict[str, Any]:
        try:
            rows = store.list_items(view or None, status or None)
        except ValueError as error:
            raise HTTPException(400, str(error)) from None
        return {"items": rows, "total": len(rows)}

    @app.get("/api/items/{item_id}")
    def item(item_id: str) -> dict[str, Any]:
        detail = store.detail(item_or_404(item_id))
        if detail["next_id"] is not None:  # decode the next frame while this one is looked at
            threading.Thread(target=store.frame, args=(detail["next_id"],), daemon=True).start()
        return detail

    @app.get("/api/items/{item_id}/image")
    def image(item_id: str) -> Response:
        frame = store.frame(item_or_404(item_id))
        headers = {"Cache-Control": "private, max-age=3600"}
        return Response(frame.png, media_type="image/png", headers=headers)

    @app.post("/api/items/{item_id}")
    async def save(item_id: str, request: Request) -> dict[str, Any]:
        item_or_404(item_id)
        body = await json_body(request)
        reviewer = body.get("reviewer") if isinstance(body, dict) else None
        try:
            return await run_in_threadpool(store.save, item_id, body, reviewer=reviewer)
        except VersionConflictError as error:
            raise HTTPException(409, str(error)) from None
        except ReviewError as error:
            raise HTTPException(400, str(error)) from None

    @app.post("/api/export")
    async def export() -> dict[str, Any]:
        return await run_in_threadpool(export_review, store)

    return app


def run_review(
    source: str | Path,
    out: str | Path,
    *,
    port: int = 8765,
    host: str = "127.0.0.1",
    token_file: str | Path | None = None,
    reviewer: str | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Serve the review of ``source`` into ``out`` until SIGTERM / SIGINT or ``stop``; 0.

    ``port`` 0 picks a free port. Once listening, ``out/review.json`` holds
    ``{"pid", "host", "port"}`` (written atomically, removed on a clean stop). A host other
    than loopback needs ``token_file``. AbdusInputError for a bad SOURCE, token file or address."""
    if token_file is None and not is_loopback(host):
        raise AbdusInputError(f"--host {host} is not loopback: give --token-file too")
    token = None if token_file is None else read_token(token_file)
    store = ReviewStore(source, out, reviewer=reviewer or getpass.getuser())
    app = create_review_app(store, token=token)
    sock = bind_listener(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    stop = stop or threading.Event()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not server.started and thread.is_alive() and not stop.wait(0.05):
            pass
        if server.started:
            status = {"pid": os.getpid(), "host": host, "port": int(sock.getsockname()[1])}
            atomic_write_json(store.out / STATUS_NAME, status)
            print(f"abdus review: http://{host}:{status['port']}/", flush=True)
        while thread.is_alive() and not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        (store.out / STATUS_NAME).unlink(missing_ok=True)
    return 0
