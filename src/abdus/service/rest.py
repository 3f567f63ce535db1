"""The REST side of ``abdus serve`` (FastAPI): health, info, prediction on an upload, a study's
results and Prometheus metrics.

=====================  ========================================================================
``GET /health``        ``{"status": "ok"}``
``GET /info``          model id, backend, taxonomy (views, landmarks, measurements), abdus
                       version, AE title, queue depth
``POST /predict``      multipart field ``file`` (DICOM / PNG / JPEG): the list of
                       ``abdus predict`` JSON records of its images; 413 over the size limit,
                       400 ``{"detail": "<one line>"}`` for a file abdus cannot read
``GET /studies/{uid}`` ``{"study_instance_uid", "results": [record + "name", "files"]}``; 400 for
                       a malformed UID, 404 for an unknown study
``GET /metrics``       Prometheus text format
=====================  ========================================================================

With a token every request needs ``Authorization: Bearer <token>`` (401 otherwise; compared in
constant time).
"""

from __future__ import annotations

import hmac
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from abdus import __version__
from abdus.inference.predict import predict_file
from abdus.inference.predictor import BasePredictor
from abdus.service.events import EventLog
from abdus.service.metrics import CONTENT_TYPE, ServeMetrics
from abdus.service.spool import Spool, is_uid, safe_name
from abdus.taxonomy import LANDMARKS, MEASUREMENT_CODES, VIEW_NAMES

_CHUNK = 1 << 20
RESULT_SUFFIXES = (".sr.dcm", ".sc.dcm", ".png")  # beside each <name>.json


@dataclass
class RestContext:
    """What the endpoints need from the server."""

    spool: Spool
    predictor: BasePredictor
    metrics: ServeMetrics
    log: EventLog
    queue_depth: Callable[[], int]
    ae_title: str
    token: str | None = None
    max_upload_bytes: int = 64 << 20


def _authorised(request: Request, token: str | None) -> bool:
    if token is None:
        return True
    given = request.headers.get("authorization", "").encode()
    return hmac.compare_digest(given, f"Bearer {token}".encode())


def _save_upload(upload: UploadFile, folder: Path, limit: int) -> Path:
    """Copy the upload into ``folder`` (its name made safe); HTTP 413 past ``limit`` bytes."""
    name = safe_name(Path(upload.filename or "upload").name).lstrip(".") or "upload"
    path = folder / name
    size = 0
    with open(path, "wb") as out:
        while chunk := upload.file.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"upload over the limit of {limit} bytes")
            out.write(chunk)
    return path


def create_app(context: RestContext) -> FastAPI:
    """The FastAPI application of one server."""
    app = FastAPI(title="abdus", version=__version__, docs_url=None, redoc_url=None)
    ctx = context

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if not _authorised(request, ctx.token):
            return JSONResponse(
                {"detail": "missing or wrong bearer token"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        length = request.headers.get("content-length", "")
        if request.method == "POST" and length.isdigit() and int(length) > ctx.max_upload_bytes:
            limit_mb = ctx.max_upload_bytes / (1 << 20)
            return JSONResponse(
                {"detail": f"upload of {length} bytes over the limit of {limit_mb:g} MB"},
                status_code=413,
            )
        return await call_next(request)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    def info() -> dict[str, Any]:
        return {
            "abdus_version": __version__,
            "model_id": ctx.predictor.model_id,
            "backend": ctx.predictor.name,
            "backend_reason": getattr(ctx.predictor.backend_choice, "reason", "named by --backend"),
            "ae_title": ctx.ae_title,
            "views": list(VIEW_NAMES),
            "landmarks": list(LANDMARKS),
            "measurements": list(MEASUREMENT_CODES),
            "queue_depth": ctx.queue_depth(),
        }

    @app.post("/predict")
    def predict(file: UploadFile = File(...)) -> list[dict[str, Any]]:  # noqa: B008
        with tempfile.TemporaryDirectory(dir=ctx.spool.root, prefix=".upload.") as tmp:
            folder = Path(tmp)
            path = _save_upload(file, folder, ctx.max_upload_bytes)
            out = folder / "out"
            out.mkdir()
            messages: list[str] = []
            results = predict_file(ctx.predictor, path, out, say=messages.append)
            records = [result.record for result in results]
        for record in records:
            record["source"]["file"] = file.filename
        unreadable = len(records) == 1 and records[0]["source"]["frame"] is None
        if unreadable and records[0]["error"]:
            ctx.log("error", stage="rest-predict", file=file.filename, message=records[0]["error"])
            raise HTTPException(400, records[0]["error"])
        ctx.log("rest_predict", file=file.filename, images=len(records))
        return records

    @app.get("/studies/{uid}")
    def study(uid: str) -> dict[str, Any]:
        if not is_uid(uid):
            raise HTTPException(400, "not a DICOM UID (digits and dots, at most 64)")
        folder = ctx.spool.study_folder(uid)
        if not folder.is_dir():
            raise HTTPException(404, f"no results for study {uid}")
        results = []
        for path in sorted(folder.glob("*.json")):
            if path.name.startswith("."):
                continue
            name = path.name.removesuffix(".json")
            files = [name + s for s in RESULT_SUFFIXES if (folder / (name + s)).exists()]
            results.append({"name": name, **json.loads(path.read_text()), "files": files})
        return {"study_instance_uid": uid, "results": results}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(ctx.metrics.text(), media_type=CONTENT_TYPE)

    return app


def remove_stale_uploads(spool: Spool) -> None:
    """Remove upload folders a killed server left behind."""
    for stale in spool.root.glob(".upload.*"):
        shutil.rmtree(stale, ignore_errors=True)
