"""The PatchGAN discriminator and the absent-landmark masking."""

from __future__ import annotations

import pytest
import torch

from abdus.models import (
    DiscriminatorConfig,
    build_discriminator,
    discriminator_input,
    mask_absent,
    receptive_field,
)
from abdus.taxonomy import NUM_LANDMARKS


def test_pix2pix_70x70_output_size():
    """pix2pix's 70x70 PatchGAN maps a 256 x 256 input to a 30 x 30 logit map."""
    assert receptive_field(3) == 70
    disc = build_discriminator(width=8)  # width does not change the geometry
    out = disc(torch.rand(2, 1 + NUM_LANDMARKS, 256, 256))
    assert out.shape == (2, 1, 30, 30)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("downsample", [1, 2])
def test_the_input_takes_the_memory_format_of_the_weights(downsample):
    """A channels-last PatchGAN turns its input channels-last before the pooling and the first
    convolution; a contiguous one leaves it alone. The logits and the input's gradient are the
    contiguous network's."""
    torch.manual_seed(0)
    plain = build_discriminator(width=4, downsample=downsample)
    fast = build_discriminator(width=4, downsample=downsample)
    fast.load_state_dict(plain.state_dict())
    fast.to(memory_format=torch.channels_last)
    seen = []
    hook = fast.model[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    results = []
    for disc in (plain, fast):
        x = torch.rand(2, 1 + NUM_LANDMARKS, 64, 64, generator=torch.Generator().manual_seed(1))
        x.requires_grad_()
        out = disc(x)
        out.sum().backward()
        results.append((out.detach(), x.grad))
    hook.remove()
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)
    assert "_first_conv_index" not in "".join(plain.state_dict())  # model files unchanged


def test_default_widths_are_c64_c128_c256_c512():
    disc = build_discriminator()
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert convs[0].in_channels == 1 + NUM_LANDMARKS
    assert all(c.kernel_size == (4, 4) for c in convs)


@pytest.mark.parametrize("n_layers", [1, 3])
def test_measured_receptive_field_matches(n_layers):
    """The input pixels one logit depends on span exactly receptive_field(n) pixels."""
    torch.manual_seed(0)
    disc = build_discriminator(width=4, n_layers=n_layers, in_channels=1).eval()
    x = torch.rand(1, 1, 128, 128, requires_grad=True)
    out = disc(x)
    h, w = out.shape[-2:]
    out[0, 0, h // 2, w // 2].backward()
    rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
    extent = (int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1))
    assert extent == (receptive_field(n_layers),) * 2


def test_downsample_judges_the_pair_average_pooled():
    """``downsample`` 2: D is the same PatchGAN applied to the 2x2-averaged pair (a quarter of
    the pixels, half the logit map's side); 1 keeps pix2pix's layers and state-dict keys."""
    torch.manual_seed(0)
    full = build_discriminator(width=4).eval()
    half = build_discriminator(width=4, downsample=2).eval()
    assert next(iter(full.state_dict())) == "model.0.weight"  # the first conv, as before
    assert isinstance(half.model[0], torch.nn.AvgPool2d)
    for mine, theirs in zip(half.state_dict().values(), full.state_dict().values(), strict=True):
        mine.copy_(theirs)
    x = torch.rand(2, 1 + NUM_LANDMARKS, 128, 128)
    torch.testing.assert_close(half(x), full(torch.nn.functional.avg_pool2d(x, 2)))
    assert full(x).shape == (2, 1, 14, 14) and half(x).shape == (2, 1, 6, 6)
    assert DiscriminatorConfig.from_dict({"downsample": 2}).downsample == 2
    with pytest.raises(ValueError, match="downsample must be >= 1"):
        DiscriminatorConfig(downsample=0)


def test_instance_norm_option_and_config_errors():
    disc = build_discriminator(width=4, norm="instance")
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in disc.modules())
    assert disc(torch.rand(1, 15, 64, 64)).shape == (1, 1, 6, 6)
    with pytest.raises(ValueError, match="batch, instance"):
        build_discriminator(norm="layer")
    with pytest.raises(ValueError, match="valid"):
        build_discriminator(depth=3)
    assert DiscriminatorConfig.from_dict(disc.config.to_dict()) == disc.config


def test_mask_absent_zeroes_only_absent_channels():
    heat = torch.rand(2, NUM_LANDMARKS, 8, 8) + 0.1
    mask = torch.zeros(2, NUM_LANDMARKS)
    mask[0, :2] = 1
    mask[1, 5] = 1
    out = mask_absent(heat, mask)
    torch.testing.assert_close(out[0, :2], heat[0, :2])
    torch.testing.assert_close(out[1, 5], heat[1, 5])
    assert torch.count_nonzero(out) == 3 * 64
    both = discriminator_input(torch.ones(2, 1, 8, 8), heat, mask.bool())
    assert both.shape == (2, 1 + NUM_LANDMARKS, 8, 8)
    assert torch.equal(both[:, 0], torch.ones(2, 8, 8))
    with pytest.raises(ValueError, match="does not match"):
        mask_absent(heat, mask[:, :13])
