"""``abdus distill RUN --data DATA --out SMALL``: a smaller network taught by a trained one.

A scanner or PACS box may have a small CPU; the paper's ResNet-50 at 0.5 mm takes 0.4-1.3 s
per image there (docs/benchmarks.md). The student keeps the teacher's input (mm per pixel,
canvas), heat-map codec, losses, schedule and patient split (so the test patients stay unseen)
and gets a narrower (``widths``, default half the teacher's) or shallower (``depth``) encoder.
It learns from the labels and from the frozen teacher's heat maps and logits
(``abdus.training.teacher``). The teacher stays the reference; ``abdus evaluate`` reports the
student against reader A and reader B like any run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from abdus import modelfile
from abdus.errors import AbdusInputError
from abdus.training.config import TrainConfig, scale_epochs
from abdus.training.trainer import check_run_dir, run_training, train


def student_config(
    teacher: TrainConfig,
    teacher_file: Path,
    *,
    widths: Sequence[int] | None = None,
    depth: str | None = None,
    alpha: float = 0.5,
    temperature: float = 2.0,
) -> TrainConfig:
    """The student's config: the teacher's, with a smaller encoder and the teacher named."""
    options = teacher.model_options
    new_widths = (
        tuple(int(w) for w in widths) if widths else tuple(max(4, w // 2) for w in options.widths)
    )
    student = dataclasses.replace(options, widths=new_widths, depth=depth or options.depth)
    if student == options:
        raise AbdusInputError("the student must be smaller: give other --widths or --depth")
    discriminator = teacher.discriminator_options
    if discriminator.width == options.widths[0]:  # abdus's recipe: as wide as the first stage
        discriminator = dataclasses.replace(discriminator, width=new_widths[0])
    return dataclasses.replace(
        teacher,
        model_options=student,
        discriminator_options=discriminator,
        teacher=str(teacher_file.resolve()),
        distill_alpha=alpha,
        distill_temperature=temperature,
    )


def distill(
    teacher_run: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    widths: Sequence[int] | None = None,
    depth: str | None = None,
    alpha: float = 0.5,
    temperature: float = 2.0,
    epochs_scale: float | None = None,
    device: str | None = None,
    resume: bool = False,
) -> Path:
    """Train a student of the run or model file ``teacher_run`` on ``data`` into the run folder
    ``out`` (see the module doc); returns ``out``, which then holds ``model.pt``. ``resume``
    continues an interrupted distillation from its checkpoint (its saved config)."""
    if resume:
        return train(data, out, resume=True, device=device)
    loaded = modelfile.open_network(teacher_run)  # from a path: its source is that file
    try:
        config = student_config(
            loaded.config, loaded.source, widths=widths, depth=depth, alpha=alpha,
            temperature=temperature,
        )  # fmt: skip
        if epochs_scale is not None:
            config = scale_epochs(config, epochs_scale)
        if device is not None:
            config = dataclasses.replace(config, device=device)  # TrainConfig checks it
    except (ValueError, TypeError) as err:
        if isinstance(err, AbdusInputError):
            raise
        raise AbdusInputError(str(err)) from None
    run_dir = Path(out)
    check_run_dir(run_dir, resume=False)
    return run_training(data, run_dir, config)


__all__ = ["distill", "student_config"]
