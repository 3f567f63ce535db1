"""Training: the paper's two stages (landmarks, then views), presets, checkpoints, DDP.

Entry points (import them from their modules; this package imports nothing eagerly):

- ``abdus.training.trainer.train(data, out, *, model, preset, config, resume, device,
  epochs_scale) -> Path``: what ``abdus train`` runs (also under ``torchrun``).
- ``abdus.training.checkpoint.load_model_from_run(run_dir) -> (model, config, codec)`` and
  ``load_model_file(path)`` / ``load_checkpoint(path)``: for evaluation and prediction.
- ``abdus.training.presets.preset_config(preset, model)``: the ``tiny`` / ``demo`` / ``paper``
  configs (``abdus.training.config.TrainConfig``).

Modules: ``config`` (dataclasses, YAML overrides), ``presets``, ``trainer`` (run folder, stage
loop), ``loops`` (steps, epochs, evaluation), ``datasets`` (split, cache, loaders),
``checkpoint``, ``distributed`` (torchrun / DDP), ``runtime`` (seeding, mixed precision),
``runlog`` (metrics.jsonl, TensorBoard), ``throughput`` (speed measurements).
"""
