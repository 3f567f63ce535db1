"""``--backend auto``: the fastest backend whose accuracy cost is measured within the goals.

A scanner or PACS box runs whatever CPU it has, so ``predict``, ``serve`` and ``benchmark``
choose the backend from what this machine and this model offer, and say which and why:

* a GPU (``--device cuda``): eager PyTorch fp32 on it (ONNX Runtime runs on the CPU here);
* an abdus ``.onnx`` file: ONNX Runtime in the file's own precision;
* the PBT baseline: its own detector;
* a run folder or ``model.pt`` on the CPU:

  1. ``onnx-int8`` when ``model.int8.onnx`` beside the model was exported from these exact
     weights *and* its recorded check (``abdus export --int8 --data DATA`` compares it with
     PyTorch fp32 on held-out images and stores the result in the file) is within
     ``EXACTNESS``: view accuracy change <= 0.5 points, mean caliper change <= 0.2 mm, at most
     1% of calipers moved more than 2 mm. At the paper's input INT8 was the fastest backend
     measured, with VNNI (4.05x eager fp32) and on an AVX2-only CPU (1.9-3.0x); on the small
     demo network it was no faster than ONNX fp32 (docs/benchmarks.md);
  2. otherwise ``onnx`` (ONNX Runtime fp32): exact (the same outputs as PyTorch to ~1e-5) and
     1.2-1.9x faster than eager PyTorch on the AVX2 and AVX-512 CPUs measured; ``model.onnx``
     is used when fresh, else exported once into a temporary folder.

bf16 is never chosen on a CPU: without native bfloat16 (AVX512_BF16 / AMX) it ran 2.8x slower
than fp32 on the demo network (and ~4x at the paper's size). Where it is native it moved 1.9% of
the calipers more than 2 mm on the one model measured at the paper's scale, above the 1% goal;
on the trained demo model it was within the goals (0.10 mm, 0.2%) but no faster than ONNX fp32
(17.1 against 16.0 ms on a 2-core AVX-512 + VNNI + AVX512_BF16 CPU), and at the paper's input
ONNX fp32 of the distilled size already meets the latency goal exactly (116 ms on that CPU).
``--bf16`` stays available (and is refused on a CPU without native bfloat16).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from abdus.choices import Backend, BenchBackend
from abdus.errors import AbdusInputError
from abdus.inference.backends import OnnxModelInfo, cpu_features, read_onnx_info
from abdus.modelfile import INT8_NAME, ModelKind, file_sha256, find_model

# The timed backends with the same outputs as eager fp32 (ONNX Runtime: to ~1e-5).
EXACT_BENCH = (BenchBackend.TORCH_FP32.value, BenchBackend.ONNX_FP32.value)
# The exactness goals a fast backend must meet against PyTorch fp32 on held-out images.
EXACTNESS = {"accuracy_points": 0.5, "mean_mm": 0.2, "share_over_2mm": 0.01}


@dataclass(frozen=True)
class BackendChoice:
    """The backend ``auto`` picked (a ``Backend`` value) and why, in one line."""

    backend: str
    reason: str

    def describe(self) -> str:
        """``backend onnx-int8 (auto): <reason>``."""
        return f"backend {self.backend} (auto): {self.reason}"


def within_exactness(check: Mapping[str, Any] | None) -> tuple[bool, str]:
    """Whether a recorded comparison with fp32 (``compare.summarise_change``'s fields) meets
    ``EXACTNESS``, and the figures as text. No check, or one without calipers: not met."""
    if not check or check.get("mean_measurement_change_mm") is None:
        return False, "no accuracy check recorded"
    points = abs(float(check.get("accuracy_change_points") or 0.0))
    mean_mm = float(check["mean_measurement_change_mm"])
    share = float(check.get("share_over_2mm") or 0.0)
    text = (
        f"{points:.2f} points view accuracy, {mean_mm:.3f} mm mean caliper change, "
        f"{100 * share:.1f}% of calipers > 2 mm on {check.get('n_images', '?')} held-out images"
    )
    met = (
        points <= EXACTNESS["accuracy_points"]
        and mean_mm <= EXACTNESS["mean_mm"]
        and share <= EXACTNESS["share_over_2mm"]
    )
    return met, text


def recorded_check(info: OnnxModelInfo | None) -> dict[str, Any] | None:
    """The accuracy check ``abdus export --int8 --data`` stored in an INT8 file, if any."""
    check = (info.quantization if info else {}).get("check")
    return dict(check) if isinstance(check, Mapping) else None


def _cpu_words(features: Mapping[str, bool]) -> str:
    names = [k for k in ("avx2", "avx512f", "vnni", "avx512_bf16", "amx") if features.get(k)]
    return "CPU with " + (", ".join(names) if names else "none of avx2/avx512/vnni/bf16")


def choose_backend(
    model: str | Path,
    *,
    device: str | torch.device = "cpu",
    features: Mapping[str, bool] | None = None,
) -> BackendChoice:
    """The backend ``--backend auto`` runs ``model`` (run folder or model file) with on
    ``device`` (module doc). ``features``: ``cpu_features()`` (default: this machine's)."""
    ref = find_model(model)
    if ref.kind is ModelKind.PBT:
        return BackendChoice(Backend.TORCH.value, "the PBT baseline runs its own detector")
    if torch.device(device).type == "cuda":
        return BackendChoice(Backend.TORCH.value, "a GPU: eager PyTorch fp32 on it")
    if ref.kind is ModelKind.ONNX:
        info = read_onnx_info(ref.path)
        int8 = info is not None and info.precision == "int8"
        backend = Backend.ONNX_INT8 if int8 else Backend.ONNX
        return BackendChoice(backend.value, "an ONNX file: ONNX Runtime in its precision")
    words = _cpu_words(features if features is not None else cpu_features())
    int8_file = ref.path.parent / INT8_NAME
    why_not = f"no {INT8_NAME} beside the model (abdus export --int8 --data DATA makes one)"
    if int8_file.is_file():
        info = read_onnx_info(int8_file)
        if info is None or info.source_sha256 != file_sha256(ref.path):
            why_not = f"{INT8_NAME} is stale (exported from other weights)"
        else:
            met, figures = within_exactness(recorded_check(info))
            if met:
                reason = f"{INT8_NAME} measured within the goals against fp32 ({figures}); {words}"
                return BackendChoice(Backend.ONNX_INT8.value, reason)
            why_not = f"{INT8_NAME} not used: {figures} (goals: <= 0.5 points, <= 0.2 mm, <= 1%)"
    reason = f"ONNX Runtime fp32, exact and faster than eager PyTorch; {why_not}; {words}"
    return BackendChoice(Backend.ONNX.value, reason)


def pick_measured(
    latency_ms: Mapping[str, float],
    costs: Mapping[str, Mapping[str, Any]] | None,
    files: Mapping[str, Path | None],
) -> tuple[str, str]:
    """What ``auto`` would deploy among the backends ``abdus benchmark`` timed (bench names,
    ``latency_ms`` each): the fastest that is exact (fp32) or whose cost against fp32 (``costs``
    measured with ``--data``, else the check recorded in its INT8 file in ``files``) meets
    ``EXACTNESS``; bf16 never. Returns (name, reason)."""
    fit: dict[str, str] = {n: "exact" for n in latency_ms if n in EXACT_BENCH}
    for name in latency_ms:
        if name in EXACT_BENCH or name == BenchBackend.TORCH_BF16:
            continue
        measured = (costs or {}).get(name)
        if measured is None and files.get(name) is not None:
            measured = recorded_check(read_onnx_info(files[name]))
        met, figures = within_exactness(measured)
        if met:
            fit[name] = figures
    if not fit:
        return BenchBackend.TORCH_FP32.value, "no timed backend is known to be exact enough"
    best = min(fit, key=lambda n: latency_ms[n])
    return best, f"fastest of {', '.join(sorted(fit))} ({fit[best]})"


def resolve_backend(model: str | Path, device: str | torch.device = "cpu") -> BackendChoice:
    """``choose_backend`` for ``--backend auto``, with an unreadable file as AbdusInputError."""
    try:
        return choose_backend(model, device=device)
    except (OSError, ValueError) as err:  # an unreadable .onnx: the loader names it properly
        if isinstance(err, AbdusInputError):
            raise
        raise AbdusInputError(f"cannot choose a backend ({err})", model) from None


__all__ = [
    "EXACTNESS",
    "BackendChoice",
    "choose_backend",
    "pick_measured",
    "read_onnx_info",
    "recorded_check",
    "resolve_backend",
    "within_exactness",
]
