"""The losses of paper section 2.2: masking, values, finiteness, weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from abdus.choices import Reduction
from abdus.data.heatmaps import HeatmapCodec
from abdus.losses import (
    LossConfig,
    LossWeights,
    _with_landmarks,
    coordinate_loss,
    discriminator_loss,
    generator_adversarial_loss,
    heatmap_l2_loss,
    joint_losses,
    landmark_losses,
    view_loss,
)
from abdus.models import build_discriminator
from abdus.taxonomy import NUM_LANDMARKS, NUM_VIEWS

L = NUM_LANDMARKS


class SpyDiscriminator(torch.nn.Module):
    """Records its inputs; one logit per pixel from a 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1 + L, 1, 1)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.conv(x)


def _mask(*present: list[int], batch: int | None = None) -> torch.Tensor:
    mask = torch.zeros(batch or len(present), L)
    for b, channels in enumerate(present):
        mask[b, channels] = 1.0
    return mask


# ----------------------------------------------------------------------------- regression
def test_l2_mean_is_the_papers_normalisation():
    torch.manual_seed(0)
    pred, target = torch.rand(2, L, 8, 4), torch.rand(2, L, 8, 4)
    mask = _mask([0, 3], [5])
    per_image = [
        ((pred[0, [0, 3]] - target[0, [0, 3]]) ** 2).sum() / (32 * 2),  # 1 / (N_I N_L')
        ((pred[1, [5]] - target[1, [5]]) ** 2).sum() / (32 * 1),
    ]
    expected = (per_image[0] + per_image[1]) / 2
    torch.testing.assert_close(heatmap_l2_loss(pred, target, mask), expected)
    torch.testing.assert_close(heatmap_l2_loss(pred, target, mask, "sum"), expected * 32)
    with pytest.raises(ValueError, match="sum, mean"):
        heatmap_l2_loss(pred, target, mask, "max")
    with pytest.raises(ValueError, match="does not match"):
        heatmap_l2_loss(pred, target, mask[:, :10])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_absent_landmarks_give_zero_loss_and_exactly_zero_gradient(reduction):
    torch.manual_seed(0)
    pred = torch.rand(2, L, 8, 8, requires_grad=True)
    target = torch.rand(2, L, 8, 8)
    mask = _mask([0, 1], [6, 7, 8, 9])
    loss = heatmap_l2_loss(pred, target, mask, reduction)
    loss.backward()
    absent = ~mask.bool()
    assert torch.all(pred.grad[absent] == 0)
    assert torch.all(pred.grad[mask.bool()].abs().sum(dim=(1, 2)) > 0)
    changed = pred.detach().clone()
    changed[absent] = 1e3  # a wild prediction on absent channels changes nothing
    assert heatmap_l2_loss(changed, target, mask, reduction) == loss.detach()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_l2_weighs_channel_sums_to_the_same_bits_as_weighing_pixels(reduction):
    """Each channel's sum is weighed by the mask instead of each pixel: the same loss and
    gradient to the last bit (trained models do not change)."""
    torch.manual_seed(0)
    pred = torch.randn(3, L, 16, 16, requires_grad=True)
    target = torch.rand(3, L, 16, 16)
    mask = _mask([0, 1], [6, 7, 8, 9], [2, 3, 4])
    loss = heatmap_l2_loss(pred, target, mask, reduction)
    (grad,) = torch.autograd.grad(loss, pred)
    weight = mask[:, :, None, None]
    per_image = ((pred - target).square() * weight).sum(dim=(2, 3)).sum(dim=1)
    scale = mask.sum(dim=1) * (16 * 16 if reduction == "mean" else 1)
    expected = (per_image / scale).sum() / 3
    (expected_grad,) = torch.autograd.grad(expected, pred)
    assert torch.equal(loss, expected) and torch.equal(grad, expected_grad)


def test_images_without_landmarks_contribute_zero():
    torch.manual_seed(0)
    pred = torch.rand(3, L, 8, 8, requires_grad=True)
    target = torch.rand(3, L, 8, 8)
    mask = _mask([0, 1], [], [2])
    both = heatmap_l2_loss(pred, target, mask)
    alone = heatmap_l2_loss(pred[[0, 2]], target[[0, 2]], mask[[0, 2]])
    torch.testing.assert_close(both, alone)  # not diluted by the landmark-free image
    both.backward()
    assert torch.all(pred.grad[1] == 0)
    empty = heatmap_l2_loss(pred, target, torch.zeros(3, L))
    assert empty == 0 and empty.requires_grad


