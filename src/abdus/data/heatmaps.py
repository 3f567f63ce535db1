"""The heat-map codec: landmarks <-> Gaussian heat maps (one object for data, losses, predictors).

Shapes: B batch, C = 14 landmark channels (``taxonomy.LANDMARKS`` order), H, W model pixels.
All coordinates are ``(x, y)`` = (column, row) in *model pixels*, pixel centres at integers.

Paper section 2.1: "the landmark annotations were converted into distance-based Gaussian heat
maps centered to the landmark locations"; section 2.2: the predicted location is the weighted
mean of the heat over the area above a threshold k = 0.75 (``threshold_centroid``), which is
differentiable and used by the coordinate loss (LossCC, Eq. 3).

Decoding (``HeatmapCodec.decode``) starts from that same weighted mean, then refines it with a
log-quadratic fit at the nearest pixel (DARK, Zhang et al., CVPR 2020). The refinement is needed:
on a sampled Gaussian the thresholded mean alone is biased by up to 0.27 px (sigma 1.5 px)
because the set of pixels above the threshold is not symmetric about a sub-pixel centre
(measured; see tests/data/test_heatmaps.py). The log of a Gaussian is exactly quadratic, so the
fit through three samples recovers the centre exactly, also at the image border where the
Gaussian is truncated (the 3-sample window is moved inside the image).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Added to the weight sum so an empty above-threshold area never divides by zero.
_EPS = 1e-6
_LOG_TAIL = float(np.log(1e-12))  # Gaussian tails below exp(_LOG_TAIL) are stored as 0


def threshold_centroid(heatmaps: torch.Tensor, threshold: float = 0.75) -> torch.Tensor:
    """Weighted mean position of the heat above ``threshold`` x each channel's peak (paper 2.2).

    Args:
        heatmaps: (B, C, H, W) heat maps (any float dtype; computed in float32).
        threshold: k in the paper, relative to each channel's peak value. For targets of
            amplitude 1.0 this equals the paper's absolute ``H > k``; relative to the peak it
            does not depend on the codec's amplitude and also works for the low,
            early-training predictions.

    Returns:
        (B, C, 2) float32 ``(x, y)`` in model pixels. Weights are ``max(H, 0)`` where
        ``H > k * peak`` and 0 elsewhere; the area mask is not differentiated (the threshold is
        detached), the weights are. A channel with no positive heat above the threshold
        (all zero or negative) gives the image centre; a flat positive channel is entirely
        above the threshold and also gives the centre. Never NaN for finite input.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (B, C, H, W), got shape {tuple(heatmaps.shape)}")
    heat = heatmaps.float()
    _, _, H, W = heat.shape
    peak = heat.detach().amax(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    # Threshold clamped at 0: everything above it is positive, so the weights need no clamp
    # and an all-negative channel has an empty area (-> centre).
    above = heat.detach() > (threshold * peak).clamp_min(0.0)
    weights = torch.where(above, heat, 0.0)  # (B, C, H, W), differentiable w.r.t. heat
    total = weights.sum(dim=(2, 3))  # (B, C)
    xs = torch.arange(W, device=heat.device, dtype=heat.dtype)
    ys = torch.arange(H, device=heat.device, dtype=heat.dtype)
    sum_x = weights.sum(dim=2) @ xs  # (B, C, W) @ (W,) -> (B, C)
    sum_y = weights.sum(dim=3) @ ys  # (B, C, H) @ (H,) -> (B, C)
    valid = total > _EPS
    safe_total = torch.where(valid, total, torch.ones_like(total))  # no inf in either branch
    x = torch.where(valid, sum_x / safe_total, torch.full_like(total, (W - 1) / 2))
    y = torch.where(valid, sum_y / safe_total, torch.full_like(total, (H - 1) / 2))
    return torch.stack((x, y), dim=-1)


def _gaussian_1d(coords: torch.Tensor, centres: torch.Tensor, sigma: float) -> torch.Tensor:
    """exp(-(coords - centre)^2 / (2 sigma^2)): (N,) centres, (L,) coords -> (N, L).

    Values below 1e-12 (1e-5 of float32's resolution at the peak) are set to 0: far tails would
    otherwise underflow into denormals, which make ``exp`` and the outer product ~100x slower.
    """
    exponent = -((coords[None, :] - centres[:, None]) ** 2) / (2.0 * sigma * sigma)
    values = torch.exp(exponent.clamp_min(-60.0))
    return torch.where(exponent < _LOG_TAIL, 0.0, values)


def _log_quadratic_offset(
    left: torch.Tensor, mid: torch.Tensor, right: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertex offset (px, from the middle sample) of the parabola through the log-heat samples.

    Returns (offset, ok): ``ok`` is False where a sample is not positive or the parabola is
    not concave (then there is no local maximum to fit).
    """
    positive = (left > 0) & (mid > 0) & (right > 0)
    tiny = torch.finfo(mid.dtype).tiny
    lo, lm, lr = (torch.log(v.clamp_min(tiny)) for v in (left, mid, right))
    curvature = lo - 2.0 * lm + lr
    ok = positive & (curvature < -1e-12)
    safe = torch.where(ok, curvature, torch.full_like(curvature, -1.0))
    offset = 0.5 * (lo - lr) / safe
    return offset, ok


@dataclass(frozen=True)
class HeatmapCodec:
    """Encode landmarks as Gaussian heat maps and decode heat maps back to landmarks.

    ``size``: (H, W) in model pixels. ``sigma_px``: Gaussian standard deviation in model
    pixels. ``threshold``: k of the paper's thresholded weighted mean (section 2.2).
    ``amplitude``: the targets' peak value. The paper does not give it; it sets how loud the
    landmark is against the network's output noise under the per-pixel mean L2 (Eq. 2): with
    1.0 a small network trained from scratch sits for many epochs at the all-zero output,
    with 100 it learns within a few (docs/benchmarks.md). Decoding does not depend on it (the
    thresholds are relative to the peak) and confidences are divided by it, so they stay
    about 1.0 for a perfect heat map.
    """

    size: tuple[int, int]
    sigma_px: float
    threshold: float = 0.75
    amplitude: float = 1.0

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 3:
            raise ValueError(f"size must be (H, W) with both >= 3, got {self.size}")
        if not self.sigma_px > 0:
            raise ValueError(f"sigma_px must be positive, got {self.sigma_px}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if not (self.amplitude > 0 and np.isfinite(self.amplitude)):
            raise ValueError(f"amplitude must be positive, got {self.amplitude}")

    @classmethod
    def from_mm(
        cls,
        size: tuple[int, int],
        sigma_mm: float,
        spacing_mm: float,
        threshold: float = 0.75,
        amplitude: float = 1.0,
    ) -> HeatmapCodec:
        """A codec whose Gaussian is ``sigma_mm`` wide at ``spacing_mm`` mm per model pixel."""
        if not spacing_mm > 0:
            raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
        size_hw = (int(size[0]), int(size[1]))
        return cls(size_hw, float(sigma_mm) / float(spacing_mm), threshold, float(amplitude))

    # ----------------------------------------------------------------------------- encoding
    def inside(self, points_xy: np.ndarray) -> np.ndarray:
        """(..., 2) model px -> (...,) bool: finite and within the canvas (pixel edges)."""
        H, W = self.size
        p = np.asarray(points_xy, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            ok = (p[..., 0] >= -0.5) & (p[..., 0] <= W - 0.5)
            ok &= (p[..., 1] >= -0.5) & (p[..., 1] <= H - 0.5)
        return ok & np.isfinite(p).all(axis=-1)

    def inside_torch(self, points_xy: torch.Tensor) -> torch.Tensor:
        """``inside`` for a tensor on any device: (..., 2) model px -> (...,) bool."""
        H, W = self.size
        x, y = points_xy[..., 0], points_xy[..., 1]
        ok = (x >= -0.5) & (x <= W - 0.5) & (y >= -0.5) & (y <= H - 0.5)
        return ok & torch.isfinite(points_xy).all(dim=-1)

    def encode(self, points_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gaussian targets for one image.

        Args:
            points_xy: (C, 2) model px, NaN rows for absent landmarks.

        Returns:
            heatmaps (C, H, W) float32, ``amplitude`` at the (sub-pixel) landmark, zeros for
            absent ones; mask (C,) bool, True where the landmark is present and inside the
            canvas. A point near or beyond the border still gets its (truncated) true Gaussian,
            but a point outside the canvas is masked out.
        """
        points = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        finite = np.isfinite(points).all(axis=1)
        heat = self.encode_torch(torch.from_numpy(points)[None], torch.from_numpy(finite)[None])
        return heat[0].numpy(), self.inside(points)

    def encode_torch(self, points_xy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Gaussian targets for a batch on the points' device (separable outer product).

        Args:
            points_xy: (B, C, 2) model px. mask: (B, C) bool or 0/1; masked-out channels are 0.

        Returns:
            (B, C, H, W) float32 heat maps, peak ``amplitude``.
        """
        B, C, _ = points_xy.shape
        H, W = self.size
        dev = points_xy.device
        flat = torch.nan_to_num(points_xy.reshape(B * C, 2).double())
        gx = _gaussian_1d(
            torch.arange(W, device=dev, dtype=torch.float64), flat[:, 0], self.sigma_px
        )
        gy = _gaussian_1d(
            torch.arange(H, device=dev, dtype=torch.float64), flat[:, 1], self.sigma_px
        )
        gx = gx.float() * (mask.reshape(B * C, 1).to(torch.float32) * self.amplitude)
        heat = gy.float()[:, :, None] * gx[:, None, :]  # (B*C, H, 1) * (B*C, 1, W)
        return heat.reshape(B, C, H, W)

    # ----------------------------------------------------------------------------- decoding
    def decode(
        self,
        heatmaps: np.ndarray | torch.Tensor,
        valid: np.ndarray | torch.Tensor | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | tuple[torch.Tensor, torch.Tensor]:
        """Landmarks from heat maps (the one decoding rule used everywhere).

        Rule, per channel:
        0. With ``valid``, only the pixels where it is True count: a landmark is never placed
           outside the image's ultrasound region (``abdus.data.masking.landmark_region``), e.g.
           on a canvas corner in the zero padding. A channel with no valid pixel is decoded
           on all of them.
        1. ``threshold_centroid`` (paper 2.2) gives a first estimate.
        2. Fallback to the argmax pixel when the above-threshold area is degenerate: the peak
           is not positive, or the mean falls on a pixel below the threshold (the area is split,
           e.g. two blobs, and their mean lies between them).
        3. Refinement: from the pixel nearest the estimate, climb to the local maximum pixel
           (at the border the thresholded mean of a cut Gaussian is pulled inward by up to
           about sigma); there, along x and along y, a parabola through the log-heat at that
           pixel and its two neighbours (window moved inside the image at the border) gives
           the sub-pixel centre (DARK). Kept only when the three samples are positive,
           the parabola is concave and the refined point stays within 1.5 px of the window
           centre; otherwise the estimate of steps 1-2 stands.

        Args:
            heatmaps: (..., C, H, W) numpy array or torch tensor.
            valid: bool, broadcastable to ``heatmaps`` (e.g. (..., 1, H, W) for one region per
                image); None = every pixel.

        Returns:
            points (..., C, 2) ``(x, y)`` model px and confidence (..., C) = the channel's peak
            heat value / ``amplitude`` (1.0 for a perfect target; <= 0 means nothing was found),
            both float32 and of the input's kind (numpy in, numpy out).
        """
        is_numpy = isinstance(heatmaps, np.ndarray)
        heat = torch.from_numpy(np.asarray(heatmaps)) if is_numpy else heatmaps
        heat = heat.detach().float()
        if valid is not None:
            heat = _outside_to_minus_inf(heat, valid)
        lead = heat.shape[:-2]
        H, W = heat.shape[-2:]
        flat = heat.reshape(1, -1, H, W)  # (1, N, H, W)
        points = threshold_centroid(flat, self.threshold)[0]  # (N, 2)
        peak, argmax = flat[0].reshape(-1, H * W).max(dim=1)
        arg_xy = torch.stack((argmax % W, argmax // W), dim=-1).float()
        points = self._fallback_to_argmax(flat[0], points, peak, arg_xy)
        points = self._refine(flat[0], points)
        points = points.reshape(*lead, 2)
        confidence = peak.reshape(lead) / self.amplitude
        if is_numpy:
            return points.numpy(), confidence.numpy()
        return points, confidence

    def _fallback_to_argmax(self, heat, points, peak, arg_xy) -> torch.Tensor:
        """(N, H, W), (N, 2), (N,), (N, 2) -> (N, 2): the argmax where the mean is degenerate."""
        H, W = heat.shape[-2:]
        col = points[:, 0].round().long().clamp(0, W - 1)
        row = points[:, 1].round().long().clamp(0, H - 1)
        at_mean = heat[torch.arange(heat.shape[0], device=heat.device), row, col]
        degenerate = (peak <= 0) | (at_mean <= self.threshold * peak)
        return torch.where(degenerate[:, None], arg_xy, points)

    def _refine(self, heat: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Log-quadratic (DARK) sub-pixel refinement: (N, H, W), (N, 2) -> (N, 2) model px."""
        N, H, W = heat.shape
        n = torch.arange(N, device=heat.device)
        col = points[:, 0].round().long().clamp(0, W - 1)
        row = points[:, 1].round().long().clamp(0, H - 1)
        # The thresholded mean of a Gaussian cut by the border is pulled inward by up to about
        # sigma: climb to the local maximum pixel first (the pixel nearest a Gaussian's centre).
        col, row = _climb_to_local_max(heat, col, row, steps=4 + int(self.sigma_px))
        cx = col.clamp(1, W - 2)  # window centre, moved inside the image at the border
        cy = row.clamp(1, H - 2)
        dx, okx = _log_quadratic_offset(
            heat[n, row, cx - 1], heat[n, row, cx], heat[n, row, cx + 1]
        )
        dy, oky = _log_quadratic_offset(
            heat[n, cy - 1, col], heat[n, cy, col], heat[n, cy + 1, col]
        )
        okx &= dx.abs() <= 1.5
        oky &= dy.abs() <= 1.5
        x = torch.where(okx, cx.float() + dx, points[:, 0])
        y = torch.where(oky, cy.float() + dy, points[:, 1])
        return torch.stack((x, y), dim=-1)


def _outside_to_minus_inf(heat: torch.Tensor, valid: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``heat`` with -inf where ``valid`` is False (channels with no valid pixel untouched).

    -inf never passes the centroid threshold, never wins the argmax or the climb, and fails the
    refinement's positivity test, so every step of ``decode`` respects the region as it is.
    """
    inside = torch.as_tensor(np.asarray(valid) if not torch.is_tensor(valid) else valid)
    inside = inside.to(device=heat.device, dtype=torch.bool).expand_as(heat)
    inside = inside | ~inside.flatten(-2).any(dim=-1)[..., None, None]
    return torch.where(inside, heat, float("-inf"))


def _climb_to_local_max(
    heat: torch.Tensor, col: torch.Tensor, row: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each (col, row) to the highest of its 3x3 neighbours, ``steps`` times (N-vectorised).

    heat (N, H, W); col, row (N,) long pixel indices. Stops moving at a local maximum.
    """
    N, H, W = heat.shape
    n = torch.arange(N, device=heat.device)[:, None]
    d = torch.tensor([-1, 0, 1], device=heat.device)
    dr, dc = (g.reshape(-1) for g in torch.meshgrid(d, d, indexing="ij"))  # (9,), centre at 4
    for _ in range(steps):
        rows = (row[:, None] + dr).clamp(0, H - 1)  # (N, 9)
        cols = (col[:, None] + dc).clamp(0, W - 1)
        values = heat[n, rows, cols]
        best = values.argmax(dim=1, keepdim=True)
        better = values.gather(1, best)[:, 0] > values[:, 4]  # ties keep the current pixel
        new_row = torch.where(better, rows.gather(1, best)[:, 0], row)
        new_col = torch.where(better, cols.gather(1, best)[:, 0], col)
        if torch.equal(new_row, row) and torch.equal(new_col, col):
            break
        row, col = new_row, new_col
    return col, row


__all__ = ["HeatmapCodec", "threshold_centroid"]
