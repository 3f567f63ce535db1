"""``abdus.timing``: warm-up calls untimed, every timed call measured, CUDA synchronised around
each call, and the summary statistics. A fake clock: no assertion depends on real time."""

from __future__ import annotations

import itertools

import pytest
import torch

from abdus import timing
from abdus.timing import Timings, time_calls


@pytest.fixture
def fake_clock(monkeypatch):
    """perf_counter returns 0, 1, 3, 6, 10, 15 ... s: reads 2i and 2i + 1 are 2i + 1 s apart."""
    ticks = itertools.accumulate(itertools.count(1), initial=0)
    monkeypatch.setattr(timing.time, "perf_counter", lambda: float(next(ticks)))


def test_warmup_calls_are_not_timed_and_every_repeat_is(fake_clock):
    calls = []
    result = time_calls(lambda: calls.append(len(calls)), repeats=3, warmup=2)
    assert calls == [0, 1, 2, 3, 4]  # 2 warm-up + 3 timed
    assert result.ms == (1000.0, 3000.0, 5000.0)  # the clock is read around timed calls only
    assert (result.median_ms, result.mean_ms) == (3000.0, 3000.0)


def test_cuda_is_synchronised_around_every_timed_call(monkeypatch):
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    time_calls(lambda: events.append("call"), repeats=2, warmup=1, device="cuda:0")
    assert events == ["call", "sync", "sync", "call", "sync", "sync", "call", "sync"]
    events.clear()
    time_calls(lambda: events.append("call"), repeats=2, warmup=1, device="cpu")
    assert events == ["call"] * 3


def test_summary_statistics_and_bad_arguments():
    t = Timings((5.0, 1.0, 3.0, 2.0, 4.0))
    assert (t.median_ms, t.mean_ms) == (3.0, 3.0)
    assert t.p90_ms == pytest.approx(4.6)  # numpy.percentile's linear interpolation
    assert t.percentile_ms(0) == 1.0 and t.percentile_ms(100) == 5.0
    with pytest.raises(ValueError, match="repeats"):
        time_calls(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="no timed calls"):
        Timings(())
