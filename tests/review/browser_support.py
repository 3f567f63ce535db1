"""Helpers shared by the browser test and scripts/bench_review.py: start ``abdus review`` as
a subprocess in its own process group, wait for its ``review.json``, stop it, and open Debian's
chromium through Playwright (no browser download)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# abdus run by the interpreter running us (the project venv).
ABDUS = [sys.executable, "-m", "abdus.cli"]


def start_review(
    source: Path, out: Path, *, token_file: Path | None = None, timeout_s: float = 60.0
) -> tuple[subprocess.Popen, str]:
    """``abdus review SOURCE --out OUT --port 0`` on 127.0.0.1; returns (process, base URL)."""
    command = [*ABDUS, "review", str(source), "--out", str(out), "--port", "0"]
    command += ["--host", "127.0.0.1"]
    if token_file is not None:
        command += ["--token-file", str(token_file)]
    # stderr to a file, not a pipe: a pipe nobody reads would block a chatty server.
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop_review)
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,  # its own process group, so teardown reaches every child
    )
    process.log = log
    info = out / "review.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            stderr = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"abdus review exited {process.returncode}: {stderr}")
        if info.is_file():
            try:
                port = json.loads(info.read_text())["port"]
                return process, f"http://127.0.0.1:{port}"
            except (ValueError, KeyError):
                pass  # written atomically, but be patient with a partial read anyway
        time.sleep(0.1)
    stop_review(process)
    raise TimeoutError(f"abdus review did not write {info} within {timeout_s:.0f} s")


def stop_review(process: subprocess.Popen, *, grace_s: float = 10.0) -> None:
    """SIGTERM to the process group, then SIGKILL if it is still there after ``grace_s``."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=grace_s)
        except ProcessLookupError:
            pass
    log = getattr(process, "log", None)
    if log is not None:
        log.close()


def chromium_path() -> str | None:
    """Debian's chromium, or None."""
    from shutil import which

    return which("chromium") or which("chromium-browser")


def wait_shown(page, item_id: str | None = None, timeout_ms: float = 60_000) -> None:
    """Wait until the page shows an image (of ``item_id`` when given)."""
    if item_id is None:
        page.wait_for_function(
            "window.abdusReview && window.abdusReview.shownId !== null", timeout=timeout_ms
        )
    else:
        page.wait_for_function(
            "id => window.abdusReview && window.abdusReview.shownId === id",
            arg=item_id,
            timeout=timeout_ms,
        )
