"""Loading ImageNet weights in torchvision's ResNet key layout from a local file."""

from __future__ import annotations

import pytest
import torch

from abdus.errors import AbdusInputError
from abdus.models import build_model, load_imagenet_weights

WIDTHS = (8, 16, 32, 64)
LAYERS = {"resnet18": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3)}


def _bn(prefix: str, channels: int) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": torch.randn(channels),
        f"{prefix}.bias": torch.randn(channels),
        f"{prefix}.running_mean": torch.randn(channels),
        f"{prefix}.running_var": torch.rand(channels) + 0.5,
        f"{prefix}.num_batches_tracked": torch.tensor(7),
    }


def torchvision_state_dict(depth: str, widths=WIDTHS) -> dict[str, torch.Tensor]:
    """Random weights with exactly torchvision's ResNet key names and shapes (RGB, 1000 classes),
    written from torchvision's layout (BasicBlock: conv1/conv2, Bottleneck: conv1-3 with the
    stride on conv2, projection shortcut ``downsample.0`` / ``.1``)."""
    torch.manual_seed(0)
    bottleneck = depth == "resnet50"
    expansion = 4 if bottleneck else 1
    sd = {"conv1.weight": torch.randn(widths[0], 3, 7, 7), **_bn("bn1", widths[0])}
    in_ch = widths[0]
    for stage, (width, blocks) in enumerate(zip(widths, LAYERS[depth], strict=True), start=1):
        out_ch = width * expansion
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            if bottleneck:
                shapes = [(width, in_ch, 1, 1), (width, width, 3, 3), (out_ch, width, 1, 1)]
            else:
                shapes = [(width, in_ch, 3, 3), (width, width, 3, 3)]
            for i, shape in enumerate(shapes, start=1):
                sd[f"{p}.conv{i}.weight"] = torch.randn(shape)
                sd |= _bn(f"{p}.bn{i}", shape[0])
            if b == 0 and (stage > 1 or in_ch != out_ch):
                sd[f"{p}.downsample.0.weight"] = torch.randn(out_ch, in_ch, 1, 1)
                sd |= _bn(f"{p}.downsample.1", out_ch)
            in_ch = out_ch
    sd["fc.weight"] = torch.randn(1000, in_ch)
    sd["fc.bias"] = torch.randn(1000)
    return sd


@pytest.mark.parametrize("depth", ["resnet18", "resnet50"])
def test_stl_loads_every_encoder_weight(tmp_path, depth):
    source = torchvision_state_dict(depth)
    path = tmp_path / "resnet.pth"
    torch.save(source, path)
    model = build_model("stl", depth=depth, widths=WIDTHS)
    fc_before = model.head.fc.weight.clone()
    counts = load_imagenet_weights(model, path)
    assert counts == {"loaded": len(source) - 2, "skipped": 2}  # fc.weight, fc.bias skipped
    target = model.state_dict()
    grey = source["conv1.weight"].sum(dim=1, keepdim=True)  # RGB kernel summed to 1 channel
    torch.testing.assert_close(target["encoder.conv1.weight"], grey)
    for key, value in source.items():
        if key != "conv1.weight" and not key.startswith("fc."):
            torch.testing.assert_close(target[f"encoder.{key}"], value, msg=key)
    torch.testing.assert_close(model.head.fc.weight, fc_before)  # 11-way head untouched


def test_multitask_model_gets_stages_3_4_in_both_copies(tmp_path):
    source = torchvision_state_dict("resnet50")
    path = tmp_path / "resnet.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.items()}}, path)  # wrapped
    model = build_model("mgcn_r", depth="resnet50", widths=WIDTHS)
    load_imagenet_weights(model, path)
    target = model.state_dict()
    torch.testing.assert_close(
        target["shared.layer2.0.conv2.weight"], source["layer2.0.conv2.weight"]
    )
    for copy in ("landmark_stages", "view_stages"):
        torch.testing.assert_close(
            target[f"{copy}.layer4.2.bn3.running_var"], source["layer4.2.bn3.running_var"]
        )
    model(torch.rand(1, 1, 64, 64))  # still runs


def test_sfcn_gets_weights_in_every_task_network(tmp_path):
    source = torchvision_state_dict("resnet18")
    path = tmp_path / "resnet.pth"
    torch.save(source, path)
    model = build_model("sfcn", depth="resnet18", widths=WIDTHS)
    load_imagenet_weights(model, path)
    for net in model.nets.values():
        torch.testing.assert_close(
            net.encoder.layer3[1].conv2.weight, source["layer3.1.conv2.weight"]
        )


def test_bad_weight_files_name_the_file(tmp_path):
    model = build_model("stl", depth="resnet18", widths=WIDTHS)
    missing = tmp_path / "absent.pth"
    with pytest.raises(AbdusInputError, match=r"absent\.pth.*not found"):
        load_imagenet_weights(model, missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(AbdusInputError, match=r"garbage\.pth"):
        load_imagenet_weights(model, garbage)
    other = tmp_path / "wide.pth"
    torch.save(torchvision_state_dict("resnet18", widths=(16, 32, 64, 128)), other)
    with pytest.raises(AbdusInputError, match=r"wide\.pth.*shape"):
        load_imagenet_weights(model, other)
    partial = tmp_path / "partial.pth"
    sd = torchvision_state_dict("resnet18")
    del sd["layer4.1.conv2.weight"]
    torch.save(sd, partial)
    with pytest.raises(AbdusInputError, match=r"partial\.pth.*missing"):
        load_imagenet_weights(model, partial)
