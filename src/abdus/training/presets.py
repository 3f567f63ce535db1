"""Training presets: ``tiny`` (tests, seconds), ``demo`` (minutes on 2 CPU cores), ``paper``.

``paper`` is section 2.2 of Xu et al. (MICCAI 2018) as published: ResNet50 encoder, images
resampled to 0.5 mm and padded to 512x512; stage 1 (landmarks) batch 4, 30 epochs, SGD
lr 1e-6 (momentum 0.9) for the network and Adam lr 2e-4 for the PatchGAN discriminator (betas
(0.5, 0.999) as pix2pix, whose discriminator the paper follows); stage 2 (views) batch 8,
5 epochs, Adam lr 5e-4 with the shared stages frozen. The lr of 1e-6 goes with Eq. 2's
per-pixel mean L2 (``loss.reduction = "mean"``); with the pixel sum it diverges (measured, see
``config.py``). The paper does not give the Gaussian width; we use sigma = 3 mm (6 px at 0.5 mm).

``demo`` (and ``tiny``, its miniature for the tests) is abdus's recipe: the paper's network
and losses, trained so that they learn from scratch on a CPU in minutes (there are no ImageNet
weights here). It departs from the published schedule where measurements on generated cohorts
showed the published one does not learn (docs/benchmarks.md, "What makes the network learn"):

* heat-map targets of amplitude 100 (``heatmap_amplitude``; the paper gives no amplitude). With
  amplitude 1 the per-pixel mean L2 of Eq. 2 sits at the all-zero output: an L2-only network
  had not moved after 10 epochs (61 mm validation landmark error); with 100 it reached 5.5 mm;
* AdamW (lr 1e-3 landmarks, 2e-3 views, weight decay 1e-4) with a half-epoch warm-up and a
  cosine decay, instead of SGD at 1e-6 and Adam at 5e-4 with constant rates;
* location and adversarial weights 0.1 (the paper: equal weights). Their scale is not the
  L2's once the amplitude is 100; at 1 and 1 the validation error was 7.6 mm against 5.7 mm;
* label smoothing 0.1 on the view loss (the reference reader mislabels ~9% of the views), and
  the view path's stages 3-4 start from the trained landmark stages (``view_init``);
* the view stage trains the shared stages too (``view_stage_trains_shared``; the paper locks
  them), then a third stage, the "refit" (``stage3``, 5 epochs), trains the landmark path again
  on the shared stages the view stage left, beside a new PatchGAN, with the view path locked.
  Without ImageNet weights the shared stages locked after stage 1 know only what the calipers
  need: with them trained on the views the demo's view accuracy rose by 3.6-6.9 points on
  three seeds; the refit brought the calipers back on two of them, not on seed 0
  (docs/benchmarks.md, "Why the multi-task view path trails", "The demo"). Anchoring the
  shared stages to their stage-1 features instead (``view_stage_anchor``, no refit) kept the
  calipers but cost 2.6-3.8 points of validation view accuracy on the same three seeds
  ("Anchoring the shared stages");
* the PatchGAN learns on every 4th step (``discriminator_every`` 4; the network's
  adversarial term uses it on every step), in stage 1 and in the refit: its passes were about
  a third of a landmark step on 2 AVX2-only CPU cores (538 against 342 ms per batch of 16),
  and this pays for the refit within the demo's 15 minutes (docs/benchmarks.md, "Paying for
  the refit");
* in ``demo``, the decoder's last boundary refinement at half the input size, then upsampled
  (``last_refine: half``; the same parameters; the paper refines at the input size), 16
  landmark epochs (from 10) and 18 view epochs (from 12). A landmark step took about three
  quarters of the time on 2 AVX2-only cores; the landmark stage's validation error fell from
  5.50 / 6.19 mm (10 epochs at full size) to 5.08 / 5.36 mm (seeds 0 / 1). The better-trained
  shared stages need the longer view stage: with 12 view epochs seed 0's validation view
  accuracy fell to 73.4% (78.2% before), with 18 it reached 78.5-84.3% in two runs. On three
  seeds' test patients: 4-5 of 7 measurements at most reader B's (before 3-4), 1.5-2.0% of
  landmarks over 20 mm (before 1.6-3.1%), view accuracy 77.1-84.8% (before 78.4-82.1%)
  (docs/benchmarks.md, "The last refinement at half resolution", "The demo");
* in ``demo``, dropout 0.1 before the view head's last layer (``classifier_dropout``; 0.5
  before; the paper gives none). With 0.5 the view stage was still learning at its last epoch
  and where it ended depended on the run: seed 0's validation view accuracy was 78.5% in one
  run and 84.3% in another whose landmark stages ended 0.05 mm apart; the run that reached 78.5%
  reached 85.3% with 0.1, from the same landmark stage. Most of the errors it removed were
  right and left kidney views taken for each other. On three seeds' test patients: view
  accuracy 83.0-83.8% (reader B 80.3-82.7%; before 77.1-84.8%), 4-6 of 7 measurements at most
  reader B's, 1.1-2.2% of landmarks over 20 mm (docs/benchmarks.md, "A lighter view head",
  "The demo");
* in ``demo``, the CPU's fast path and a 5-epoch refit (from 3): channels-last training, the
  stage's images on the training device (``data_on_device: on``; the CPU loader's worker
  processes were slower on two cores) and the PatchGAN judging the pair at half the input size
  (``discriminator_options.downsample`` 2; the decoder's last refinement is at half size
  anyway). The training took 1.33-1.37 times less time on 2 AVX-512 cores, and two more refit
  epochs bring the landmark path further back from the view stage (docs/benchmarks.md, "The
  CPU's fast path and a 5-epoch refit");
* in ``demo``, 12 landmark epochs, 14 view epochs and a 4-epoch refit on the demo's cohort of
  320 patients (from 16 / 18 / 5 on 240 patients: about the same number of steps, so the same
  training time). On a separate 80-patient cohort, used to choose and never trained on, the
  mean landmark error fell on each of three seeds (5.23 / 5.05 / 5.16 to 4.92 / 4.92 / 4.98
  mm), and so did the share of landmarks over 20 mm and the view errors (docs/benchmarks.md,
  "More patients, fewer epochs");
* scanner-like augmentation (shift, zoom, rotation, gain, gamma);
* the epoch kept in each stage is the best on the validation patients (``val_fraction``).

``demo`` runs a narrow ResNet-18 at 2 mm / 128 x 128; ``tiny`` an even smaller one at 4 mm /
64 x 64, with the paper's locked stage 2 and no refit, which keeps the tests fast (the tests of
the refit and of ``discriminator_every`` set them on ``tiny``). The paper's scale with this
recipe is ``--preset paper --config scripts/paper_recipe.yaml``.

The variants of the ablation (Table 1) train as in the paper: ``mgcn_r`` with the L2,
coordinate and adversarial losses; ``mgcn`` / ``mfcn`` / ``sfcn`` with the L2 loss only (their
``location`` and ``adversarial`` weights are 0); ``stl`` trains only the view stage, all its
parameters, with the stage-2 optimizer (14 epochs in ``demo``, as many as the multi-task view
stage).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from abdus.choices import (
    PRESETS,
    DataPlacement,
    Model,
    Optimizer,
    Preset,
    Reduction,
    Schedule,
    ViewInit,
    check_choice,
)
from abdus.data.dataset import AugmentConfig
from abdus.data.preprocess import PreprocessConfig
from abdus.errors import AbdusInputError
from abdus.losses import LossConfig
from abdus.models import DiscriminatorConfig, ModelConfig
from abdus.training.config import (
    OptimizerConfig,
    StageConfig,
    TrainConfig,
    apply_config_file,
    scale_epochs,
)

# pix2pix (Isola et al. 2017) discriminator optimizer, used by the paper for its PatchGAN.
_PIX2PIX_ADAM = OptimizerConfig(Optimizer.ADAM, 2e-4, betas=(0.5, 0.999))
# Table 1 ablation: only MGCN_R adds the coordinate and adversarial constraints.
_L2_ONLY = (Model.MGCN, Model.MFCN, Model.SFCN)
# The demo's stages, sized for its 320-patient cohort (``abdus.demo.DEMO_PATIENTS``): 12
# landmark epochs with the decoder's last refinement at half resolution, 14 view epochs, both
# when the view stage continues the landmark-trained shared stages (MTL) and for the
# single-task network, which trains every layer from scratch on the views alone, and a 4-epoch
# refit: about the steps of 16 / 18 / 5 epochs on the 240 patients it had before.
DEMO_LANDMARK_EPOCHS, DEMO_VIEW_EPOCHS, DEMO_STL_VIEW_EPOCHS = 12, 14, 14
DEMO_REFIT_EPOCHS = 4


def _recipe_stage(epochs: int, batch_size: int, lr: float) -> StageConfig:
    """A stage of abdus's recipe: AdamW with a half-epoch warm-up and a cosine decay."""
    optimizer = OptimizerConfig(Optimizer.ADAMW, lr, weight_decay=1e-4)
    return StageConfig(epochs, batch_size, optimizer, Schedule.COSINE, warmup_epochs=0.5)


