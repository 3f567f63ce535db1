"""Training: the paper's two stages (landmarks, then views), presets, checkpoints, DDP.

Entry points (import them from their modules; this package imports nothing eagerly):

- ``abdus.training.trainer.train(data, out, *, model, preset, config, resume, device,
  epochs_scale, seed) -> Path``: what ``abdus train`` runs (also under ``torchrun``); every
  ``abdus.choices.Model``, the PBT baseline included.
- ``abdus.training.presets.preset_config(preset, model)``: the ``tiny`` / ``demo`` / ``paper``
  configs (``abdus.training.config.TrainConfig``; every key in ``docs/configuration.md``).
- Model files (``model.pt``, ``best.pt``) are read and written by ``abdus.modelfile``.

Modules: ``config`` (typed sections, YAML overrides), ``presets``, ``trainer`` (run folder,
stage loop, ``train``), ``stages`` (what each stage trains, its optimizer and schedule),
``loops`` (steps, epochs, evaluation), ``selection`` (validation, best epoch, patience),
``datasets`` (split, cache, loaders), ``checkpoint``, ``distributed`` (torchrun / DDP),
``runtime`` (seeding, mixed precision), ``runlog`` (metrics.jsonl, TensorBoard),
``throughput`` (speed measurements, timed with ``abdus.timing``).
"""
