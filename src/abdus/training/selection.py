"""Model selection on the validation patients (``config.val_fraction``), never the test patients:
those are left for ``abdus evaluate``.

After every epoch the stage's metric is measured on the validation images (``validate``); a
better value is recorded in the run's progress and its weights are written to ``best.pt``
(``record_if_best``); a stage may stop early after ``patience`` epochs without one
(``out_of_patience``); every stage ends on its best epoch's weights (``restore_best``), and
``model.pt`` records which epoch each stage kept (``selection_of``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from abdus import modelfile
from abdus.data.heatmaps import HeatmapCodec
from abdus.training import checkpoint as ckpt
from abdus.training.config import TrainConfig
from abdus.training.distributed import DistributedContext, all_reduce_sums, barrier, reduce_device
from abdus.training.loops import evaluate
from abdus.training.stages import LANDMARKS, REFIT, VIEWS, stage_config

# The validation metric that defines "best" in each stage, and whether higher is better.
BEST_METRIC = {
    LANDMARKS: ("landmark_error_mm", False),
    VIEWS: ("view_accuracy", True),
    REFIT: ("landmark_error_mm", False),
}
BEST = {name for name, _ in BEST_METRIC.values()}


def validation_due(every: int, epoch: int, epochs: int) -> bool:
    """Whether the 0-based ``epoch`` of ``epochs`` is validated: every ``every`` epochs and the
    last one (never when ``every`` is 0)."""
    return every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == epochs)


def validate(
    model: nn.Module,
    val_set: Dataset,
    stage: str,
    config: TrainConfig,
    codec: HeatmapCodec,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> dict[str, float]:
    """The metrics of ``stage`` on ``val_set`` (``loops.evaluate``), in batches of the stage's
    size; the global RNG is left untouched."""
    loader = DataLoader(
        val_set,
        batch_size=stage_config(config, stage).batch_size,
        num_workers=config.num_workers,
        generator=torch.Generator().manual_seed(config.seed),
    )
    return evaluate(model, loader, codec, stage, device, amp_dtype)


def record_if_best(
    progress: ckpt.Progress, stage: str, val: dict[str, float] | None
) -> dict[str, dict[str, Any]] | None:
    """Count this epoch's validation score into ``progress`` (``best``, ``stale_epochs``).

    Returns the model file's ``selection`` (``{stage: {"epoch": 1-based, metric: value}}``)
    when the epoch ``progress.epoch`` is the stage's best so far, else None (also when it was
    not measured, or is NaN).
    """
    name, higher = BEST_METRIC[stage]
    value = (val or {}).get(name)
    if value is None or value != value:
        return None
    best = progress.best.get(name)
    if best is not None and not (value > best if higher else value < best):
        progress.stale_epochs += 1
        return None
    progress.best[name] = float(value)
    progress.stale_epochs = 0
    return {stage: {"epoch": progress.epoch + 1, name: float(value)}}


def out_of_patience(progress: ckpt.Progress, patience: int, ctx: DistributedContext) -> bool:
    """Whether every rank stops the stage now (rank 0 decides: it alone validates)."""
    stop = float(patience > 0 and ctx.is_main and progress.stale_epochs >= patience)
    flag = torch.tensor([stop], dtype=torch.float64, device=reduce_device(ctx))
    return bool(all_reduce_sums(flag, ctx)[0] > 0)


def restore_best(model: nn.Module, run_dir: Path, stage: str, ctx: DistributedContext) -> None:
    """Load the stage's best validation weights (``best.pt``), on every rank. Nothing to do
    when the stage was never validated (no validation split): its last epoch stands."""
    barrier(ctx)
    path = run_dir / modelfile.BEST_NAME
    if not path.is_file():
        return
    payload = modelfile.read_network_file(path)
    if stage not in payload.get("selection", {}):
        return  # the best file of an earlier stage: this stage was not validated
    model.load_state_dict(payload["model"]["state"])


def selection_of(history: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per stage, the epoch whose weights the model keeps and its validation score, from the
    epoch records of ``metrics.jsonl``."""
    chosen: dict[str, dict[str, Any]] = {}
    for record in history:
        if record.get("best"):
            name = BEST_METRIC[record["stage"]][0]
            chosen[record["stage"]] = {"epoch": record["epoch"], name: record["val"][name]}
    return chosen


def epoch_summary(record: dict[str, Any], epochs: int) -> str:
    """One line per epoch for the terminal or a log: losses, validation metrics, speed."""
    parts = [f"{record['stage']} {record['epoch']}/{epochs}"]
    train = record["train"]
    parts += [f"{k}={train[k]:.4g}" for k in sorted(train, key=lambda k: (k != "loss", k))]
    parts += [f"val_{k}={v:.4g}" for k, v in (record["val"] or {}).items() if k in BEST]
    parts += ["(best)"] if record.get("best") else []
    parts.append(f"{record['images_per_s']:.1f} img/s")
    return "  ".join(parts)
