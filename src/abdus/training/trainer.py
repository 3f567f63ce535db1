"""Staged training (paper section 2.2 "Implementation") and ``train``, what ``abdus train`` runs.

The run reads like the paper: the landmark stage first (SGD for the network, Adam for the
PatchGAN discriminator of MGCN_R), then the view stage with the shared and landmark parts
locked (Adam); with ``view_stage_trains_shared`` (the demo recipe) the view stage trains the
shared stages too, followed by a stage 3 ("refit", the demo) that re-fits the landmark path to
them, or anchored to their stage-1 features with ``view_stage_anchor``. Which stages run
depends on the variant (``stages.stages_of``): mgcn_r all, mgcn / mfcn / sfcn the landmark
stage, stl the view stage.
The steps are in ``loops``, model selection on the validation patients in ``selection``.

A run folder holds ``config.yaml`` (resolved config), ``checkpoint.pt`` (rewritten atomically
after every epoch), ``best.pt`` (the best validation epoch of the stage being trained),
``metrics.jsonl``, ``tensorboard/``, ``cache/`` (preprocessed samples unless ``cache_dir`` says
otherwise) and, when training ends, ``model.pt``. ``resume=True`` continues from the checkpoint
with the run's saved config, losing at most the epoch that was running.

Model selection sees the validation patients only (``config.val_fraction``): after every epoch
the stage's metric is measured on them, a better value is kept in ``best.pt``, a stage may stop
early (``patience``), and every stage ends on its best epoch's weights. So ``model.pt`` holds
the best validation epoch of each stage; the test patients are left for ``abdus evaluate``.

``train(model="pbt")`` trains the classical baseline instead (``abdus.baselines.pbt``), so
every model of Table 1 trains through this one function.

Under ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK set) every process calls ``train``; they
train one model with DDP, and rank 0 alone evaluates and writes files (multi-machine runs need
the run folder and the dataset on a shared filesystem).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from abdus import modelfile
from abdus.baselines.pbt import train_pbt
from abdus.baselines.pbt_config import pbt_preset
from abdus.choices import Model, Preset, check_choice
from abdus.errors import AbdusInputError
from abdus.models import PatchDiscriminator
from abdus.training import checkpoint as ckpt
from abdus.training.averaging import WeightAverage
from abdus.training.config import CONFIG_NAME, StageConfig, TrainConfig, save_config
from abdus.training.datasets import (
    CACHE_NAME,
    TrainingData,
    load_training_data,
    start_epoch,
    train_batches,
)
from abdus.training.distributed import DistributedContext, barrier, cleanup, init_distributed
from abdus.training.loops import StepTools, build_step_tools, train_epoch
from abdus.training.presets import resolve_config
from abdus.training.runlog import RunLog, json_safe
from abdus.training.runtime import (
    configure_determinism,
    deterministic_mode_restored,
    make_grad_scaler,
    memory_format,
    resolve_amp,
    seed_everything,
)
from abdus.training.selection import (
    BEST_METRIC,
    epoch_summary,
    out_of_patience,
    record_if_best,
    restore_best,
    selection_of,
    validate,
    validation_due,
)
from abdus.training.stages import (
    REFIT,
    VIEWS,
    build_networks,
    codec_of,
    init_view_path,
    set_train_mode,
    stage_config,
    stage_schedule,
    stages_of,
    view_anchor,
)
from abdus.training.teacher import load_teacher


class Trainer:
    """One run: model (+ discriminator), optimizers, progress, logs; ``run()`` trains every
    stage the model has, from where the progress says, checkpointing after each epoch."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        data: TrainingData,
        ctx: DistributedContext,
        *,
        networks: tuple[nn.Module, nn.Module | None] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        self.config, self.run_dir, self.data, self.ctx = config, run_dir, data, ctx
        self.codec = codec_of(config)
        configure_determinism(config.deterministic, ctx.device)
        if networks is None:
            seed_everything(config.seed)  # same initial weights on every rank and every rerun
            networks = build_networks(config)
        self.model, self.discriminator = networks
        self.stages = stages_of(self.model, config.stage3.epochs)
        self.memory_format = memory_format(config.channels_last)
        for net in (self.model, self.discriminator):
            if net is not None:
                net.to(ctx.device, memory_format=self.memory_format)
        self.teacher = load_teacher(config, ctx.device)
        self.amp_dtype = resolve_amp(config.amp, ctx.device)
        self.scaler = make_grad_scaler(ctx.device, self.amp_dtype)
        self.progress = ckpt.Progress(stage=self.stages[0])
        self._optimizer_states: dict[str, Any] = {}
        self._anchor_state: dict[str, Any] | None = None  # a resumed view stage's anchor
        self.anchor: nn.Module | None = None  # the view stage's frozen shared stages
        self._average_state: dict[str, Any] | None = None  # a resumed stage's weight average
        self.average: WeightAverage | None = None  # the stage's weight average (ema_decay)
        history = self._restore(payload) if payload is not None else []
        purge = self.progress.global_step if payload is not None else None
        if ctx.is_main:
            save_config(config, run_dir / CONFIG_NAME)  # the resolved config, beside the run
        self.log = RunLog(run_dir, enabled=ctx.is_main, history=history, purge_step=purge)

    def _restore(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """Load a checkpoint's weights, optimizer/scaler/RNG states and progress."""
        self.model.load_state_dict(payload["model"]["state"])
        if self.discriminator is not None and payload["discriminator"] is not None:
            self.discriminator.load_state_dict(payload["discriminator"]["state"])
        self.scaler.load_state_dict(payload["scaler"])
        self.progress = ckpt.Progress(**payload["progress"])
        self._optimizer_states = payload["optimizers"]
        self._anchor_state = payload.get("anchor")
        self._average_state = payload.get("average")
        ckpt.restore_rng_state(payload["rng"])
        return list(payload.get("history", []))

    # ---------------------------------------------------------------------------- stages
    def run(self) -> None:
        """Train the stages not yet finished, in the paper's order; each ends on its best
        validation epoch."""
        start = self.stages.index(self.progress.stage)
        for stage in self.stages[start:]:
            if stage != self.progress.stage:
                self.progress.stage, self.progress.epoch = stage, 0
                self.progress.stale_epochs = 0
                self.progress.best.pop(BEST_METRIC[stage][0], None)  # the refit starts afresh
                self._optimizer_states = {}
            self.run_stage(stage)
            if self.average is not None:
                self.average.load_into_model()  # a stage never validated ends on its average
            restore_best(self.model, self.run_dir, stage, self.ctx)

    def _tools(self, stage: str) -> StepTools:
        """The stage's step tools, with optimizer states restored when resuming into it."""
        tools = build_step_tools(
            self.config,
            stage,
            self.model,
            self.discriminator,
            self.ctx,
            scaler=self.scaler,
            amp_dtype=self.amp_dtype,
            anchor=self.anchor,
        )
        weights = self.data.landmark_weights  # on the device once, not per step
        tools.teacher = self.teacher
        tools.channel_weight = None if weights is None else weights.to(self.ctx.device)
        for name, opt in tools.optimizers().items():
            if name in self._optimizer_states:
                opt.load_state_dict(self._optimizer_states[name])
        return tools

    def run_stage(self, stage: str) -> None:
        """Train ``stage`` from epoch ``progress.epoch`` to its configured epoch count, or until
        ``patience`` epochs pass without a better validation score."""
        spec = stage_config(self.config, stage)
        self.average = None
        if self.progress.epoch >= spec.epochs:
            return
        if stage == VIEWS and self.progress.epoch == 0:
            init_view_path(self.model, self.config.view_init)
        self.anchor = self._view_anchor(stage)
        if stage == REFIT and self.progress.epoch == 0 and self.discriminator is not None:
            # A new PatchGAN: the stage-1 one, trained against the features stage 2 changed,
            # dominated the refit (its losses ~0.02) and made the calipers worse (measured).
            # Drawn from the run's seed, so every rank starts the same one (rank 0 alone has
            # drawn from the global generator for its validation loaders).
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.seed)
                fresh = PatchDiscriminator(self.discriminator.config)
            self.discriminator.load_state_dict(fresh.state_dict())
        tools = self._tools(stage)
        tools.average = self.average = self._weight_average(spec)
        loader = train_batches(self.data, stage, spec.batch_size, self.config, self.ctx)
        tools.schedule = stage_schedule(spec, len(loader), self.ctx.world_size)
        for epoch in range(self.progress.epoch, spec.epochs):
            set_train_mode(self.model, stage, self.config.view_stage_trains_shared)
            if tools.discriminator is not None:
                tools.discriminator.train()
            start_epoch(loader, self.config.seed, stage, epoch)
            began = time.perf_counter()
            train_parts = train_epoch(
                stage,
                loader,
                tools,
                description=f"{stage} {epoch + 1}/{spec.epochs}",
                first_step=epoch * len(loader),
                global_step=self.progress.global_step,
                log_every=self.config.log_every,
                on_log=lambda step, parts, s=stage: self.log.scalars(f"{s}/train", parts, step),
            )
            seconds = time.perf_counter() - began
            self.progress.global_step += int(train_parts.pop("steps"))
            images = train_parts.pop("images")
            with self._averaged():  # the stage's average, when it keeps one, is what counts
                val = self._validate(stage, epoch, spec.epochs)
                best = self._update_best(stage, val)
            record = {
                "stage": stage,
                "epoch": epoch + 1,
                "global_step": self.progress.global_step,
                "lr": tools.optimizer.param_groups[0]["lr"],
                "seconds": round(seconds, 3),
                "images": int(images),  # over all ranks
                "images_per_s": round(images / max(seconds, 1e-9), 2),
                "train": train_parts,
                "val": val,
                "best": best,
            }
            stop = out_of_patience(self.progress, spec.patience, self.ctx)
            self.progress.epoch = spec.epochs if stop else epoch + 1
            if stop:
                record["early_stop"] = True
            self._end_of_epoch(record, tools)
            if self.ctx.is_main:
                tqdm.write(epoch_summary(record, spec.epochs), file=sys.stderr)
            if stop:
                break

    def _weight_average(self, spec: StageConfig) -> WeightAverage | None:
        """The stage's weight average (``ema_decay`` > 0), the checkpoint's when resuming into
        the stage; None otherwise."""
        if spec.ema_decay <= 0:
            return None
        average = WeightAverage(self.model, spec.ema_decay)
        if self.progress.epoch > 0 and self._average_state is not None:
            average.load_state_dict(self._average_state)
        return average

    def _averaged(self) -> contextlib.AbstractContextManager:
        """Inside it the model holds the stage's averaged weights (when it keeps an average)."""
        return self.average.applied() if self.average is not None else contextlib.nullcontext()

    def _view_anchor(self, stage: str) -> nn.Module | None:
        """The view stage's frozen copy of the shared stages (``view_stage_anchor``) for a
        model with a landmark path: taken as the stage begins, the checkpoint's when resuming
        into it; None otherwise."""
        wanted = stage == VIEWS and self.config.view_stage_anchor > 0
        if not (wanted and self.model.landmark_parameters()):
            return None
        anchor = view_anchor(self.model)
        if self.progress.epoch > 0 and self._anchor_state is not None:
            anchor.load_state_dict(self._anchor_state)
        return anchor

    def _validate(self, stage: str, epoch: int, epochs: int) -> dict[str, float] | None:
        """Validation metrics on rank 0 (None when not due or no validation patients)."""
        val_set = self.data.stage_val_set(stage)
        due = validation_due(self.config.evaluate_every, epoch, epochs)
        if not (due and self.ctx.is_main and val_set is not None):
            return None
        return validate(
            self.model, val_set, stage, self.config, self.codec, self.ctx.device, self.amp_dtype
        )

    def _update_best(self, stage: str, val: dict[str, float] | None) -> bool:
        """Keep a better validation score (rank 0): ``progress.best`` and ``best.pt``.
        Returns whether this epoch is the stage's best so far."""
        selection = record_if_best(self.progress, stage, val)
        if selection is not None:
            modelfile.save_model(
                self.run_dir / modelfile.BEST_NAME,
                config=self.config,
                codec=self.codec,
                model=self.model,
                selection=selection,
            )
        return selection is not None

    def _end_of_epoch(self, record: dict[str, Any], tools: StepTools) -> None:
        """Checkpoint then metrics, by rank 0, with every rank held at barriers around it."""
        barrier(self.ctx)
        if self.ctx.is_main:
            ckpt.save_checkpoint(
                self.run_dir / modelfile.CHECKPOINT_NAME,
                config=self.config,
                codec=self.codec,
                model=self.model,
                discriminator=self.discriminator,
                optimizers=tools.optimizers(),
                scaler=self.scaler,
                progress=self.progress,
                history=[*self.log.history, json_safe(record)],
                anchor=self.anchor,
                average=None if self.average is None else self.average.state_dict(),
            )
        self.log.epoch(record)
        barrier(self.ctx)

    def finish(self) -> Path:
        """Write ``model.pt`` (rank 0) and close the logs; returns the model file's path."""
        path = self.run_dir / modelfile.MODEL_NAME
        barrier(self.ctx)
        if self.ctx.is_main:
            modelfile.save_model(
                path,
                config=self.config,
                codec=self.codec,
                model=self.model,
                selection=selection_of(self.log.history),
            )
        self.log.close()
        barrier(self.ctx)
        return path


