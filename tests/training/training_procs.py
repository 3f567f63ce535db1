"""Starting training worker processes (DDP and kill-resume tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).parent / "train_worker.py"


def free_port() -> int:
    """A TCP port nobody listens on right now (for the gloo rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_env(**extra: str) -> dict[str, str]:
    """Environment for a worker process: one thread, passive OpenMP waits, quiet tqdm."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", TQDM_DISABLE="1", **extra)
    return env


def start_worker(args: list[str], **env: str) -> subprocess.Popen:
    """Start ``train_worker.py`` with ``args`` (stdout/stderr captured)."""
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        env=worker_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