# ----------------------------------------------------------------------------- location
def test_coordinate_loss_is_the_distance_in_model_pixels():
    codec = HeatmapCodec((32, 32), sigma_px=3.0)
    mask = torch.zeros(1, L, dtype=torch.bool)
    mask[0, :2] = True
    truth = torch.zeros(1, L, 2)
    truth[0, 0] = torch.tensor([10.0, 12.0])
    truth[0, 1] = torch.tensor([20.0, 8.0])
    heat = codec.encode_torch(truth, mask)
    assert coordinate_loss(heat, truth, mask) < 0.01  # integer centres: exact centroid
    shifted = truth.clone()
    shifted[0, 0] += torch.tensor([3.0, 4.0])  # 5 px off
    shifted[0, 1] += torch.tensor([0.0, 1.0])  # 1 px off
    torch.testing.assert_close(
        coordinate_loss(heat, shifted, mask), torch.tensor(3.0), atol=0.01, rtol=0
    )


def test_channel_weights_scale_each_landmarks_term():
    torch.manual_seed(0)
    pred, target = torch.rand(2, L, 8, 4), torch.rand(2, L, 8, 4)
    mask = _mask([0, 3], [5])
    weight = torch.ones(L)
    weight[3], weight[5] = 2.0, 0.5
    err = ((pred - target) ** 2).sum(dim=(2, 3))  # (B, L)
    expected = ((err[0, 0] + 2.0 * err[0, 3]) / (32 * 2) + 0.5 * err[1, 5] / 32) / 2
    torch.testing.assert_close(heatmap_l2_loss(pred, target, mask, "mean", weight), expected)
    torch.testing.assert_close(  # weights of 1: Eq. 2 as printed
        heatmap_l2_loss(pred, target, mask, "mean", torch.ones(L)),
        heatmap_l2_loss(pred, target, mask),
    )
    codec = HeatmapCodec((32, 32), sigma_px=3.0)
    truth = torch.tensor([[[10.0, 12.0], [20.0, 8.0]] + [[16.0, 16.0]] * (L - 2)])
    one = _mask([0, 1]).bool()
    heat = codec.encode_torch(truth, one)
    shifted = truth.clone()
    shifted[0, 0] += torch.tensor([3.0, 4.0])  # 5 px off, weight 2; landmark 1 exact
    weight = torch.ones(L)
    weight[0] = 2.0
    torch.testing.assert_close(
        coordinate_loss(heat, shifted, one, channel_weight=weight),
        torch.tensor(5.0),  # (2 * 5 + 1 * 0) / 2 landmarks
        atol=0.01,
        rtol=0,
    )
    with pytest.raises(ValueError, match="channel_weight shape"):
        heatmap_l2_loss(pred, target, mask, "mean", torch.ones(L - 1))