# Scanner-like variation: probe position and angle, depth (zoom), gain and log-compression.
RECIPE_AUGMENTATION = AugmentConfig(
    translate_fraction=0.06,
    scale_range=(0.9, 1.1),
    rotation_deg=10.0,
    gamma_range=(0.7, 1.4),
    gain_range=(0.8, 1.2),
)


def _recipe(
    network: ModelConfig,
    canvas: tuple[float, int, float],
    stages: tuple[tuple[int, int, float], tuple[int, int, float]],
    *,
    discriminator_downsample: int = 1,
    **rest,
) -> TrainConfig:
    """abdus's recipe (module docstring) for the narrow ``network``, its PatchGAN as wide as
    its first stage and judging the pair pooled by ``discriminator_downsample``. ``canvas``:
    (model pixel mm, side px, Gaussian sigma mm); ``stages``: (epochs, batch size, lr) of
    stage 1 and stage 2; ``rest``: other ``TrainConfig`` fields."""
    spacing_mm, side, sigma_mm = canvas
    critic = DiscriminatorConfig(width=network.widths[0], downsample=discriminator_downsample)
    return TrainConfig(
        model_options=network,
        discriminator_options=critic,
        preprocess=PreprocessConfig(spacing_mm=spacing_mm, size=(side, side)),
        sigma_mm=sigma_mm,
        heatmap_amplitude=100.0,
        loss=LossConfig(location=0.1, adversarial=0.1, label_smoothing=0.1),
        stage1=_recipe_stage(*stages[0]),
        stage2=_recipe_stage(*stages[1]),
        discriminator=_PIX2PIX_ADAM,
        view_init=ViewInit.LANDMARK,
        **rest,
    )


