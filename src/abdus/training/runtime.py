"""Run-time settings of training: seeding, determinism, mixed precision, memory format, compiling.

Mixed precision (``TrainConfig.amp``): "bf16" autocasts the forward passes to bfloat16 where the
hardware computes it natively (CUDA GPUs with bf16, or CPUs with AVX-512-BF16 / AMX); "fp16"
uses float16 with a gradient scaler (CUDA only, for GPUs without bf16, e.g. the paper's Titan X);
"off" is float32; "auto" is bf16 on a CUDA GPU that has it and float32 on the CPU. Measured on a
2-core AVX-512-BF16 CPU with nothing else running (``scripts/bench_training.py``, medians): for
``demo``, the preset meant for CPUs, bf16 was no faster in the landmark stage (33.6 vs 35.1
images/s) and 1.14x in the view stage (594 vs 523); for ``paper`` it was 2.1x faster (0.68 vs
0.32 and 3.65 vs 1.81 images/s), so ``amp: bf16`` is worth setting for large models on such a
CPU. With another job competing for the cores, the demo landmark stage ran 3x slower in bf16
(5.9 vs 17.8 images/s). On an H100 the paper landmark stage ran at 89 images/s in bf16 and in
float32 alike, while inference at batch 32 gained 1.5x from bf16 (``scripts/gpu_check.py``).
Losses are always computed in float32.
"""

from __future__ import annotations

import contextlib
import os
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from abdus.choices import AmpMode, check_choice


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global generator and torch (CPU and all GPUs)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic kernels where feasible (the CPU), cuDNN autotuning otherwise.

    On the CPU ``torch.use_deterministic_algorithms`` costs little and makes a resumed run
    reproduce an uninterrupted one bit for bit. On CUDA a few kernels used here (bilinear
    upsampling backward) have no deterministic version, so it only warns there.

    The mode also fills every new uninitialised tensor with NaN by default, a debugging aid
    that catches kernels reading memory they never wrote; it does not make anything more
    deterministic. Here it is off: it was about 1,800 fills per ``demo`` landmark step on the
    CPU (a few % of the step), and the models trained with and without it are equal to the last
    bit (docs/benchmarks.md, "Landmark steps without layout conversions").
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False


@contextlib.contextmanager
def deterministic_mode_restored() -> Iterator[None]:
    """Restore torch's process-wide deterministic-algorithms setting on exit (training sets it,
    a caller such as an evaluation that runs next should get back what it had)."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def cpu_has_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX-512-BF16 or AMX-BF16)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = cpuinfo.read_text(errors="ignore")
        return "avx512_bf16" in flags or "amx_bf16" in flags
    mkldnn = torch.backends.mkldnn.is_available()
    return bool(mkldnn and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the ``AmpMode`` ``mode`` on ``device`` (None = float32, no
    autocast)."""
    mode = check_choice(AmpMode, mode, "amp mode")
    if mode == AmpMode.OFF:
        return None
    if device.type == "cuda":
        if mode == AmpMode.FP16:
            return torch.float16
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if mode == AmpMode.BF16 else None
    if mode == AmpMode.FP16:
        warnings.warn("amp 'fp16' needs CUDA; training in float32", stacklevel=2)
        return None
    if mode == AmpMode.BF16:
        if cpu_has_bf16():
            return torch.bfloat16
        warnings.warn("this CPU has no native bf16; training in float32", stacklevel=2)
    return None  # "auto" on the CPU: float32, bf16 no faster for demo (module docstring)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast context for ``dtype`` on ``device``, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for float16 (bf16 has float32's exponent range)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def memory_format(channels_last: bool) -> torch.memory_format:
    """``torch.channels_last`` (NHWC: faster convolutions on tensor cores and in oneDNN on a
    CPU) when ``channels_last``, else the contiguous format, for training on any device and
    for inference.

    CPU training stayed contiguous until the encoder's stride-2 projection shortcuts became
    ``models.encoder.StridedPointwiseConv``: PyTorch 2.13's channels-last CPU backward of a
    1x1 stride-2 convolution corrupted memory at some odd batch sizes (an epoch's short last
    batch).
    """
    return torch.channels_last if channels_last else torch.contiguous_format


class CompiledOrEager(nn.Module):
    """``torch.compile(module)`` where it works, ``module`` itself where it does not.

    Compiling happens at the first call (and again for a new input shape, e.g. an epoch's short
    last batch), so a missing compiler or an unsupported operator shows up only then: the first
    failure warns once and every later call runs eager. Its parameters are ``module``'s (the
    compiled module shares them), so optimizers and checkpoints see the same tensors.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.compiled: nn.Module | None = None
        try:
            self.compiled = torch.compile(module)
        except Exception as err:  # a platform without a compiler: torch raises many kinds
            self._give_up(err)

    def _give_up(self, err: Exception) -> None:
        self.compiled = None
        detail = " ".join(str(err).split())[:200]
        warnings.warn(
            f"torch.compile failed ({type(err).__name__}: {detail}); training eager",
            stacklevel=3,
        )

    def forward(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # compile errors surface at the call; eager gives the same
                self._give_up(err)  # result, and a real error (e.g. out of memory) recurs there
        return self.module(*args, **kwargs)


def maybe_compile(module: nn.Module, enabled: bool) -> nn.Module:
    """``CompiledOrEager(module)`` when ``enabled`` (``TrainConfig.compile``), else ``module``."""
    return CompiledOrEager(module) if enabled else module


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and python from the worker's torch seed.

    The torch seed of a worker is the loader's base seed + worker id, and the base seed comes
    from the loader's own generator, which the trainer seeds from (seed, stage, epoch): the
    workers' random streams are the same in a resumed run as in an uninterrupted one.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