@pytest.mark.parametrize("fill", [0.0, 0.5])
def test_coordinate_loss_finite_on_flat_and_empty_maps(fill):
    pred = torch.full((2, L, 16, 16), fill, requires_grad=True)
    truth = torch.rand(2, L, 2) * 15
    truth[1, 3:] = float("nan")  # absent landmarks may carry NaN
    mask = _mask(list(range(L)), [0, 1, 2])
    loss = coordinate_loss(pred, truth, mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


def test_coordinate_loss_gradient_is_zero_on_absent_channels():
    torch.manual_seed(0)
    pred = torch.rand(1, L, 16, 16, requires_grad=True)
    truth = torch.rand(1, L, 2) * 15
    mask = _mask([4, 5])
    loss = coordinate_loss(pred, truth, mask)
    loss.backward()
    absent = [c for c in range(L) if c not in (4, 5)]
    assert torch.all(pred.grad[0, absent] == 0)
    assert pred.grad[0, [4, 5]].abs().sum() > 0
    changed = pred.detach().clone()
    changed[0, absent] = torch.rand(len(absent), 16, 16) * 50
    assert coordinate_loss(changed, truth, mask) == loss.detach()


# ----------------------------------------------------------------------------- adversarial
def test_discriminator_sees_absent_channels_as_zero_in_real_and_fake():
    torch.manual_seed(0)
    disc = SpyDiscriminator()
    image, real, fake = torch.rand(2, 1, 8, 8), torch.rand(2, L, 8, 8), torch.rand(2, L, 8, 8)
    mask = _mask([0, 1], [7])
    discriminator_loss(disc, image, real, fake, mask)
    generator_adversarial_loss(disc, image, fake, mask)
    assert len(disc.inputs) == 3
    for x in disc.inputs:
        torch.testing.assert_close(x[:, 0:1], image)
        assert torch.all(x[:, 1:][~mask.bool()] == 0)
        assert torch.all(x[:, 1:][mask.bool()] > 0)


def test_discriminator_gets_the_whole_batch_when_every_image_has_landmarks():
    """No image to leave out (the landmark stage): the filter hands D's inputs on uncopied, and
    the loss is the BCE of D's logits on the whole batch against "real"."""
    torch.manual_seed(0)
    disc = SpyDiscriminator()
    image, fake = torch.rand(2, 1, 8, 8), torch.rand(2, L, 8, 8)
    mask = _mask([0, 1], [7])
    loss = generator_adversarial_loss(disc, image, fake, mask)
    assert disc.inputs[0].shape[0] == 2
    kept = _with_landmarks(image, fake, mask=mask)
    assert kept[0] is image and kept[1] is fake  # no copy, no scatter in the backward
    logits = disc.conv(torch.cat([image, fake * mask[:, :, None, None]], dim=1))
    assert torch.equal(loss, F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)))


def test_discriminator_loss_targets_and_detach():
    torch.manual_seed(0)
    disc = SpyDiscriminator()
    image = torch.rand(2, 1, 8, 8)
    real = torch.rand(2, L, 8, 8)
    fake = torch.rand(2, L, 8, 8, requires_grad=True)
    mask = _mask([0], [1])
    parts = discriminator_loss(disc, image, real, fake, mask)
    real_logits = disc.conv(disc.inputs[0])
    fake_logits = disc.conv(disc.inputs[1])
    expected_real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    expected_fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    torch.testing.assert_close(parts["real"], expected_real)
    torch.testing.assert_close(parts["fake"], expected_fake)
    torch.testing.assert_close(parts["loss"], 0.5 * (expected_real + expected_fake))
    parts["loss"].backward()
    assert fake.grad is None  # D's step never reaches the network
    assert disc.conv.weight.grad.abs().sum() > 0


def test_generator_loss_is_bce_against_real_on_landmark_images():
    torch.manual_seed(0)
    disc = build_discriminator(width=4).eval()
    image = torch.rand(2, 1, 64, 64)
    fake = torch.rand(2, L, 64, 64, requires_grad=True)
    mask = _mask([0, 1, 2], [], batch=2)
    loss = generator_adversarial_loss(disc, image, fake, mask)
    logits = disc(torch.cat([image[:1], fake[:1].detach() * mask[:1, :, None, None]], dim=1))
    torch.testing.assert_close(loss, F.softplus(-logits).mean())  # BCE against "real"
    loss.backward()
    assert fake.grad[0, :3].abs().sum() > 0
    assert torch.all(fake.grad[0, 3:] == 0) and torch.all(fake.grad[1] == 0)
    none = generator_adversarial_loss(disc, image, fake, torch.zeros(2, L))
    assert none == 0 and none.requires_grad
    d_none = discriminator_loss(disc, image, fake, fake, torch.zeros(2, L))
    assert d_none["loss"] == 0 and d_none["loss"].requires_grad


# ----------------------------------------------------------------------------- view
def test_view_loss_uses_only_labelled_images():
    torch.manual_seed(0)
    logits = torch.randn(3, NUM_VIEWS, requires_grad=True)
    target = torch.tensor([1, 5, 10])
    has_view = torch.tensor([True, False, True])
    parts = view_loss(logits, target, has_view)
    torch.testing.assert_close(parts["loss"], F.cross_entropy(logits[[0, 2]], target[[0, 2]]))
    assert parts["view"] is parts["loss"]
    parts["loss"].backward()
    assert torch.all(logits.grad[1] == 0)
    torch.testing.assert_close(view_loss(logits, target)["loss"], F.cross_entropy(logits, target))
    none = view_loss(logits, target, torch.zeros(3, dtype=torch.bool))["loss"]
    assert none == 0 and none.requires_grad


