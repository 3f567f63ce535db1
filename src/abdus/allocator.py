"""The C heap's settings for batch work: keep freed memory for the next step (glibc ``mallopt``).

glibc's malloc serves every block above its mmap threshold (128 KiB, raised adaptively up to
32 MiB) with a fresh ``mmap`` and gives it back with ``munmap`` when it is freed, and it hands
the top of its heap back to the kernel once more than the trim threshold (128 KiB) lies free
there. A training or inference step allocates and frees its activations, a few MiB each, hundreds
of times, so every step faults in and zeroes fresh pages: a benchmark of the demo's three
training stages made about 6 million minor page faults and spent 14 of its 48 s in the kernel
(``scripts/bench_training.py --allocator system keep``; docs/benchmarks.md, "The C heap keeps
freed memory").

``keep_freed_memory`` sets ``M_MMAP_MAX`` to 0 (no block is served by its own ``mmap``; the heap
grows instead), ``M_TRIM_THRESHOLD`` to 1 GiB (up to that much free memory stays at the heap's
top for the next step) and ``M_TOP_PAD`` to 64 MiB (the heap grows by at least that much at a
time). Freed blocks are then reused in place: the same benchmark made 0.19 million faults, and
the landmark stage ran 1.2-1.3x faster. This is what jemalloc or tcmalloc, the allocators
PyTorch's CPU performance guide recommends preloading, also do; ``mallopt`` needs no preload.
The computation is unchanged, so a trained model is the same to the last digit.

The price is memory that stays with the process after its peak (up to 1 GiB free at the
heap's top, besides what freed blocks inside the heap hold), which a batch command does not
mind. The services (``abdus serve``, ``abdus review``) run for days and keep glibc's defaults.
``ABDUS_MALLOC=system`` keeps the defaults everywhere; so do a preloaded allocator
(``LD_PRELOAD``) and glibc's own ``MALLOC_*`` settings or ``GLIBC_TUNABLES``, which this never
overrides. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
TRIM_THRESHOLD_BYTES = 1 << 30
TOP_PAD_BYTES = 64 << 20
# The environment that means somebody already chose: skip, and say why.
_USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def allocator_choice(environ: dict[str, str] | None = None) -> str:
    """Why the heap keeps or does not keep its settings: "keep" when ``keep_freed_memory``
    applies, or the reason it leaves glibc's settings alone."""
    environ = os.environ if environ is None else environ
    if environ.get("ABDUS_MALLOC", "keep").strip().lower() == "system":
        return "system (ABDUS_MALLOC=system)"
    if environ.get("LD_PRELOAD", "").strip():
        return "system (an allocator is preloaded: LD_PRELOAD)"
    chosen = [name for name in _USER_SETTINGS if environ.get(name)]
    if chosen:
        return f"system (set by the environment: {', '.join(chosen)})"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "system (not glibc)"
    return "keep"


def keep_freed_memory() -> str:
    """Make glibc's malloc keep freed blocks for reuse (module docstring), unless the
    environment chose otherwise. Returns what the heap runs with: "keep" or "system (why)"."""
    choice = allocator_choice()
    if choice != "keep":
        return choice
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "system (no mallopt)"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = (
        (M_MMAP_MAX, 0),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
        (M_TOP_PAD, TOP_PAD_BYTES),
    )
    if not all(mallopt(parameter, value) == 1 for parameter, value in settings):
        return "system (mallopt refused)"
    return "keep"


__all__ = ["allocator_choice", "keep_freed_memory"]
