"""How abdus times a piece of work: warm-up calls, then repeated timed calls, medians in ms.

One loop for every speed figure (training steps and forward passes in
``abdus.training.throughput``, end-to-end inference): ``time_calls(fn, repeats=20, warmup=5,
device=device)`` calls ``fn()`` ``warmup`` times untimed (allocator, cuDNN autotuning and lazy
initialisation settle), then ``repeats`` times on ``time.perf_counter``. On a CUDA device the
GPU is synchronised before each clock start and after each call, so a time covers the kernels
the call queued, not only their launch. Medians are the headline figure because a shared CPU
has outlier calls; the mean and percentiles are there too.

``fn``'s return value is discarded: a caller that needs it (e.g. the loss of a training step)
keeps it from inside ``fn``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Timings:
    """Wall-clock times of the timed calls, in ms, in call order (warm-up calls excluded)."""

    ms: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.ms:
            raise ValueError("no timed calls (repeats must be >= 1)")

    @property
    def median_ms(self) -> float:
        return statistics.median(self.ms)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.ms)

    @property
    def p90_ms(self) -> float:
        return self.percentile_ms(90.0)

    def percentile_ms(self, q: float) -> float:
        """The ``q``-th percentile (0-100), linearly interpolated as ``numpy.percentile``."""
        return float(np.percentile(self.ms, q))


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the work queued on a CUDA ``device``; nothing for the CPU or None."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fn: Callable[[], object],
    *,
    repeats: int = 20,
    warmup: int = 5,
    device: torch.device | str | None = None,
) -> Timings:
    """Call ``fn()`` ``warmup`` times, then time ``repeats`` calls (see the module docstring).

    ``device``: where ``fn`` computes; CUDA is synchronised around every call (None: no sync).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        began = time.perf_counter()
        fn()
        synchronize(device)
        times.append(1000.0 * (time.perf_counter() - began))
    return Timings(tuple(times))
