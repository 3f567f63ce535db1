"""What a run writes while it trains (rank 0 only): ``metrics.jsonl`` and TensorBoard logs.

``metrics.jsonl`` has one JSON object per finished epoch: stage, epoch (1-based within the
stage), global step, train loss parts (image-weighted means), validation metrics (``val``:
``landmark_error_mm`` / ``landmark_error_px`` in stage 1, ``view_accuracy`` in stage 2; runs
of abdus 0.1 scored the test patients here, under ``test``), ``best`` (the stage's best
validation epoch so far), the learning rate, seconds and images per second. The epoch
history also lives in the checkpoint, and the file is rewritten from it atomically after every
epoch, so after a kill and ``--resume`` it lists every epoch exactly once. TensorBoard events
go to ``<run>/tensorboard``; a resumed run purges events past the checkpoint's global step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from abdus.io.atomic import atomic_write_text

METRICS_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def json_safe(value: Any) -> Any:
    """NaN / inf -> None (JSON has no NaN), recursively through dicts."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The epoch records of a run's ``metrics.jsonl`` (empty list when there is none)."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


class RunLog:
    """Epoch records and TensorBoard scalars of one run; inert on ranks other than 0."""

    def __init__(
        self,
        run_dir: Path,
        *,
        enabled: bool,
        history: list[dict[str, Any]] | None = None,
        purge_step: int | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.history: list[dict[str, Any]] = [json_safe(r) for r in history or []]
        self._writer = None
        if enabled:
            # Imported here: tensorboard is heavy, and readers of metrics.jsonl never need it.
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=purge_step)
            self._write_metrics()

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        """TensorBoard scalars ``prefix/name`` at ``step`` (optimizer steps)."""
        if self._writer is None:
            return
        for name, value in values.items():
            if isinstance(value, int | float) and math.isfinite(value):
                self._writer.add_scalar(f"{prefix}/{name}", value, step)

    def epoch(self, record: dict[str, Any]) -> None:
        """Append one epoch record; rewrite ``metrics.jsonl``; log its numbers to TensorBoard."""
        record = json_safe(record)
        self.history.append(record)
        if not self.enabled:
            return
        step = int(record["global_step"])
        stage = record["stage"]
        self.scalars(f"{stage}/epoch_train", record.get("train", {}), step)
        self.scalars(f"{stage}/val", record.get("val") or {}, step)
        self._writer.flush()
        self._write_metrics()

    def _write_metrics(self) -> None:
        lines = "".join(json.dumps(r, allow_nan=False) + "\n" for r in self.history)
        atomic_write_text(self.run_dir / METRICS_NAME, lines)

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