def _tiny() -> TrainConfig:
    network = ModelConfig("resnet18", (8, 16, 32, 64), gcn_k=7, classifier_hidden=32)
    # 4 mm pixels, 64 x 64, sigma 2 px; the stages: 2 epochs each
    return _recipe(network, (4.0, 64, 8.0), ((2, 4, 2e-3), (2, 8, 2e-3)), log_every=1)


def _demo() -> TrainConfig:
    network = ModelConfig(
        "resnet18",
        (16, 32, 64, 128),
        gcn_k=9,
        classifier_hidden=128,
        classifier_dropout=0.1,
        last_refine="half",
    )
    # 2 mm pixels, 128 x 128, sigma 3 px, the decoder's last refinement at 64 x 64;
    # scanner-like augmentation; the view stage trains the shared stages too, then a 5-epoch
    # refit of the landmark path beside a new PatchGAN, which learns on every 4th step and
    # judges the pair at 64 x 64; channels-last, the images on the device (the CPU's fast path)
    stages = ((DEMO_LANDMARK_EPOCHS, 16, 1e-3), (DEMO_VIEW_EPOCHS, 32, 2e-3))
    extra = {
        "augment": True,
        "augmentation": RECIPE_AUGMENTATION,
        "log_every": 5,
        "view_stage_trains_shared": True,
        "stage3": _recipe_stage(DEMO_REFIT_EPOCHS, 16, 5e-4),
        "discriminator_every": 4,
        "channels_last": True,
        "data_on_device": DataPlacement.ON.value,
    }
    return _recipe(network, (2.0, 128, 6.0), stages, discriminator_downsample=2, **extra)


def _paper() -> TrainConfig:
    return TrainConfig(
        model_options=ModelConfig(depth="resnet50"),
        preprocess=PreprocessConfig(spacing_mm=0.5, size=(512, 512)),
        sigma_mm=3.0,
        loss=LossConfig(reduction=Reduction.MEAN),  # Eq. 2; lr 1e-6 diverges with "sum" (config.py)
        stage1=StageConfig(
            epochs=30, batch_size=4, optimizer=OptimizerConfig(Optimizer.SGD, 1e-6, momentum=0.9)
        ),
        stage2=StageConfig(epochs=5, batch_size=8, optimizer=OptimizerConfig(Optimizer.ADAM, 5e-4)),
        discriminator=_PIX2PIX_ADAM,
        num_workers=4,
        channels_last=True,
        deterministic=False,
        log_every=20,
    )


_BUILDERS = {Preset.TINY: _tiny, Preset.DEMO: _demo, Preset.PAPER: _paper}


def preset_config(preset: str, model: str = Model.MGCN_R) -> TrainConfig:
    """The resolved config of ``preset`` for the network ``model`` (ValueError naming the valid
    choices)."""
    preset = check_choice(Preset, preset, "preset")
    config = dataclasses.replace(_BUILDERS[preset](), model=model, preset=preset.value)
    if config.model in _L2_ONLY:
        loss = dataclasses.replace(config.loss, location=0.0, adversarial=0.0)
        config = dataclasses.replace(config, loss=loss)
    if config.model == Model.STL and preset == Preset.DEMO:
        stage2 = dataclasses.replace(config.stage2, epochs=DEMO_STL_VIEW_EPOCHS)
        config = dataclasses.replace(config, stage2=stage2)
    return config


def resolve_config(
    *,
    model: str = Model.MGCN_R,
    preset: str = Preset.DEMO,
    config: str | Path | None = None,
    device: str | None = None,
    epochs_scale: float | None = None,
    seed: int | None = None,
) -> TrainConfig:
    """The preset for ``model``, overridden by the YAML file ``config``, then by ``device``,
    ``epochs_scale`` and ``seed``. Bad choices -> AbdusInputError."""
    try:
        resolved = preset_config(preset, model)
        if config is not None:
            resolved = apply_config_file(resolved, config)
        if device is not None:
            resolved = dataclasses.replace(resolved, device=device)
        if seed is not None:
            resolved = dataclasses.replace(resolved, seed=int(seed))
        if epochs_scale is not None:
            resolved = scale_epochs(resolved, epochs_scale)
    except ValueError as err:
        if isinstance(err, AbdusInputError):
            raise
        raise AbdusInputError(str(err)) from None
    return resolved


__all__ = ["PRESETS", "RECIPE_AUGMENTATION", "preset_config", "resolve_config"]  # PRESETS: scripts
