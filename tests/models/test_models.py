"""The networks: shapes, gradients, parameter groups, configs, sizes and errors."""

from __future__ import annotations

import json

import pytest
import torch

from abdus.losses import LossWeights, joint_losses
from abdus.models import (
    VARIANTS,
    ModelConfig,
    build_discriminator,
    build_model,
    build_model_from_descriptor,
    count_parameters,
    model_descriptor,
    model_size_mb,
)
from abdus.models.decoder import LandmarkDecoder
from abdus.models.encoder import StridedPointwiseConv
from abdus.models.gcn import BoundaryRefinement, GlobalConvolution
from abdus.taxonomy import LANDMARK_INDEX, NUM_LANDMARKS, NUM_VIEWS, TASK_BY_NAME

HAS_LOGITS = {"mgcn_r", "stl"}
HAS_HEATMAPS = {"mgcn_r", "mgcn", "mfcn", "sfcn"}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", [(64, 64), (32, 96)])
def test_output_shapes_and_finite(variant, size, tiny):
    torch.manual_seed(0)
    model = build_model(variant, **tiny).eval()
    x = torch.rand(2, 1, *size)
    with torch.no_grad():
        out = model(x)
    assert set(out) == ({"logits"} if variant in HAS_LOGITS else set()) | (
        {"heatmaps"} if variant in HAS_HEATMAPS else set()
    )
    if "logits" in out:
        assert out["logits"].shape == (2, NUM_VIEWS)
    if "heatmaps" in out:
        assert out["heatmaps"].shape == (2, NUM_LANDMARKS, *size)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert model.variant == variant


