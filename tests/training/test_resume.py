"""`abdus train` killed with SIGKILL mid-run, then `--resume`: it finishes, every epoch is
logged once, and the weights equal those of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch
from training_procs import worker_env

from abdus.training.checkpoint import load_checkpoint, load_model_file
from abdus.training.runlog import read_metrics
from abdus.training.stages import LANDMARKS, VIEWS
from abdus.training.trainer import train

STAGE1, STAGE2 = 4, 1


def _abdus_train(cohort, run, config) -> subprocess.Popen:
    command = [sys.executable, "-m", "abdus.cli", "train", str(cohort), "--out", str(run)]
    command += ["--preset", "tiny", "--config", str(config), "--device", "cpu"]
    return subprocess.Popen(
        command, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for(path, proc, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training ended before {path.name}: {proc.communicate()[0]}")
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.005)


def test_sigkill_then_resume_continues_and_matches_an_uninterrupted_run(
    tmp_path, cohort, cohort_cache, one_thread
):
    config = tmp_path / "short.yaml"
    config.write_text(
        f"stage1: {{epochs: {STAGE1}}}\nstage2: {{epochs: {STAGE2}}}\ncache_dir: {cohort_cache}\n"
    )
    run, reference = tmp_path / "killed", tmp_path / "reference"
    proc = _abdus_train(cohort, run, config)
    uninterrupted = _abdus_train(cohort, reference, config)  # meanwhile, on the other core
    try:
        _check_kill_and_resume(cohort, run, reference, proc, uninterrupted)
    finally:  # neither training outlives a failed assertion
        for p in (proc, uninterrupted):
            if p.poll() is None:
                p.kill()
                p.communicate()


def _check_kill_and_resume(cohort, run, reference, proc, uninterrupted) -> None:
    """Kill `proc` after its first checkpoint, resume it here, compare with `uninterrupted`."""
    _wait_for(run / "checkpoint.pt", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model.pt").exists()  # killed mid-run, not after it
    killed_at = load_checkpoint(run / "checkpoint.pt")["progress"]
    assert killed_at["stage"] == LANDMARKS and 1 <= killed_at["epoch"] < STAGE1

    train(cohort, run, resume=True)

    expected = [(LANDMARKS, e) for e in range(1, STAGE1 + 1)]
    expected += [(VIEWS, e) for e in range(1, STAGE2 + 1)]
    records = read_metrics(run)
    assert [(r["stage"], r["epoch"]) for r in records] == expected  # each epoch exactly once
    steps = [r["global_step"] for r in records]
    assert steps == sorted(set(steps))  # the step count continued, never restarted

    output = uninterrupted.communicate(timeout=120)[0]
    assert uninterrupted.returncode == 0, output
    mine = load_model_file(run / "model.pt")[0].state_dict()
    theirs = load_model_file(reference / "model.pt")[0].state_dict()
    different = [k for k in mine if not torch.equal(mine[k], theirs[k])]
    assert not different, f"resumed weights differ from the uninterrupted run: {different[:5]}"
