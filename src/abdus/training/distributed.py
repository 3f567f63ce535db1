"""Single-process, multi-GPU and multi-machine training with ``torchrun`` (DDP).

``torchrun --nproc_per_node=N -m abdus.cli train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK
(and MASTER_ADDR / MASTER_PORT); ``init_distributed`` reads them and joins the process group:
NCCL between GPUs, gloo between CPU processes. Without them training is one plain process.

Rules the trainer follows: each rank sees its own shard of every epoch (DistributedSampler,
``set_epoch`` each epoch; on the device-resident path, ``device_data``, a fixed shard that each
rank alone holds on its GPU, shuffled every epoch); only rank 0 logs, evaluates and writes
files; every rank meets at a barrier before and after a checkpoint write so no rank runs ahead
of a checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from abdus.errors import AbdusInputError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process trains: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None = None  # None = not distributed
    owns_group: bool = False  # True when init_distributed created the process group

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes files (rank 0)."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1


def resolve_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """The torch device for ``preference`` ("auto", "cpu", "cuda", "cuda:N").

    "auto" picks this process's GPU when CUDA is available, else the CPU. Asking for CUDA on a
    machine without it is a user error (AbdusInputError).
    """
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    if preference == "cuda" or preference.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise AbdusInputError(f"device {preference!r} requested but CUDA is not available")
        index = int(preference.split(":")[1]) if ":" in preference else local_rank
        return torch.device("cuda", index)
    raise ValueError(f"unknown device {preference!r}; valid: auto, cpu, cuda, cuda:N")


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) from the torchrun environment, or None outside torchrun."""
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    if not all(k in os.environ for k in keys):
        return None
    rank, world, local = (int(os.environ[k]) for k in keys)
    return rank, world, local


def init_distributed(device_preference: str = "auto") -> DistributedContext:
    """Join the torchrun process group if there is one; otherwise a one-process context.

    CPU processes sharing a machine split its cores (``torch.set_num_threads``) so that N
    processes do not oversubscribe the CPU N-fold.
    """
    env = torchrun_env()
    if env is None or env[1] <= 1:
        return DistributedContext(0, 1, 0, resolve_device(device_preference))
    rank, world, local = env
    device = resolve_device(device_preference, local)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    owns = not dist.is_initialized()
    if owns:
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, rank=rank, world_size=world, **kwargs)
    return DistributedContext(rank, world, local, device, backend, owns)


def cleanup(ctx: DistributedContext) -> None:
    """Leave the process group if ``init_distributed`` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    """Wait for every rank (no-op in one process)."""
    if ctx.is_distributed:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def wrap_model(module: nn.Module, ctx: DistributedContext) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when distributed, else ``module`` itself.

    DDP registers only the parameters that require gradients at wrap time, so the trainer
    wraps once per stage, after freezing (paper 2.2: stage 2 keeps the shared parts locked).
    """
    if not ctx.is_distributed:
        return module
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (or the module itself)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def average_gradients(parameters: list[nn.Parameter], ctx: DistributedContext) -> None:
    """All-reduce (mean) the gradients of ``parameters`` across ranks, in one flat buffer.

    Used for the discriminator, which is not DDP-wrapped because it runs three forwards per
    step (real, fake, and fake for the generator) in the pix2pix update order.
    """
    if not ctx.is_distributed:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_sums(values: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Sum a 1-D tensor of running totals across ranks (returned on the same device)."""
    if ctx.is_distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def reduce_device(ctx: DistributedContext) -> torch.device:
    """Where tensors must be for a collective: the GPU under NCCL, else the CPU."""
    return ctx.device if ctx.backend == "nccl" else torch.device("cpu")
