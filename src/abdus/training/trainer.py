"""Two-stage training (paper section 2.2 "Implementation") and ``train``, what ``abdus train`` runs.

The run reads like the paper: the landmark stage first (SGD for the network, Adam for the
PatchGAN discriminator of MGCN_R), then the view stage with the shared and landmark parts
locked (Adam). Which stages run depends on the variant (``loops.stages_of``): mgcn_r both,
mgcn / mfcn / sfcn the landmark stage, stl the view stage.

A run folder holds ``config.yaml`` (resolved config), ``checkpoint.pt`` (rewritten atomically
after every epoch), ``best.pt`` (the best validation epoch of the stage being trained),
``metrics.jsonl``, ``tensorboard/``, ``cache/`` (preprocessed samples unless ``cache_dir`` says
otherwise) and, when training ends, ``model.pt``. ``resume=True`` continues from the checkpoint
with the run's saved config, losing at most the epoch that was running.

Model selection sees the validation patients only (``config.val_fraction``): after every epoch
the stage's metric is measured on them, a better value is kept in ``best.pt``, a stage may stop
early (``patience``), and every stage ends on its best epoch's weights. So ``model.pt`` holds
the best validation epoch of each stage; the test patients are left for ``abdus evaluate``.

Under ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK set) every process calls ``train``; they
train one model with DDP, and rank 0 alone evaluates and writes files (multi-machine runs need
the run folder and the dataset on a shared filesystem).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from abdus.data.heatmaps import HeatmapCodec
from abdus.errors import AbdusInputError
from abdus.losses import LossWeights
from abdus.models import build_discriminator, build_model
from abdus.training import checkpoint as ckpt
from abdus.training.config import CONFIG_NAME, TrainConfig, save_config
from abdus.training.datasets import (
    CACHE_NAME,
    TrainingData,
    load_training_data,
    make_loader,
    start_epoch,
)
from abdus.training.distributed import (
    DistributedContext,
    all_reduce_sums,
    barrier,
    cleanup,
    init_distributed,
    reduce_device,
    wrap_model,
)
from abdus.training.loops import (
    LANDMARKS,
    VIEWS,
    LandmarkNetwork,
    LearningRateSchedule,
    StepTools,
    ViewNetwork,
    evaluate,
    freeze_for_stage,
    make_optimizer,
    set_train_mode,
    stages_of,
    train_epoch,
)
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

STAGE_FIELD = {"landmarks": "stage1", "views": "stage2"}
# The held-out metric that defines "best" in each stage, and whether higher is better.
BEST_METRIC = {"landmarks": ("landmark_error_mm", False), "views": ("view_accuracy", True)}
BEST = {name for name, _ in BEST_METRIC.values()}


def build_networks(config: TrainConfig, path: Path | None = None):
    """(model, discriminator or None) of ``config``; bad model options -> AbdusInputError.

    The PatchGAN is built only when the adversarial weight is > 0 and the model detects
    landmarks (paper: MGCN_R's adversarial regularisation of the heat maps).
    """
    try:
        model = build_model(config.model, **config.model_options)
        needs_d = config.loss.adversarial > 0 and LANDMARKS in stages_of(model)
        discriminator = build_discriminator(**config.discriminator_options) if needs_d else None
    except (TypeError, ValueError) as err:
        raise AbdusInputError(f"bad model options: {err}", path) from None
    return model, discriminator


def codec_of(config: TrainConfig) -> HeatmapCodec:
    """The heat-map codec of a config: Gaussian ``sigma_mm`` at the model pixel spacing, peak
    ``heatmap_amplitude``."""
    p = config.preprocess
    return HeatmapCodec.from_mm(
        p.size, config.sigma_mm, p.spacing_mm, amplitude=config.heatmap_amplitude
    )


def stage_schedule(spec, steps_per_epoch: int) -> LearningRateSchedule | None:
    """The learning-rate schedule of a stage (None: the optimizer's constant lr, no warm-up)."""
    if spec.schedule == "constant" and spec.warmup_epochs == 0:
        return None
    return LearningRateSchedule(
        base_lr=spec.optimizer.lr,
        total_steps=spec.epochs * steps_per_epoch,
        warmup_steps=round(spec.warmup_epochs * steps_per_epoch),
        kind=spec.schedule,
    )


def init_view_path(model: nn.Module, how: str) -> None:
    """Start the view path's stages 3-4 for stage 2: "scratch" keeps the random init (paper);
    "landmark" copies the trained landmark stages 3-4 (same architecture), so the view path
    starts from features that already describe the organs."""
    if how == "landmark" and hasattr(model, "view_stages"):
        model.view_stages.load_state_dict(model.landmark_stages.state_dict())


def build_step_tools(
    config: TrainConfig,
    stage: str,
    model: nn.Module,
    discriminator: nn.Module | None,
    ctx: DistributedContext,
    *,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None,
) -> StepTools:
    """Freeze ``model`` for ``stage``, wrap its stage network for DDP, build the optimizers
    (paper 2.2: stage 1 network + Adam discriminator, stage 2 the classifier only)."""
    spec = getattr(config, STAGE_FIELD[stage])
    trainable = freeze_for_stage(model, stage)
    body = LandmarkNetwork(model) if stage == LANDMARKS else ViewNetwork(model)
    weights = {k: getattr(config.loss, k) for k in ("regression", "location", "adversarial")}
    tools = StepTools(
        network=wrap_model(body, ctx),
        optimizer=make_optimizer(spec.optimizer, trainable),
        scaler=scaler,
        ctx=ctx,
        amp_dtype=amp_dtype,
        memory_format=memory_format(config.channels_last, ctx.device),
        weights=LossWeights(**weights, view=config.loss.view),
        reduction=config.loss.reduction,
        threshold=codec_of(config).threshold,
        amplitude=config.heatmap_amplitude,
        label_smoothing=config.loss.label_smoothing,
    )
    if stage == LANDMARKS and discriminator is not None:
        tools.discriminator = discriminator
        tools.d_optimizer = make_optimizer(config.discriminator, discriminator.parameters())
    return tools


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
        self.stages = stages_of(self.model)
        self.memory_format = memory_format(config.channels_last, ctx.device)
        for net in (self.model, self.discriminator):
            if net is not None:
                net.to(ctx.device, memory_format=self.memory_format)
        self.amp_dtype = resolve_amp(config.amp, ctx.device)
        self.scaler = make_grad_scaler(ctx.device, self.amp_dtype)
        self.progress = ckpt.Progress(stage=self.stages[0])
        self._optimizer_states: dict[str, Any] = {}
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
                self._optimizer_states = {}
            self.run_stage(stage)
            self._restore_best(stage)

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
        )
        for name, opt in tools.optimizers().items():
            if name in self._optimizer_states:
                opt.load_state_dict(self._optimizer_states[name])
        return tools

    def run_stage(self, stage: str) -> None:
        """Train ``stage`` from epoch ``progress.epoch`` to its configured epoch count, or until
        ``patience`` epochs pass without a better validation score."""
        spec = getattr(self.config, STAGE_FIELD[stage])
        if self.progress.epoch >= spec.epochs:
            return
        if stage == VIEWS and self.progress.epoch == 0:
            init_view_path(self.model, self.config.view_init)
        tools = self._tools(stage)
        loader = make_loader(
            self.data.stage_train_set(stage), spec.batch_size, self.config, self.ctx, True
        )
        tools.schedule = stage_schedule(spec, len(loader))
        for epoch in range(self.progress.epoch, spec.epochs):
            set_train_mode(self.model, stage)
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
                on_step=lambda parts, s=stage: self._on_step(s, parts),
            )
            seconds = time.perf_counter() - began
            record = {
                "stage": stage,
                "epoch": epoch + 1,
                "global_step": self.progress.global_step,
                "lr": tools.optimizer.param_groups[0]["lr"],
                "seconds": round(seconds, 3),
                "images_per_s": round(train_parts.pop("images") / max(seconds, 1e-9), 2),
                "train": train_parts,
                "val": self._validate(stage, epoch, spec.epochs),
            }
            record["best"] = self._update_best(stage, record["val"])
            stop = self._out_of_patience(spec.patience)
            self.progress.epoch = spec.epochs if stop else epoch + 1
            if stop:
                record["early_stop"] = True
            self._end_of_epoch(record, tools)
            if self.ctx.is_main:
                tqdm.write(epoch_summary(record, spec.epochs), file=sys.stderr)
            if stop:
                break

    def _on_step(self, stage: str, parts: dict[str, float]) -> None:
        self.progress.global_step += 1
        if self.progress.global_step % self.config.log_every == 0:
            self.log.scalars(f"{stage}/train", parts, self.progress.global_step)

    def _validate(self, stage: str, epoch: int, epochs: int) -> dict[str, float] | None:
        """Validation metrics on rank 0 (None when not due or no validation patients)."""
        every = self.config.evaluate_every
        due = every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == epochs)
        val_set = self.data.stage_val_set(stage)
        if not (due and self.ctx.is_main and val_set is not None):
            return None
        spec = getattr(self.config, STAGE_FIELD[stage])
        loader = torch.utils.data.DataLoader(
            val_set,
            batch_size=spec.batch_size,
            num_workers=self.config.num_workers,
            generator=torch.Generator().manual_seed(self.config.seed),  # global RNG untouched
        )
        return evaluate(self.model, loader, self.codec, stage, self.ctx.device, self.amp_dtype)

    def _update_best(self, stage: str, val: dict[str, float] | None) -> bool:
        """Keep a better validation score (rank 0): ``progress.best`` and ``best.pt``.
        Returns whether this epoch is the stage's best so far."""
        name, higher = BEST_METRIC[stage]
        value = (val or {}).get(name)
        if value is None or value != value:  # not measured, or NaN
            return False
        best = self.progress.best.get(name)
        if best is not None and not (value > best if higher else value < best):
            self.progress.stale_epochs += 1
            return False
        self.progress.best[name] = float(value)
        self.progress.stale_epochs = 0
        selection = {stage: {"epoch": self.progress.epoch + 1, name: float(value)}}
        ckpt.save_model(
            self.run_dir / ckpt.BEST_NAME,
            config=self.config,
            codec=self.codec,
            model=self.model,
            selection=selection,
        )
        return True

    def _out_of_patience(self, patience: int) -> bool:
        """Whether every rank stops the stage now (rank 0 decides: it alone validates)."""
        stop = float(patience > 0 and self.ctx.is_main and self.progress.stale_epochs >= patience)
        flag = torch.tensor([stop], dtype=torch.float64, device=reduce_device(self.ctx))
        return bool(all_reduce_sums(flag, self.ctx)[0] > 0)

    def _restore_best(self, stage: str) -> None:
        """Load the stage's best validation weights (``best.pt``), on every rank. Nothing to
        do when the stage was never validated (no validation split): its last epoch stands."""
        barrier(self.ctx)
        path = self.run_dir / ckpt.BEST_NAME
        if not path.is_file():
            return
        payload = ckpt.load_checkpoint(path)
        if stage not in payload.get("selection", {}):
            return  # the best file of an earlier stage: this stage was not validated
        self.model.load_state_dict(payload["model"]["state"])

    def selection(self) -> dict[str, dict[str, Any]]:
        """Per stage, the epoch whose weights the model keeps and its validation score."""
        chosen: dict[str, dict[str, Any]] = {}
        for record in self.log.history:
            if record.get("best"):
                name = BEST_METRIC[record["stage"]][0]
                chosen[record["stage"]] = {
                    "epoch": record["epoch"], name: record["val"][name]
                }  # fmt: skip
        return chosen

    def _end_of_epoch(self, record: dict[str, Any], tools: StepTools) -> None:
        """Checkpoint then metrics, by rank 0, with every rank held at barriers around it."""
        barrier(self.ctx)
        if self.ctx.is_main:
            ckpt.save_checkpoint(
                self.run_dir / ckpt.CHECKPOINT_NAME,
                config=self.config,
                codec=self.codec,
                model=self.model,
                discriminator=self.discriminator,
                optimizers=tools.optimizers(),
                scaler=self.scaler,
                progress=self.progress,
                history=[*self.log.history, json_safe(record)],
            )
        self.log.epoch(record)
        barrier(self.ctx)

    def finish(self) -> Path:
        """Write ``model.pt`` (rank 0) and close the logs; returns the model file's path."""
        path = self.run_dir / ckpt.MODEL_NAME
        barrier(self.ctx)
        if self.ctx.is_main:
            ckpt.save_model(
                path,
                config=self.config,
                codec=self.codec,
                model=self.model,
                selection=self.selection(),
            )
        self.log.close()
        barrier(self.ctx)
        return path


