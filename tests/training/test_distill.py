"""``abdus distill``: the teacher's targets, and a smaller student trained on a cohort."""

from __future__ import annotations

import json

import pytest
import torch

from abdus.errors import AbdusInputError
from abdus.modelfile import open_network
from abdus.models import ModelConfig, build_model
from abdus.training.distill import distill
from abdus.training.teacher import Teacher
from abdus.training.trainer import train

TINY = ModelConfig("resnet18", (8, 16, 32, 64), gcn_k=7, classifier_hidden=32)


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(2, 1, 64, 64, generator=g),
        "class_image": torch.rand(2, 1, 64, 64, generator=g),
        "heatmaps": torch.rand(2, 14, 64, 64, generator=g),
    }


def test_teacher_blends_heatmaps_and_adds_a_kl_term():
    torch.manual_seed(0)
    model = build_model("mgcn_r", TINY)
    batch = _batch()
    taught = model.eval().forward_landmarks(batch["image"]).detach()
    assert torch.equal(Teacher(model, alpha=0.0).heatmap_targets(batch, None)["heatmaps"],
                       batch["heatmaps"])  # fmt: skip
    full = Teacher(model, alpha=1.0).heatmap_targets(batch, None)["heatmaps"]
    assert torch.allclose(full, taught, atol=1e-6)
    half = Teacher(model, alpha=0.5).heatmap_targets(batch, None)["heatmaps"]
    assert torch.allclose(half, (batch["heatmaps"] + taught) / 2, atol=1e-6)
    assert all(not p.requires_grad for p in model.parameters())  # frozen

    teacher = Teacher(model, alpha=0.25, temperature=2.0)
    own = model.forward_view(batch["class_image"]).detach()
    label = torch.tensor(1.5)
    loss, term = teacher.view_loss(own.clone(), batch["class_image"], label, None)
    assert float(term) == pytest.approx(0.0, abs=1e-5)  # the teacher's own logits: no KL
    assert float(loss) == pytest.approx(0.75 * 1.5, abs=1e-5)
    other = (own + torch.randn_like(own)).requires_grad_(True)
    loss, term = teacher.view_loss(other, batch["class_image"], label, None)
    assert float(term.detach()) > 0
    loss.backward()
    assert other.grad is not None and other.grad.abs().sum() > 0


def test_distill_trains_a_smaller_student_on_the_teachers_split(
    tmp_path, cohort, cohort_cache, one_thread
):
    config = tmp_path / "teacher.yaml"
    config.write_text(f"stage1: {{epochs: 1}}\nstage2: {{epochs: 1}}\ncache_dir: {cohort_cache}\n")
    teacher = train(cohort, tmp_path / "teacher", preset="tiny", config=config)
    student = distill(teacher, cohort, tmp_path / "student", widths=(4, 8, 16, 32), alpha=0.5)
    big, small = open_network(teacher), open_network(student)
    assert small.config.model_options.widths == (4, 8, 16, 32)
    assert small.config.teacher == str((teacher / "model.pt").resolve())
    assert small.config.preprocess == big.config.preprocess
    assert (small.config.seed, small.config.test_fraction, small.config.val_fraction) == (
        big.config.seed, big.config.test_fraction, big.config.val_fraction,
    )  # fmt: skip
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(small.model) < count(big.model) / 2
    history = [json.loads(line) for line in (student / "metrics.jsonl").read_text().splitlines()]
    assert any("distill" in str(record) for record in history)  # the view stage's KL term
    with pytest.raises(AbdusInputError, match="must be smaller"):
        distill(teacher, cohort, tmp_path / "same", widths=(8, 16, 32, 64))
    assert not (tmp_path / "same").exists()
