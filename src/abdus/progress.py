"""Progress bars (tqdm) for every step a user waits on: sample cache, evaluation, predict, PBT
training, reproduce.

Bars go to stderr and show only on a terminal, so logs, pipes and tests stay clean.
``ABDUS_PROGRESS=1`` forces them on (e.g. under ``tee``), ``ABDUS_PROGRESS=0`` off.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def _disable() -> bool | None:
    """tqdm's ``disable``: None shows a bar on a terminal only."""
    forced = os.environ.get("ABDUS_PROGRESS", "").strip()
    if forced in ("0", "false", "no", "off"):
        return True
    if forced in ("1", "true", "yes", "on"):
        return False
    return None


def progress(
    items: Iterable[T], description: str, *, total: int | None = None, unit: str = "it"
) -> Iterator[T]:
    """``items``, with a progress bar named ``description`` on a terminal."""
    yield from tqdm(items, desc=description, total=total, unit=unit, disable=_disable(),
                    leave=False, dynamic_ncols=True)  # fmt: skip


def progress_bar(description: str, total: int | None = None, unit: str = "it") -> tqdm:
    """A bar to ``update(n)`` by hand (``with progress_bar(...) as bar:``), e.g. where work
    finishes in a pool out of order."""
    return tqdm(desc=description, total=total, unit=unit, disable=_disable(), leave=False,
                dynamic_ncols=True)  # fmt: skip
