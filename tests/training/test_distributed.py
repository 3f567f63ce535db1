"""DDP on 2 CPU processes (gloo): the ranks stay in sync; the single-process context."""

from __future__ import annotations

import torch
from training_procs import free_port, start_worker

from abdus.training.distributed import init_distributed, resolve_device, torchrun_env


def _parameters(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Trainable tensors only: BatchNorm running statistics are per-rank by design."""
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return {k: v for k, v in state.items() if not k.endswith(skip)}


def test_two_gloo_processes_keep_identical_parameters(tmp_path, cohort, cohort_cache):
    port = str(free_port())
    run = tmp_path / "run"
    args = [str(cohort), str(run), "--stage1", "1", "--stage2", "1", "--cache", str(cohort_cache)]
    procs = [
        start_worker(
            [*args, "--dump", str(tmp_path / f"r{rank}.pt")],
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    r0 = torch.load(tmp_path / "r0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "r1.pt", weights_only=True)
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


def test_without_torchrun_env_is_one_cpu_process(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert torchrun_env() is None
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed) == (0, 1, True, False)
    assert ctx.device == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
