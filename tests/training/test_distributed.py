"""DDP on 2 CPU processes (gloo): the ranks stay in sync, on the CPU loader and on the
device-resident path; the single-process context."""

from __future__ import annotations

import math

import torch
from training_procs import free_port, start_worker

from abdus.training.distributed import init_distributed, resolve_device, torchrun_env
from abdus.training.runlog import read_metrics


def _parameters(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Trainable tensors only: BatchNorm running statistics are per-rank by design."""
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return {k: v for k, v in state.items() if not k.endswith(skip)}


def _run_workers(args: list[str], world: int, tmp_path) -> list[dict]:
    """Train with ``world`` torchrun-style gloo processes; each rank's dumped state dicts.

    The rendezvous port is free when chosen but bound by rank 0 only seconds later: when
    something took it in between, the launch is retried once on another port. Every worker is
    killed when the launch fails, so none is left waiting at a barrier."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for attempt in range(2):
        outputs, codes = _launch(args, world, tmp_path, str(free_port()))
        if codes == [0] * world or attempt or not any(_PORT_TAKEN in o for o in outputs):
            break
    assert codes == [0] * world, outputs
    return [torch.load(tmp_path / f"r{rank}.pt", weights_only=True) for rank in range(world)]


def test_two_gloo_processes_keep_identical_parameters(tmp_path, cohort, cohort_cache):
    run = tmp_path / "run"
    args = [str(cohort), str(run), "--stage1", "1", "--stage2", "1", "--cache", str(cohort_cache)]
    r0, r1 = _run_workers(args, 2, tmp_path)
    for part in ("model", "d"):
        p0, p1 = _parameters(r0[part]), _parameters(r1[part])
        assert p0.keys() == p1.keys()
        different = [k for k in p0 if not torch.equal(p0[k], p1[k])]
        assert not different, f"{part} parameters differ across ranks: {different[:5]}"
    # Only rank 0 writes the run files; both ranks trained both stages.
    assert (run / "model.pt").is_file() and (run / "checkpoint.pt").is_file()
    # Every stage ends on rank 0's best validation weights, loaded by every rank: the model's
    # BatchNorm statistics are the same on both ranks too.
    assert all(torch.equal(v, r1["model"][k]) for k, v in r0["model"].items())
    # The ranks saw different shards: the discriminator's (local) BatchNorm statistics differ.
    stats = [k for k in r0["d"] if k.endswith("running_mean")]
    assert any(not torch.equal(r0["d"][k], r1["d"][k]) for k in stats)


_PORT_TAKEN = "address already in use"


def _launch(args: list[str], world: int, tmp_path, port: str) -> tuple[list[str], list[int]]:
    """Start ``world`` ranks rendezvousing on ``port``; (their outputs, their exit codes)."""
    procs = []
    try:
        for rank in range(world):
            procs.append(
                start_worker(
                    [*args, "--dump", str(tmp_path / f"r{rank}.pt")],
                    RANK=str(rank),
                    LOCAL_RANK=str(rank),
                    WORLD_SIZE=str(world),
                    LOCAL_WORLD_SIZE=str(world),
                    MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=port,
                )
            )
        outputs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [o.lower() for o in outputs], [p.returncode for p in procs]


def _epoch_images(count: int, world: int, batch_size: int) -> int:
    """Images one epoch trains on over all ranks: ceil(count / world) each, less a final batch
    of one (``datasets.make_loader``'s rule, kept by ``DeviceBatches``)."""
    each = math.ceil(count / world)
    return world * (each - (each % batch_size == 1 and each > 1))


def test_device_path_under_ddp_matches_one_process_in_samples_seen(tmp_path, cohort, cohort_cache):
    common = ["--stage1", "1", "--stage2", "1", "--cache", str(cohort_cache)]
    common += ["--data-on-device", "on"]
    _run_workers([str(cohort), str(tmp_path / "one"), *common], 1, tmp_path / "1")
    r0, r1 = _run_workers([str(cohort), str(tmp_path / "two"), *common], 2, tmp_path / "2")
    for part in ("model", "d"):
        p0, p1 = _parameters(r0[part]), _parameters(r1[part])
        assert all(torch.equal(v, p1[k]) for k, v in p0.items()), f"{part} differs across ranks"
    single = {r["stage"]: r["images"] for r in read_metrics(tmp_path / "one")}
    double = {r["stage"]: r["images"] for r in read_metrics(tmp_path / "two")}
    batch = {"landmarks": 4, "views": 8}  # the tiny preset's batch sizes
    assert single.keys() == double.keys() == {"landmarks", "views"}
    for stage, images in single.items():
        assert double[stage] == _epoch_images(images, 2, batch[stage]), stage
        assert abs(double[stage] - images) <= 1  # the padding of an odd count, nothing more


def test_without_torchrun_env_is_one_cpu_process(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert torchrun_env() is None
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed) == (0, 1, True, False)
    assert ctx.device == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