def test_depth50_forward_of_the_proposed_model():
    torch.manual_seed(0)
    model = build_model("mgcn_r").eval()  # the paper's ResNet50, default widths
    with torch.no_grad():
        out = model(torch.rand(1, 1, 64, 64))
    assert out["heatmaps"].shape == (1, NUM_LANDMARKS, 64, 64)
    assert out["logits"].shape == (1, NUM_VIEWS)
    assert torch.isfinite(out["heatmaps"]).all() and torch.isfinite(out["logits"]).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_gets_a_finite_nonzero_gradient(variant, tiny, batch):
    torch.manual_seed(0)
    model = build_model(variant, **tiny).train()
    has_d = variant == "mgcn_r"  # the proposed system trains with the adversarial term
    discriminator = build_discriminator(width=8) if has_d else None
    weights = LossWeights(adversarial=1.0 if has_d else 0.0)
    outputs = model(batch["image"])
    if "heatmaps" not in outputs:  # stl: view loss only
        outputs = {**outputs, "heatmaps": torch.zeros_like(batch["heatmaps"])}
        weights = LossWeights(0.0, 0.0, 0.0, 1.0)
    losses = joint_losses(outputs, batch, weights, discriminator)
    losses["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    if discriminator is not None:  # the generator term reaches D too (trainer steps only G)
        assert all(p.grad is not None for p in discriminator.parameters())


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_groups_partition_the_model(variant, tiny):
    model = build_model(variant, **tiny)
    groups = [model.shared_parameters(), model.landmark_parameters()]
    groups.append(model.classifier_parameters())
    ids = [{id(p) for p in g} for g in groups]
    assert sum(len(g) for g in ids) == len({i for g in ids for i in g})  # disjoint
    assert set().union(*ids) == {id(p) for p in model.parameters()}  # complete
    if variant == "stl":
        assert not ids[0] and not ids[1]
    elif variant == "mgcn_r":
        assert all(ids)
        head = {id(p) for p in model.view_head.parameters()}
        assert head <= ids[2]
    else:
        assert ids[0] and ids[1] and not ids[2]


def test_mgcn_r_task_methods_match_forward(tiny):
    torch.manual_seed(0)
    model = build_model("mgcn_r", **tiny).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(model.forward_landmarks(x), out["heatmaps"])
        torch.testing.assert_close(model.forward_view(x), out["logits"])
    with pytest.raises(RuntimeError, match="no view classifier"):
        build_model("mgcn", **tiny).forward_view(x)


def test_view_path_does_not_touch_the_landmark_path(tiny):
    """The classifier has its own stages 3-4: its loss gives no gradient to landmark stages."""
    model = build_model("mgcn_r", **tiny)
    model.forward_view(torch.rand(2, 1, 64, 64)).sum().backward()
    assert all(p.grad is None for p in model.landmark_parameters())
    assert all(p.grad is not None for p in model.shared_parameters())


def test_sfcn_places_each_task_in_taxonomy_channels(tiny):
    torch.manual_seed(0)
    model = build_model("sfcn", **tiny).eval()
    assert len(model.nets) == 5
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        full = model(x)["heatmaps"]
        for task, net in model.nets.items():
            channels = [LANDMARK_INDEX[lm] for lm in TASK_BY_NAME[task].landmarks]
            assert net(x).shape[1] == len(channels)
            torch.testing.assert_close(full[:, channels], net(x))


def test_sfcn_single_task_option(tiny):
    torch.manual_seed(0)
    model = build_model("sfcn", task="spleen_trans", **tiny).eval()
    assert list(model.nets) == ["spleen_trans"]
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        out = model(x)["heatmaps"]
        own = model.forward_task(x, "spleen_trans")
    channels = [LANDMARK_INDEX[lm] for lm in TASK_BY_NAME["spleen_trans"].landmarks]
    torch.testing.assert_close(out[:, channels], own)
    others = [c for c in range(NUM_LANDMARKS) if c not in channels]
    assert torch.count_nonzero(out[:, others]) == 0
    with pytest.raises(ValueError, match="not built"):
        model.forward_task(x, "kidney_long")


def test_gcn_and_fcn_decoders_differ_in_their_skips(tiny):
    mgcn, mfcn = build_model("mgcn", **tiny), build_model("mfcn", **tiny)
    assert any(isinstance(m, GlobalConvolution) for m in mgcn.decoder.modules())
    assert any(isinstance(m, BoundaryRefinement) for m in mgcn.decoder.modules())
    assert not any(
        isinstance(m, GlobalConvolution | BoundaryRefinement) for m in mfcn.decoder.modules()
    )
    assert sum(isinstance(m, GlobalConvolution) for m in mgcn.decoder.modules()) == 5  # skips
    assert sum(isinstance(m, BoundaryRefinement) for m in mgcn.decoder.modules()) == 10


def test_gcn_covers_a_k_by_k_field():
    """One output pixel of a GCN depends on a k x k input window (the separable branches)."""
    k = 7
    gcn = GlobalConvolution(1, 1, k)
    x = torch.zeros(1, 1, 21, 21, requires_grad=True)
    gcn(x)[0, 0, 10, 10].backward()
    rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (k, k)
    with pytest.raises(ValueError, match="odd"):
        GlobalConvolution(1, 1, 4)


def test_decoder_rejects_unknown_skip_kind():
    with pytest.raises(ValueError, match="gcn, conv1x1"):
        LandmarkDecoder([8, 8], 14, skip="deconv")
    with pytest.raises(ValueError, match="full, half"):
        LandmarkDecoder([8, 8], 14, last_refine="quarter")
    with pytest.raises(ValueError, match="last_refine"):
        ModelConfig(last_refine="quarter")


def test_last_refine_at_half_resolution(tiny):
    """``last_refine="half"``: the same parameters (a full-size checkpoint loads), the same
    output size, and the last BR runs on H/2 maps: its output is the bilinear upsample of a
    half-size map, so it differs from the full-size refinement of the same weights."""
    torch.manual_seed(0)
    full = build_model("mgcn_r", **tiny).eval()
    half = build_model("mgcn_r", **{**tiny, "last_refine": "half"}).eval()
    half.load_state_dict(full.state_dict())  # strict: same parameters
    x = torch.rand(2, 1, 64, 64)
    seen = []
    hook = half.decoder.refine[0].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        out_full, out_half = full(x)["heatmaps"], half(x)["heatmaps"]
    hook.remove()
    assert out_half.shape == out_full.shape == (2, NUM_LANDMARKS, 64, 64)
    assert seen == [(2, NUM_LANDMARKS, 32, 32)]
    assert not torch.allclose(out_full, out_half)
    assert ModelConfig.from_dict(model_descriptor(half)["config"]).last_refine == "half"


@pytest.mark.parametrize("last_refine", ["full", "half"])
def test_heatmaps_leave_in_the_standard_layout_from_a_channels_last_network(tiny, last_refine):
    """A channels-last network (the trainer's fast path) still returns (B, L, H, W) heat maps
    contiguous, as the targets are, with the values of the contiguous network."""
    torch.manual_seed(0)
    model = build_model("mgcn_r", **{**tiny, "last_refine": last_refine}).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        plain = model(x)["heatmaps"]
        model.to(memory_format=torch.channels_last)
        fast = model(x.contiguous(memory_format=torch.channels_last))["heatmaps"]
    assert plain.is_contiguous() and fast.is_contiguous()
    assert not fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, plain)


