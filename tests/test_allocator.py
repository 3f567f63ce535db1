"""The C heap's batch settings: freed blocks are reused instead of faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from abdus.allocator import allocator_choice
from abdus.cli import HEAP_KEEPING_COMMANDS

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Allocate, touch and free a 64 MiB block (above glibc's largest mmap threshold, 32 MiB, so with
# its defaults every one is a fresh mmap) 20 times, then 20 more; print the minor page faults
# the last 20 took (the kept heap reaches its size within the first few: 8 on glibc 2.36).
_FAULTS = """
import resource, sys
from abdus.allocator import keep_freed_memory
import torch
choice = keep_freed_memory() if sys.argv[1] == "keep" else "system"
for i in range(40):
    if i == 20:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.empty(16 << 20, dtype=torch.float32)
    block.fill_(1.0)
    del block
print(choice, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(allocator: str) -> tuple[str, int]:
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _FAULTS, allocator],
        capture_output=True, text=True, check=True, env=env, timeout=120,
    )  # fmt: skip
    choice, faults = done.stdout.split()
    return choice, int(faults)


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_kept_heap_reuses_freed_blocks_instead_of_faulting_them_in():
    system_choice, system = _faults("system")
    keep_choice, kept = _faults("keep")
    assert (system_choice, keep_choice) == ("system", "keep")
    pages = 20 * (64 << 20) // 4096
    assert system > pages // 2  # glibc's defaults: every block's pages are faulted in again
    assert kept < system // 5, (kept, system)


def test_the_environment_and_a_preloaded_allocator_are_respected():
    assert allocator_choice({"ABDUS_MALLOC": "system"}) == "system (ABDUS_MALLOC=system)"
    assert "LD_PRELOAD" in allocator_choice({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"})
    assert "MALLOC_TRIM_THRESHOLD_" in allocator_choice({"MALLOC_TRIM_THRESHOLD_": "0"})
    assert "GLIBC_TUNABLES" in allocator_choice({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=1"})
    assert allocator_choice({}) == ("keep" if GLIBC else "system (not glibc)")


def test_batch_commands_keep_freed_memory_and_the_services_do_not():
    assert {"train", "demo", "generate", "reproduce", "evaluate"} <= HEAP_KEEPING_COMMANDS
    assert not {"serve", "review", "info"} & HEAP_KEEPING_COMMANDS


_LARGE_IN_THREADS = """
import threading
import torch
from abdus.allocator import keep_freed_memory
assert keep_freed_memory() == "keep"
sums = []
def work():
    for mib in (100, 300):  # larger than the 64 MiB heaps of a thread arena
        sums.append(float(torch.ones(mib << 18).sum()))
threads = [threading.Thread(target=work) for _ in range(2)]
[t.start() for t in threads]
[t.join() for t in threads]
print(sorted(sums))
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_kept_heap_still_serves_blocks_larger_than_a_thread_arena():
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _LARGE_IN_THREADS],
        capture_output=True, text=True, check=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.stdout.split() == ["[26214400.0,", "26214400.0,", "78643200.0,", "78643200.0]"]