# ------------------------------------------------------------------------------ public API
def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Never overwrite a user's run: a new run needs a new or empty folder (or one holding only
    ``cache/``); resume needs a checkpoint. AbdusInputError naming the folder otherwise."""
    if resume:
        if not (run_dir / modelfile.CHECKPOINT_NAME).is_file():
            raise AbdusInputError(
                f"cannot resume: no {modelfile.CHECKPOINT_NAME} in the run folder (it is written "
                "after the first epoch); start a new run instead",
                run_dir,
            )
        return
    # A folder holding only the sample cache is what a start that failed on the data leaves.
    if run_dir.exists() and (
        not run_dir.is_dir() or any(p.name != CACHE_NAME for p in run_dir.iterdir())
    ):
        raise AbdusInputError(
            "run folder exists and is not empty; pass --resume to continue it or choose "
            "a new folder",
            run_dir,
        )


def build_trainer(
    data: str | Path,
    run_dir: Path,
    config: TrainConfig,
    ctx: DistributedContext,
    payload: dict[str, Any] | None = None,
) -> Trainer:
    """A ready Trainer: ``config.yaml`` written (rank 0), datasets built and checked."""
    barrier(ctx)  # every rank has checked the run folder before rank 0 writes into it
    seed_everything(config.seed)  # same initial weights on every rank and every rerun
    networks = build_networks(config)
    stages = stages_of(networks[0], config.stage3.epochs)
    data_set = load_training_data(data, config, codec_of(config), run_dir, stages, ctx)
    return Trainer(config, run_dir, data_set, ctx, networks=networks, payload=payload)


def train(
    data: str | Path,
    out: str | Path,
    *,
    model: str = Model.MGCN_R,
    preset: str = Preset.DEMO,
    config: str | Path | None = None,
    resume: bool = False,
    device: str | None = None,
    epochs_scale: float | None = None,
    seed: int | None = None,
) -> Path:
    """Train ``model`` (an ``abdus.choices.Model``) on the dataset ``data`` (folder or manifest)
    into the run folder ``out``; returns the run folder, which then holds the model file.

    A network's config is the ``preset`` for ``model`` overridden by the YAML file ``config``;
    ``device`` ("auto", "cpu", "cuda", "cuda:N"), ``epochs_scale`` (multiplies both stages'
    epochs) and ``seed`` (patient split, initial weights, data order, augmentation) override
    it too. With ``resume`` the run continues from its checkpoint with its saved config (only
    ``device`` still applies). Under torchrun every process calls this and they train
    together; the run folder then holds ``model.pt``.

    ``model="pbt"``, the classical baseline, is trained by ``abdus.baselines.pbt.train_pbt``
    (its ``preset``; ``seed`` sets its patient split and feature draws) into ``model.pbt``; it
    takes no YAML config, resume, epochs scale or GPU (AbdusInputError).
    """
    try:
        model = check_choice(Model, model, "model")
    except ValueError as err:
        raise AbdusInputError(str(err)) from None
    if model == Model.PBT:
        return _train_pbt(data, out, preset, config, resume, device, epochs_scale, seed)
    run_dir = Path(out)
    check_run_dir(run_dir, resume)
    payload = modelfile.read_network_file(run_dir / modelfile.CHECKPOINT_NAME) if resume else None
    if payload is not None:
        resolved = TrainConfig.from_dict(payload["config"])
        if device is not None:
            resolved = dataclasses.replace(resolved, device=device)
    else:
        resolved = resolve_config(
            model=model,
            preset=preset,
            config=config,
            device=device,
            epochs_scale=epochs_scale,
            seed=seed,
        )
    return run_training(data, run_dir, resolved, payload)


def run_training(
    data: str | Path, run_dir: Path, config: TrainConfig, payload: dict[str, Any] | None = None
) -> Path:
    """Train the resolved ``config`` into ``run_dir`` (checked by ``check_run_dir``), from the
    checkpoint ``payload`` when resuming; every torchrun process calls it."""
    ctx = init_distributed(config.device)
    with deterministic_mode_restored():
        try:
            trainer = build_trainer(data, run_dir, config, ctx, payload)
            trainer.run()
            trainer.finish()
        finally:
            cleanup(ctx)
    return run_dir


def _train_pbt(
    data: str | Path,
    out: str | Path,
    preset: str,
    config: str | Path | None,
    resume: bool,
    device: str | None,
    epochs_scale: float | None,
    seed: int | None,
) -> Path:
    """``train`` for the PBT baseline: what a network run would take is refused, not ignored."""
    refused = {
        "a YAML config": config is not None,
        "resume": resume,
        "a GPU device": device not in (None, "auto", "cpu"),
        "an epochs scale": epochs_scale is not None,
    }
    if unsupported := [what for what, given in refused.items() if given]:
        raise AbdusInputError(
            f"the pbt baseline does not support {', '.join(unsupported)} (it trains once, on "
            "the CPU, from its preset)"
        )
    try:
        pbt_config = pbt_preset(preset)
    except ValueError as err:
        raise AbdusInputError(str(err)) from None
    if seed is None:
        return train_pbt(data, out, preset=preset)
    pbt_config = dataclasses.replace(pbt_config, split_seed=int(seed))
    return train_pbt(data, out, seed=int(seed), config=pbt_config)


__all__ = ["Trainer", "build_trainer", "check_run_dir", "run_training", "train"]
