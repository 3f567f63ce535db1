"""Presets, YAML overrides and their errors, the saved config, run-time settings."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from abdus.choices import PRESETS, AmpMode, Schedule
from abdus.errors import AbdusInputError
from abdus.losses import LossWeights
from abdus.models import DiscriminatorConfig, ModelConfig
from abdus.training.config import (
    StageConfig,
    TrainConfig,
    apply_config_file,
    apply_overrides,
    load_config,
    save_config,
    scale_epochs,
)
from abdus.training.presets import preset_config, resolve_config
from abdus.training.runtime import (
    configure_determinism,
    cpu_has_bf16,
    deterministic_mode_restored,
    memory_format,
    resolve_amp,
)

CPU = torch.device("cpu")


def test_paper_preset_is_section_2_2():
    c = preset_config("paper")
    assert c.model == "mgcn_r" and c.model_options.depth == "resnet50"
    assert (c.preprocess.spacing_mm, c.preprocess.size) == (0.5, (512, 512))
    assert (c.stage1.batch_size, c.stage1.epochs) == (4, 30)
    assert (c.stage1.optimizer.name, c.stage1.optimizer.lr) == ("sgd", 1e-6)
    assert c.stage1.optimizer.momentum == 0.9
    assert (c.discriminator.name, c.discriminator.lr, c.discriminator.betas) == (
        "adam",
        2e-4,
        (0.5, 0.999),
    )
    assert (c.stage2.batch_size, c.stage2.epochs) == (8, 5)
    assert (c.stage2.optimizer.name, c.stage2.optimizer.lr) == ("adam", 5e-4)
    assert c.loss.reduction == "mean"  # Eq. 2: lr 1e-6 trains; with "sum" it diverges
    assert (c.loss.regression, c.loss.location, c.loss.adversarial) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("preset", PRESETS)
def test_ablation_variants_train_with_l2_only(preset):
    proposed = preset_config(preset, "mgcn_r").loss
    for model in ("mgcn", "mfcn", "sfcn"):
        loss = preset_config(preset, model).loss
        assert (loss.regression, loss.location, loss.adversarial) == (proposed.regression, 0, 0)
    assert proposed.adversarial > 0 and proposed.location > 0


def test_unknown_preset_and_model_name_the_valid_ones():
    with pytest.raises(ValueError, match="tiny, demo, paper"):
        preset_config("huge")
    with pytest.raises(ValueError, match="mgcn_r, mgcn, mfcn, sfcn, stl"):
        preset_config("tiny", "unet")
    with pytest.raises(AbdusInputError, match="valid presets"):
        resolve_config(preset="huge")


def test_yaml_overrides_nested_fields_and_keeps_the_rest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "stage1:\n  epochs: 7\n  optimizer: {name: sgd, lr: 1e-4}\n"  # YAML reads 1e-4 as text
        "preprocess: {size: [96, 128]}\nmodel_options: {widths: [4, 8, 16, 32]}\namp: 'off'\n"
    )
    base = preset_config("tiny")
    c = apply_config_file(base, path)
    assert c.stage1.epochs == 7 and c.stage1.batch_size == base.stage1.batch_size
    assert (c.stage1.optimizer.name, c.stage1.optimizer.lr) == ("sgd", 1e-4)
    assert c.preprocess.size == (96, 128) and c.preprocess.spacing_mm == 4.0
    assert c.model_options.widths == (4, 8, 16, 32)
    assert c.model_options.depth == "resnet18"  # merged, not replaced
    assert c.amp == "off" and c.stage2 == base.stage2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stage1: {epoch: 3}", "unknown config key 'stage1.epoch'; valid keys: epochs, batch_size"),
        ("learning_rate: 0.1", "valid keys: model, model_options"),
        ("stage1: {epochs: three}", "stage1.epochs must be an integer"),
        ("amp: fp8", "unknown amp mode 'fp8'; valid amp modes: auto, bf16, fp16, off"),
        ("amp: off", "amp must be a string, got False (quote it"),
        ("stage2: {optimizer: {name: lion}}", "stage2.optimizer: unknown optimizer 'lion'; valid"),
        ("stage1: {schedule: step}", "valid schedules: constant, cosine"),
        ("view_init: copy", "valid view_inits: scratch, landmark"),
        ("loss: {reduction: avg}", "loss: unknown reduction 'avg'; valid reductions: sum, mean"),
        ("loss: {coordinate: 1}", "'loss.coordinate'; valid keys: regression, location"),
        ("model_options: {dpth: 3}", "'model_options.dpth'; valid keys: depth, widths, gcn_k"),
        ("model_options: {depth: resnet101}", "model_options: unknown depth 'resnet101'; valid"),
        ("model_options: {widths: [8, 16]}", "model_options.widths must be a list of 4 values"),
        ("model_options: {gcn_k: seven}", "model_options.gcn_k must be an integer"),
        ("model_options: {task: kidney_long}", "model_options.task is only valid for sfcn"),
        ("discriminator_options: {norm: group}", "discriminator_options: unknown norm 'group'"),
        ("discriminator_options: {depth: 3}", "valid keys: width, n_layers, norm, in_channels"),
        ("model: pbt", "the pbt baseline is not a network"),
        ("preprocess: {size: [64]}", "preprocess.size must be a list of 2 values"),
        ("- just a list", "must be a YAML mapping"),
        ("stage1: [unclosed", "cannot read YAML"),
    ],
)
def test_bad_yaml_gives_one_line_errors_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(AbdusInputError) as caught:
        apply_config_file(preset_config("tiny"), path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(AbdusInputError, match="config file not found"):
        resolve_config(preset="tiny", config=tmp_path / "nope.yaml")


def test_saved_config_reads_back_equal(tmp_path):
    for preset in PRESETS:
        config = apply_overrides(preset_config(preset, "sfcn"), {"cache_dir": "/x", "seed": 9})
        save_config(config, tmp_path / "config.yaml")
        assert load_config(tmp_path / "config.yaml") == config
        assert TrainConfig.from_dict(config.to_dict()) == config


def test_epochs_scale_and_device_override():
    c = resolve_config(preset="paper", device="cpu", epochs_scale=0.1)
    assert (c.stage1.epochs, c.stage2.epochs, c.device) == (3, 1, "cpu")  # 0.5 rounds up to 1
    zero = dataclasses.replace(c, stage1=dataclasses.replace(c.stage1, epochs=0))
    assert scale_epochs(zero, 3.0).stage1.epochs == 0  # a skipped stage stays skipped
    with pytest.raises(ValueError, match="epochs_scale"):
        scale_epochs(c, 0.0)


def test_amp_resolution_on_the_cpu():
    assert resolve_amp("off", CPU) is None
    assert resolve_amp("auto", CPU) is None  # float32 on the CPU (runtime docstring)
    with pytest.warns(UserWarning, match="fp16 needs CUDA|'fp16' needs CUDA"):
        assert resolve_amp("fp16", CPU) is None
    if cpu_has_bf16():
        assert resolve_amp("bf16", CPU) == torch.bfloat16
    else:
        with pytest.warns(UserWarning, match="no native bf16"):
            assert resolve_amp("bf16", CPU) is None


def test_deterministic_mode_does_not_fill_new_tensors_and_is_restored():
    """Training's deterministic mode leaves new tensors unfilled (torch's NaN fill only catches
    reads of unwritten memory); the context manager gives back torch's settings as they were."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    with deterministic_mode_restored():
        configure_determinism(True, torch.device("cpu"))
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False
    after = (
        torch.are_deterministic_algorithms_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    assert after == before


def test_channels_last_is_the_configs_choice_on_every_device():
    assert memory_format(True) == torch.channels_last
    assert memory_format(False) == torch.contiguous_format


def test_cpu_training_in_channels_last_survives_odd_batches(tmp_path):
    # In a child process: PyTorch 2.13's channels-last CPU backward of a 1x1 stride-2
    # convolution corrupted memory (double free / segmentation fault) at odd batch sizes
    # instead of raising; models.encoder.StridedPointwiseConv avoids that kernel. The whole
    # MGCN_R (landmark and view paths) and the PatchGAN, forward and backward.
    script = tmp_path / "odd_batch.py"
    script.write_text(
        "import torch\n"
        "from abdus.models import build_model, build_discriminator\n"
        "fmt = torch.channels_last\n"
        "torch.manual_seed(0)\n"
        "opts = dict(depth='resnet18', widths=(8, 16, 32, 64), gcn_k=7, classifier_hidden=32)\n"
        "model = build_model('mgcn_r', **opts).train().to(memory_format=fmt)\n"
        "D = build_discriminator(width=8).train().to(memory_format=fmt)\n"
        "for batch in (1, 3, 5, 7, 9, 15):\n"
        "    x = torch.rand(batch, 1, 64, 64).to(memory_format=fmt)\n"
        "    out = model(x)\n"
        "    pair = torch.cat([x, out['heatmaps']], 1).contiguous(memory_format=fmt)\n"
        "    loss = out['heatmaps'].pow(2).mean() + out['logits'].pow(2).mean()\n"
        "    (loss + D(pair).mean()).backward()\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-500:]


# ------------------------------------------------------------------ typed sections, old files
OLD_CONFIG = Path(__file__).parent / "data" / "untyped_options_config.yaml"


def test_config_of_a_run_written_before_the_options_were_typed_still_loads():
    old = load_config(OLD_CONFIG)  # model_options / discriminator_options held set keys only
    assert old.model_options == ModelConfig("resnet18", (8, 16, 32, 64), 7, 32)
    assert old.discriminator_options == DiscriminatorConfig(width=8)
    assert old == dataclasses.replace(preset_config("tiny"), device="cpu")
    data = yaml.safe_load(OLD_CONFIG.read_text())
    del data["val_fraction"]  # abdus 0.1 runs: no validation split
    assert TrainConfig.from_dict(data).val_fraction == 0.0


def test_saved_config_holds_plain_values_only(tmp_path):
    config = preset_config("paper", "sfcn")
    config = apply_overrides(config, {"model_options": {"task": "kidney_long"}, "amp": "bf16"})
    assert type(config.amp) is str and type(config.stage1.optimizer.name) is str
    data = config.to_dict()
    torch.save(data, tmp_path / "c.pt")  # as in every checkpoint: enums would not load back
    assert torch.load(tmp_path / "c.pt", weights_only=True) == data
    assert TrainConfig.from_dict(data) == config
    assert data["model_options"]["widths"] == [64, 128, 256, 512]  # the resolved options


def test_choice_fields_keep_plain_strings_and_sections_their_types():
    config = TrainConfig(amp=AmpMode.BF16, stage1=StageConfig(schedule=Schedule.COSINE))
    assert type(config.amp) is str and config.amp == "bf16"
    assert type(config.stage1.schedule) is str
    with pytest.raises(TypeError, match="model_options must be a ModelConfig"):
        TrainConfig(model_options={"depth": "resnet18"})
    with pytest.raises(TypeError, match="loss must be a LossConfig"):
        TrainConfig(loss=LossWeights())


def _keys(section, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(value):
            keys += _keys(value, f"{prefix}{f.name}.")
    return keys


def test_every_config_key_is_documented():
    text = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    missing = [key for key in _keys(TrainConfig()) if f"`{key.rsplit('.', 1)[-1]}`" not in text]
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_demo_recipe_trains_the_shared_stages_on_views_then_refits_the_landmark_path():
    c = preset_config("demo")
    assert (c.stage1.epochs, c.stage2.epochs, c.stage3.epochs) == (12, 14, 4)
    assert c.view_stage_trains_shared and c.discriminator_every == 4
    # the CPU's fast path: NHWC, the images on the device, the PatchGAN at half the input size
    assert c.channels_last and c.data_on_device == "on"
    assert c.discriminator_options.downsample == 2
    assert c.model_options.last_refine == "half"  # the demo's; the paper refines at full size:
    assert preset_config("paper").model_options.last_refine == "full"
    assert c.model_options.classifier_dropout == 0.1  # the view head learns in its 14 epochs
    assert (c.stage3.optimizer.name, c.stage3.optimizer.lr, c.stage3.schedule) == (
        "adamw", 5e-4, "cosine",
    )  # fmt: skip
    stl = preset_config("demo", "stl")  # from scratch on the views alone: 14 epochs
    assert stl.stage2 == dataclasses.replace(c.stage2, epochs=14)
    for model in ("mgcn", "mfcn", "sfcn"):  # the ablation's landmark stage is the demo's
        assert preset_config("demo", model).stage1 == c.stage1
    recipe = Path(__file__).parents[2] / "scripts" / "paper_recipe.yaml"
    scaled = resolve_config(preset="paper", config=recipe)  # the demo's recipe at paper scale
    assert scaled.model_options.depth == "resnet50" and scaled.preprocess.size == (512, 512)
    for key in ("heatmap_amplitude", "loss", "view_init", "view_stage_trains_shared", "augment"):
        assert getattr(scaled, key) == getattr(c, key), key
    # the refit as the demo's, its epochs the paper recipe's own (sized for its cohorts)
    assert dataclasses.replace(scaled.stage3, epochs=c.stage3.epochs) == c.stage3
    assert scaled.stage3.epochs == 5 and scaled.augmentation == c.augmentation
    tiny, paper = preset_config("tiny"), preset_config("paper")  # fast tests; as published
    for other in (tiny, paper):
        assert not other.view_stage_trains_shared and other.stage3.epochs == 0
        assert other.discriminator_every == 1