def epoch_summary(record: dict[str, Any], epochs: int) -> str:
    """One line per epoch for the terminal or a log: losses, held-out metrics, speed."""
    parts = [f"{record['stage']} {record['epoch']}/{epochs}"]
    train = record["train"]
    parts += [f"{k}={train[k]:.4g}" for k in sorted(train, key=lambda k: (k != "loss", k))]
    parts += [f"val_{k}={v:.4g}" for k, v in (record["val"] or {}).items() if k in BEST]
    parts += ["(best)"] if record.get("best") else []
    parts.append(f"{record['images_per_s']:.1f} img/s")
    return "  ".join(parts)


# ------------------------------------------------------------------------------ public API
def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Never overwrite a user's run: a new run needs a new or empty folder (or one holding only
    ``cache/``); resume needs a checkpoint. AbdusInputError naming the folder otherwise."""
    if resume:
        if not (run_dir / ckpt.CHECKPOINT_NAME).is_file():
            raise AbdusInputError(
                f"cannot resume: no {ckpt.CHECKPOINT_NAME} in the run folder (it is written "
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
    networks = build_networks(config, run_dir / CONFIG_NAME)
    stages = stages_of(networks[0])
    data_set = load_training_data(data, config, codec_of(config), run_dir, stages, ctx)
    return Trainer(config, run_dir, data_set, ctx, networks=networks, payload=payload)


def train(
    data: str | Path,
    out: str | Path,
    *,
    model: str = "mgcn_r",
    preset: str = "demo",
    config: str | Path | None = None,
    resume: bool = False,
    device: str | None = None,
    epochs_scale: float | None = None,
    seed: int | None = None,
) -> Path:
    """Train ``model`` on the dataset ``data`` (folder or manifest) into the run folder ``out``.

    The config is the ``preset`` for ``model`` overridden by the YAML file ``config``;
    ``device`` ("auto", "cpu", "cuda", "cuda:N"), ``epochs_scale`` (multiplies both stages'
    epochs) and ``seed`` (patient split, initial weights, data order, augmentation) override
    it too. With ``resume`` the run continues from its checkpoint with its
    saved config (only ``device`` still applies). Under torchrun every process calls this and
    they train together. Returns the run folder, which then holds ``model.pt``.
    """
    run_dir = Path(out)
    check_run_dir(run_dir, resume)
    payload = ckpt.load_checkpoint(run_dir / ckpt.CHECKPOINT_NAME) if resume else None
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
    ctx = init_distributed(resolved.device)
    with deterministic_mode_restored():
        try:
            trainer = build_trainer(data, run_dir, resolved, ctx, payload)
            trainer.run()
            trainer.finish()
        finally:
            cleanup(ctx)
    return run_dir


__all__ = [
    "Trainer",
    "build_networks",
    "build_trainer",
    "check_run_dir",
    "codec_of",
    "resolve_config",
    "train",
]