def test_parameter_counts_at_depth_50():
    # torchvision resnet50 has 25,557,032 parameters; minus its 1000-way fc (2,049,000) and
    # minus 2/3 of the RGB conv1 (6,272) = 23,501,760; plus an 11-way fc (22,539).
    stl = build_model("stl")
    assert count_parameters(stl) == 23_501_760 + 2048 * 11 + 11
    assert model_size_mb(stl) == pytest.approx(count_parameters(stl) * 4 / 2**20)
    # resnet18: 11,689,512 - 513,000 - 6,272 + 512 * 11 + 11
    assert count_parameters(build_model("stl", depth="resnet18")) == 11_175_883


def test_trainable_only_counts_unfrozen_parameters(tiny):
    model = build_model("mgcn_r", **tiny)
    for p in model.shared_parameters() + model.landmark_parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == sum(
        p.numel() for p in model.classifier_parameters()
    )


def test_config_round_trip_and_descriptor(tiny):
    model = build_model("mgcn_r", **tiny)
    assert isinstance(model.config, ModelConfig)
    descriptor = json.loads(json.dumps(model_descriptor(model)))
    assert ModelConfig.from_dict(descriptor["config"]) == model.config
    rebuilt = build_model_from_descriptor(descriptor)
    rebuilt.load_state_dict(model.state_dict())  # strict: same architecture
    assert rebuilt.variant == "mgcn_r"
    with pytest.raises(ValueError, match="valid"):
        ModelConfig.from_dict({**descriptor["config"], "colour": 3})


def test_build_model_errors(tiny):
    with pytest.raises(ValueError, match="mgcn_r, mgcn, mfcn, sfcn, stl"):
        build_model("unet")
    with pytest.raises(TypeError, match="valid options"):
        build_model("mgcn_r", width=3)
    with pytest.raises(ValueError, match="resnet18, resnet34, resnet50"):
        build_model("mgcn", depth="resnet101")
    with pytest.raises(ValueError, match="odd"):
        build_model("mgcn", gcn_k=4)
    with pytest.raises(ValueError, match="widths"):
        build_model("mfcn", widths=(8, 16, 32))
    with pytest.raises(ValueError, match="only valid for sfcn"):
        build_model("mgcn_r", task="kidney_long")
    with pytest.raises(ValueError, match="valid tasks"):
        build_model("sfcn", task="heart")


def test_input_size_must_be_divisible_by_32(tiny):
    model = build_model("mfcn", **tiny)
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.rand(1, 1, 48, 64))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(torch.rand(1, 3, 64, 64))


def test_only_computes_one_output(tiny):
    model = build_model("mgcn_r", **tiny)
    x = torch.rand(2, 1, 64, 64)
    out = model(x, only="heatmaps")
    assert set(out) == {"heatmaps"}
    out["heatmaps"].sum().backward()
    assert all(p.grad is None for p in model.classifier_parameters())  # view path not run
    assert set(model(x, only="logits")) == {"logits"}
    with pytest.raises(ValueError, match="no output 'logits'"):
        build_model("mfcn", **tiny)(x, only="logits")
    with pytest.raises(ValueError, match="no output 'heatmaps'"):
        build_model("stl", **tiny)(x, only="heatmaps")


@pytest.mark.parametrize("channels_last", [False, True])
def test_strided_pointwise_conv_is_the_1x1_strided_conv(channels_last):
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(8, 16, kernel_size=1, stride=2, bias=False)
    ours = StridedPointwiseConv(8, 16, stride=2)
    ours.load_state_dict(plain.state_dict())  # the same key: model files load unchanged
    x = torch.randn(3, 8, 17, 16)  # an odd side: the last row is kept, as stride 2 keeps it
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    results = []
    for conv, inp in ((plain, x), (ours.to(memory_format=fmt), x.contiguous(memory_format=fmt))):
        inp = inp.clone().requires_grad_()
        out = conv(inp)
        out.pow(2).sum().backward()
        results.append((out.detach(), inp.grad, conv.weight.grad))
    if channels_last:  # the subsampling path: the same function, summed in another order
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(a, b)
    else:  # NCHW is the plain convolution: runs trained in it are unchanged bit for bit
        for a, b in zip(*results, strict=True):
            assert torch.equal(a, b)


def test_resnet_projection_shortcuts_use_the_strided_pointwise_conv(tiny):
    model = build_model("mgcn_r", **tiny)
    pointwise = [
        m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)
    ]
    strided = [m for m in pointwise if m.stride != (1, 1)]
    assert strided and all(isinstance(m, StridedPointwiseConv) for m in strided)
    assert any(isinstance(m, StridedPointwiseConv) and m.stride == (2, 2) for m in model.modules())
