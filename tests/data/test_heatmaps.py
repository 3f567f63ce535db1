"""Heat-map codec: the paper's thresholded mean, Gaussian targets and the decode round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abdus.data.heatmaps import HeatmapCodec, threshold_centroid


def _random_points(rng: np.random.Generator, n: int, H: int, W: int, margin: float) -> np.ndarray:
    """(n, 2) sub-pixel (x, y) at least ``margin`` px inside the outermost pixel centres."""
    x = rng.uniform(margin, W - 1 - margin, n)
    y = rng.uniform(margin, H - 1 - margin, n)
    return np.stack((x, y), axis=1)


# ----------------------------------------------------------------------- threshold_centroid
def test_threshold_centroid_exact_on_symmetric_target() -> None:
    codec = HeatmapCodec((40, 50), sigma_px=3.0)
    points = np.array([[20.0, 17.0], [10.5, 30.5]])  # integer and half-integer: symmetric area
    heat, _ = codec.encode(points)
    out = threshold_centroid(torch.from_numpy(heat)[None])[0].numpy()
    np.testing.assert_allclose(out, points, atol=1e-4)


def test_threshold_centroid_uses_only_pixels_above_threshold() -> None:
    heat = torch.zeros(1, 1, 9, 9)
    heat[0, 0, 4, 4] = 1.0
    heat[0, 0, 4, 5] = 0.8  # above 0.75 * peak: counted
    heat[0, 0, 0, 0] = 0.7  # below: ignored even though it is far away
    out = threshold_centroid(heat)[0, 0]
    assert out[0].item() == pytest.approx((4 * 1.0 + 5 * 0.8) / 1.8, abs=1e-6)
    assert out[1].item() == pytest.approx(4.0, abs=1e-6)


def test_threshold_centroid_gradient_only_through_selected_pixels() -> None:
    heat = torch.zeros(1, 1, 9, 9)
    heat[0, 0, 3:6, 3:6] = torch.tensor([[0.5, 0.8, 0.5], [0.8, 1.0, 0.9], [0.5, 0.8, 0.5]])
    heat.requires_grad_(True)
    threshold_centroid(heat)[..., 0].sum().backward()
    grad = heat.grad[0, 0]
    assert torch.isfinite(grad).all()
    selected = heat.detach()[0, 0] > 0.75
    assert (grad[~selected] == 0).all()
    assert (grad[selected] != 0).any()
    assert grad[4, 5] > 0  # more heat on the right pulls x to the right


@pytest.mark.parametrize("fill", [0.0, -1.0, 0.3])
def test_threshold_centroid_degenerate_channels_give_centre_without_nan(fill: float) -> None:
    heat = torch.full((2, 3, 16, 21), fill, requires_grad=True)
    out = threshold_centroid(heat)
    np.testing.assert_allclose(out.detach().numpy()[..., 0], 10.0, atol=1e-4)
    np.testing.assert_allclose(out.detach().numpy()[..., 1], 7.5, atol=1e-4)
    out.sum().backward()
    assert torch.isfinite(heat.grad).all()


def test_threshold_centroid_negative_background_is_ignored() -> None:
    heat = torch.full((1, 1, 20, 20), -5.0)
    heat[0, 0, 12, 7] = 2.0
    out = threshold_centroid(heat)[0, 0]
    assert out.tolist() == pytest.approx([7.0, 12.0])


def test_threshold_centroid_bfloat16_matches_float32() -> None:
    codec = HeatmapCodec((64, 64), sigma_px=3.0)
    heat, _ = codec.encode(np.array([[20.3, 40.7], [50.2, 9.9]]))
    ref = threshold_centroid(torch.from_numpy(heat)[None])
    half = threshold_centroid(torch.from_numpy(heat)[None].bfloat16().requires_grad_(True))
    assert half.dtype == torch.float32
    np.testing.assert_allclose(half.detach().numpy(), ref.numpy(), atol=0.15)


def test_threshold_centroid_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError, match="B, C, H, W"):
        threshold_centroid(torch.zeros(3, 8, 8))


# ----------------------------------------------------------------------------- encode
def test_encode_gaussian_amplitude_mask_and_absent_channels() -> None:
    codec = HeatmapCodec((30, 40), sigma_px=2.0)
    points = np.full((14, 2), np.nan)
    points[0] = (10.0, 5.0)
    points[1] = (12.25, 20.5)
    points[2] = (-3.0, 10.0)  # outside the canvas: masked, Gaussian still drawn (truncated)
    heat, mask = codec.encode(points)
    assert heat.shape == (14, 30, 40) and heat.dtype == np.float32
    assert mask[:3].tolist() == [True, True, False] and not mask[3:].any()
    assert heat[0, 5, 10] == pytest.approx(1.0)
    assert heat[0, 5, 12] == pytest.approx(np.exp(-4 / 8), rel=1e-5)
    assert heat[1].max() < 1.0  # sub-pixel centre: no sample sits on the peak
    assert heat[2, 10, 0] == pytest.approx(np.exp(-9 / 8), rel=1e-5)
    assert not heat[3:].any()


def test_encode_torch_matches_encode() -> None:
    codec = HeatmapCodec((24, 32), sigma_px=1.5)
    rng = np.random.default_rng(1)
    points = _random_points(rng, 14, 24, 32, 0.0)
    mask = np.ones(14, bool)
    mask[5] = False
    heat_np, _ = codec.encode(np.where(mask[:, None], points, np.nan))
    heat_t = codec.encode_torch(
        torch.from_numpy(points)[None].float(), torch.from_numpy(mask)[None]
    )
    np.testing.assert_allclose(heat_t[0].numpy(), heat_np, atol=1e-5)


def test_from_mm_and_validation() -> None:
    codec = HeatmapCodec.from_mm((128, 96), sigma_mm=4.0, spacing_mm=2.0)
    assert codec.size == (128, 96) and codec.sigma_px == pytest.approx(2.0)
    with pytest.raises(ValueError, match="sigma_px"):
        HeatmapCodec((10, 10), sigma_px=0.0)
    with pytest.raises(ValueError, match="threshold"):
        HeatmapCodec((10, 10), sigma_px=1.0, threshold=1.5)
    with pytest.raises(ValueError, match="spacing_mm"):
        HeatmapCodec.from_mm((10, 10), 2.0, 0.0)


# ----------------------------------------------------------------------------- decode
@pytest.mark.parametrize("sigma", [1.5, 3.0, 6.0])
def test_round_trip_interior_sub_pixel(sigma: float) -> None:
    codec = HeatmapCodec((64, 80), sigma_px=sigma)
    rng = np.random.default_rng(int(sigma * 10))
    for _ in range(5):
        points = _random_points(rng, 14, 64, 80, 1.0)
        heat, _ = codec.encode(points)
        decoded, confidence = codec.decode(heat)
        assert np.abs(decoded - points).max() < 0.1
        assert (confidence > 0.8).all() and (confidence <= 1.0).all()


@pytest.mark.parametrize("sigma", [1.5, 3.0, 6.0])
def test_round_trip_near_borders_and_corners(sigma: float) -> None:
    H, W = 48, 56
    codec = HeatmapCodec((H, W), sigma_px=sigma)
    inset = np.array([1.0, 1.3, 1.5, 1.8, 2.0])
    points = np.concatenate(
        [
            np.stack((inset, np.full(5, 20.4)), 1),  # left edge
            np.stack((W - 1 - inset, np.full(5, 30.6)), 1),  # right edge
            np.stack((np.full(5, 17.7), inset), 1),  # top edge
            np.stack((np.full(5, 33.2), H - 1 - inset), 1),  # bottom edge
            np.stack((inset, H - 1 - inset), 1),  # bottom-left corner
        ]
    )
    heat, mask = codec.encode(points)
    assert mask.all()
    decoded, _ = codec.decode(heat)
    assert np.abs(decoded - points).max() < 0.1
    # The paper's thresholded mean alone is pulled inward there: the refinement is needed.
    raw = threshold_centroid(torch.from_numpy(heat)[None])[0].numpy()
    assert np.abs(raw - points).max() > 0.1


def test_decode_torch_batch_shapes_and_bfloat16() -> None:
    codec = HeatmapCodec((32, 32), sigma_px=2.0)
    rng = np.random.default_rng(3)
    points = np.stack([_random_points(rng, 14, 32, 32, 2.0) for _ in range(3)])  # (3, 14, 2)
    heat = codec.encode_torch(torch.from_numpy(points).float(), torch.ones(3, 14, dtype=bool))
    decoded, confidence = codec.decode(heat.bfloat16())
    assert isinstance(decoded, torch.Tensor) and decoded.shape == (3, 14, 2)
    assert confidence.shape == (3, 14)
    assert np.abs(decoded.numpy() - points).max() < 0.25  # bf16 heat quantisation


def test_decode_two_blobs_falls_back_to_the_stronger_peak() -> None:
    codec = HeatmapCodec((40, 60), sigma_px=2.0)
    heat, _ = codec.encode(np.array([[10.2, 20.0], [49.6, 21.3]]))
    two = heat[0] + 0.9 * heat[1]  # their mean (x ~ 29) lies in empty space
    decoded, confidence = codec.decode(two[None])
    np.testing.assert_allclose(decoded[0], [10.2, 20.0], atol=0.1)
    assert confidence[0] == pytest.approx(two.max())


def test_decode_empty_channel_is_finite_with_zero_confidence() -> None:
    codec = HeatmapCodec((16, 16), sigma_px=2.0)
    decoded, confidence = codec.decode(np.zeros((2, 16, 16), np.float32))
    assert np.isfinite(decoded).all()
    assert (confidence == 0).all()


def test_amplitude_scales_targets_not_positions_or_confidence() -> None:
    plain = HeatmapCodec((32, 40), sigma_px=2.0)
    loud = HeatmapCodec((32, 40), sigma_px=2.0, amplitude=100.0)
    points = np.array([[10.3, 7.8], [30.0, 25.5]])
    heat_plain, mask_plain = plain.encode(points)
    heat_loud, mask_loud = loud.encode(points)
    np.testing.assert_allclose(heat_loud, 100.0 * heat_plain, rtol=1e-6)
    assert (mask_plain == mask_loud).all()
    decoded, confidence = loud.decode(heat_loud)
    np.testing.assert_allclose(decoded, plain.decode(heat_plain)[0], atol=1e-4)
    np.testing.assert_allclose(decoded, points, atol=1e-3)
    assert confidence == pytest.approx([heat_plain[0].max(), heat_plain[1].max()], rel=1e-5)
    with pytest.raises(ValueError, match="amplitude"):
        HeatmapCodec((10, 10), sigma_px=1.0, amplitude=0.0)


def test_decode_stays_inside_the_valid_region() -> None:
    codec = HeatmapCodec((40, 60), sigma_px=2.0)
    heat, _ = codec.encode(np.array([[30.4, 20.2], [0.0, 39.0]]))
    spike = heat[0] + 1.5 * heat[1]  # a stronger peak in the corner (the zero padding)
    valid = np.zeros((40, 60), bool)
    valid[5:35, 8:52] = True  # the ultrasound region
    anywhere, _ = codec.decode(spike[None])
    inside, confidence = codec.decode(spike[None], valid[None])
    np.testing.assert_allclose(anywhere[0], [0.0, 39.0], atol=0.1)
    np.testing.assert_allclose(inside[0], [30.4, 20.2], atol=0.05)
    assert confidence[0] == pytest.approx(heat[0].max(), rel=1e-3)
    # Broadcast one region over channels; a channel with no valid pixel is decoded anyway.
    batch = torch.from_numpy(np.stack([spike, spike]))[None]  # (1, 2, H, W)
    regions = torch.from_numpy(np.stack([valid, np.zeros_like(valid)]))[None]
    points, _ = codec.decode(batch, regions)
    np.testing.assert_allclose(points[0, 0].numpy(), [30.4, 20.2], atol=0.05)
    np.testing.assert_allclose(points[0, 1].numpy(), [0.0, 39.0], atol=0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_codec_and_centroid_on_cuda_match_cpu() -> None:
    codec = HeatmapCodec((64, 64), sigma_px=2.5)
    rng = np.random.default_rng(7)
    points = torch.from_numpy(np.stack([_random_points(rng, 14, 64, 64, 1.0) for _ in range(2)]))
    mask = torch.ones(2, 14, dtype=torch.bool)
    heat_cpu = codec.encode_torch(points.float(), mask)
    heat_gpu = codec.encode_torch(points.float().cuda(), mask.cuda())
    torch.testing.assert_close(heat_gpu.cpu(), heat_cpu, atol=1e-5, rtol=1e-5)
    decoded, _ = codec.decode(heat_gpu)
    assert decoded.is_cuda and (decoded.cpu() - points.float()).abs().max() < 0.1
    cpu = threshold_centroid(heat_cpu)
    torch.testing.assert_close(threshold_centroid(heat_gpu).cpu(), cpu, atol=1e-4, rtol=1e-5)


def test_inside_torch_is_inside_for_tensors() -> None:
    codec = HeatmapCodec((40, 50), sigma_px=2.0)
    edges = [-0.5, -0.5001, 49.5, 49.5001, 39.5, 39.5001, 10.0, np.nan, np.inf]
    points = np.array([(x, y) for x in edges for y in edges])  # (81, 2) model px
    expected = codec.inside(points)
    assert expected.any() and not expected.all()
    got = codec.inside_torch(torch.from_numpy(points).reshape(9, 9, 2))
    assert np.array_equal(got.reshape(-1).numpy(), expected)