# ----------------------------------------------------------------------------- composition
def test_total_is_the_weighted_sum_of_the_parts(make_batch):
    torch.manual_seed(0)
    batch = make_batch()
    pred = torch.rand_like(batch["heatmaps"], requires_grad=True)
    disc = build_discriminator(width=4)
    weights = LossWeights(regression=2.0, location=0.5, adversarial=3.0)
    parts = landmark_losses({"heatmaps": pred}, batch, weights, disc)
    assert set(parts) == {"loss", "regression", "location", "adversarial"}
    expected = 2.0 * parts["regression"] + 0.5 * parts["location"] + 3.0 * parts["adversarial"]
    torch.testing.assert_close(parts["loss"], expected)
    torch.testing.assert_close(
        parts["regression"], heatmap_l2_loss(pred, batch["heatmaps"], batch["landmark_mask"])
    )


def test_zero_weight_terms_are_not_computed(make_batch):
    batch = make_batch()
    pred = torch.rand_like(batch["heatmaps"], requires_grad=True)
    no_extras = {k: batch[k] for k in ("heatmaps", "landmark_mask")}  # no landmarks, no image
    weights = LossWeights(location=0.0, adversarial=0.0)
    parts = landmark_losses({"heatmaps": pred}, no_extras, weights)
    assert set(parts) == {"loss", "regression"}
    torch.testing.assert_close(parts["loss"], parts["regression"])
    off = landmark_losses({"heatmaps": pred}, no_extras, LossWeights(0.0, 0.0, 0.0, 0.0))
    assert set(off) == {"loss"} and off["loss"] == 0
    off["loss"].backward()  # still a valid graph
    assert torch.all(pred.grad == 0)
    with pytest.raises(ValueError, match="discriminator"):
        landmark_losses({"heatmaps": pred}, batch, LossWeights())


def test_joint_losses_add_the_weighted_view_term(make_batch):
    torch.manual_seed(0)
    batch = make_batch()
    outputs = {"heatmaps": torch.rand_like(batch["heatmaps"]), "logits": torch.randn(2, NUM_VIEWS)}
    weights = LossWeights(location=0.0, adversarial=0.0, view=0.25)
    parts = joint_losses(outputs, batch, weights)
    torch.testing.assert_close(parts["view"], F.cross_entropy(outputs["logits"], batch["view"]))
    torch.testing.assert_close(parts["loss"], parts["regression"] + 0.25 * parts["view"])
    without = joint_losses(outputs, batch, LossWeights(location=0.0, adversarial=0.0, view=0.0))
    assert "view" not in without


def test_loss_weights_validation():
    assert LossWeights() == LossWeights(1.0, 1.0, 1.0, 1.0)  # paper: equally weighted
    with pytest.raises(ValueError, match="location"):
        LossWeights(location=-1.0)
    with pytest.raises(ValueError, match="finite"):
        LossWeights(view=float("nan"))
    with pytest.raises(ValueError, match="valid"):
        LossWeights.from_dict({"coordinate": 1.0})
    assert LossWeights.from_dict(LossWeights(2, 0, 1, 3).to_dict()) == LossWeights(2, 0, 1, 3)


def test_loss_config_is_the_loss_weights_plus_how_terms_are_computed(make_batch):
    config = LossConfig(location=0.0, adversarial=0.0, reduction="sum", label_smoothing=0.1)
    assert isinstance(config, LossWeights)  # one set of weights, usable wherever they are
    batch = make_batch()
    pred = torch.rand_like(batch["heatmaps"])
    parts = landmark_losses({"heatmaps": pred}, batch, config, reduction=config.reduction)
    torch.testing.assert_close(
        parts["loss"], heatmap_l2_loss(pred, batch["heatmaps"], batch["landmark_mask"], "sum")
    )
    assert LossConfig.from_dict(config.to_dict()) == config
    assert type(LossConfig(reduction=Reduction.SUM).reduction) is str  # plain, as saved
    with pytest.raises(ValueError, match="valid reductions: sum, mean"):
        LossConfig(reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        LossConfig(label_smoothing=1.0)
    with pytest.raises(ValueError, match="loss weight view"):
        LossConfig(view=-1.0)
