"""``abdus benchmark``: end-to-end latency per image, backends side by side, and what they cost.

End to end = read the file, preprocess (mask, resample, canvas), network, decode the predicted
view's heat maps, landmarks to source px and measurements in mm (the ``predict`` path without
writing files). Each backend runs ``warmup`` times, then ``repeats`` timed runs: median and p90
in ms, with the median of each stage. Backends (``BENCH_BACKENDS``):

* ``torch-fp32``: eager PyTorch, fp32, NCHW, all 14 heat maps decoded: the baseline, as a
  researcher runs the model (and as the predictor first did);
* ``torch-bf16``: autocast bfloat16 + channels-last (oneDNN AVX-512 BF16 on such CPUs);
* ``onnx-fp32``: ONNX Runtime, fp32 graph (BatchNorm folded, fused kernels);
* ``onnx-int8``: ONNX Runtime, static INT8 QDQ (VNNI u8 x s8 convolutions).

The fast backends decode only the predicted view's 2-4 heat maps; the ONNX ones run the
decoder 16 channels wide (``export.pad_decoder_channels``, exact).

``target``: a run folder / ``model.pt``, or a preset ("paper", "demo", "tiny") built untrained
(latency does not depend on the weights) on a generated DICOM test image. With ``data=`` (a
dataset folder) it also reports each fast backend's view-accuracy and measurement change
against torch-fp32 on the run's test split (``compare_predictors``). With CUDA it adds GPU
figures: batch-1 latency and batch-32 throughput (network + decode).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from abdus.choices import BENCH_BACKENDS, PRESETS
from abdus.data.heatmaps import HeatmapCodec
from abdus.data.preprocess import PreprocessConfig, preprocess_image
from abdus.errors import AbdusInputError
from abdus.inference.auto import EXACTNESS, pick_measured
from abdus.inference.backends import (
    OnnxBackend,
    TorchBackend,
    bf16_supported,
    cpu_features,
    physical_cores,
)
from abdus.inference.compare import collect_outputs, format_cost, summarise_change
from abdus.inference.export import export_loaded, resolve_onnx
from abdus.inference.predictor import Predictor, as_batch
from abdus.inference.quantize import calibration_feeds
from abdus.io.reader import read_any
from abdus.modelfile import INT8_NAME, ONNX_NAME, LoadedNetwork, open_network
from abdus.models import build_model
from abdus.phantom import writers
from abdus.phantom.render import sample_patient, scan_view
from abdus.taxonomy import VIEW_NAMES
from abdus.timing import synchronize, time_calls
from abdus.training.presets import preset_config

BASELINE = "torch-fp32"
CPU_FEATURES = ("avx2", "avx512f", "vnni", "avx512_bf16", "amx")
TEST_VIEW = "kidney_right_trans"  # 4 landmarks: the largest task to decode
# Goals of the project's issue (2 CPU cores, paper size).
GOALS = {
    "latency_ms": 250.0,
    "speedup": 6.0,
    "accuracy_points": EXACTNESS["accuracy_points"],
    "mm": EXACTNESS["mean_mm"],
    "size_mb": 50.0,
}
STAGES = ("read", "preprocess", "network", "decode")
NO_BF16 = "no native bfloat16 on this CPU (no AVX512_BF16 or AMX): bf16 runs 3-4x slower than fp32"


# ----------------------------------------------------------------------------- the target
def preset_model(
    preset: str,
    *,
    size: int | None = None,
    depth: str | None = None,
    widths: Sequence[int] | None = None,
) -> LoadedNetwork:
    """An untrained model of a training preset (``size``: square canvas, ``depth``: ResNet,
    ``widths``: the encoder's four stage widths, e.g. a distilled student's)."""

    config = preset_config(preset)
    if size is not None:
        pre = PreprocessConfig(config.preprocess.spacing_mm, (int(size), int(size)))
        config = dataclasses.replace(config, preprocess=pre)
    if depth is not None or widths is not None:
        options = dataclasses.replace(
            config.model_options,
            depth=depth or config.model_options.depth,
            widths=tuple(widths) if widths else config.model_options.widths,
        )
        config = dataclasses.replace(config, model_options=options)
    torch.manual_seed(0)
    model = build_model(config.model, config.model_options).eval()
    pre = config.preprocess
    codec = HeatmapCodec.from_mm(pre.size, config.sigma_mm, pre.spacing_mm)
    return LoadedNetwork(model, config, codec, None, f"{config.model}:{preset} (untrained)")


def generated_dicom(folder: Path, view: str = TEST_VIEW, seed: int = 0) -> Path:
    """A phantom scanner DICOM (RGB screen, ultrasound region calibration) of ``view``."""

    anatomy = sample_patient(np.random.default_rng(seed), "BENCH")
    scan = scan_view(anatomy, view, np.random.default_rng(seed + 1))
    path = folder / f"bench_{view}.dcm"
    writers.write_dicom(path, scan, writers.dicom_identity(seed, "BENCH", 0), "rgb")
    return path


def _phantom_feeds(loaded: LoadedNetwork, folder: Path, count: int = 8) -> list[dict]:
    """Calibration feeds from generated images of several views (no dataset given)."""
    feeds = []
    for k, view in enumerate(VIEW_NAMES[: max(1, count)]):
        image = read_any(generated_dicom(folder, view, seed=100 + k))[0]
        pre = preprocess_image(image, loaded.config.preprocess)
        images, classes, _ = as_batch([pre])
        feeds.append({"image": images.numpy(), "class_image": classes.numpy()})
    return feeds


def _onnx_file(loaded: LoadedNetwork, name: str, folder: Path, data: str | Path | None) -> Path:
    """The target's own exported file when fresh, else an export into ``folder`` (INT8 from
    the fp32 export there when the fp32 backend was built first)."""
    int8 = name == "onnx-int8"
    if loaded.source is not None:
        try:
            return resolve_onnx(loaded.source, "onnx-int8" if int8 else "onnx")
        except AbdusInputError:
            pass  # no usable INT8 file beside the model: quantise here
    out = folder / (INT8_NAME if int8 else ONNX_NAME)
    feeds: list = []
    if int8:
        feeds = calibration_feeds(data, loaded, 32) if data else _phantom_feeds(loaded, folder)
    fp32 = folder / ONNX_NAME if int8 and (folder / ONNX_NAME).is_file() else None
    export_loaded(loaded, out, int8=int8, calibration_feeds_=feeds, fp32_file=fp32)
    return out


def build_backends(
    loaded: LoadedNetwork,
    names: Sequence[str],
    folder: Path,
    *,
    data: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, tuple[Predictor, Path | None]]:
    """A predictor per backend name, with the model file it runs (None: the in-memory model)."""
    built: dict[str, tuple[Predictor, Path | None]] = {}
    cfg, codec = loaded.config.preprocess, loaded.codec
    for name in names:
        if name.startswith("torch"):
            model = copy.deepcopy(loaded.model)  # channels-last converts the module in place
            backend = TorchBackend(model, device=device, bf16=name == "torch-bf16")
            built[name] = (Predictor(backend, cfg, codec, model_id=loaded.model_id), None)
        else:
            path = _onnx_file(loaded, name, folder, data)
            built[name] = (Predictor(OnnxBackend(path), cfg, codec, model_id=loaded.model_id), path)
    return built


# ------------------------------------------------------------------------------- timing
def end_to_end(
    predictor: Predictor, path: Path, view: str | None, *, task_only: bool = True
) -> dict[str, float]:
    """One image through the whole predict path; seconds per stage (see module doc).

    ``task_only=False`` decodes all 14 heat maps, as the original predictor did (baseline).
    """
    device = predictor.device
    t0 = time.perf_counter()
    image = read_any(path)[0]
    t1 = time.perf_counter()
    pre = preprocess_image(image, predictor.preprocess)
    images, classes, regions = as_batch([pre])
    t2 = time.perf_counter()
    logits, heatmaps = predictor.backend.run(images, classes)
    synchronize(device)
    t3 = time.perf_counter()
    views = [view] if view else None
    out = predictor.decode_outputs(
        logits, heatmaps, regions=regions, views=views, task_only=task_only
    )[0]
    json.dumps(predictor.interpret(out, pre, image, view=view).to_json())
    t4 = time.perf_counter()
    return {"read": t1 - t0, "preprocess": t2 - t1, "network": t3 - t2, "decode": t4 - t3}


def time_backend(
    run_once: Callable[[], dict[str, float]], repeats: int, warmup: int
) -> dict[str, Any]:
    """Median / p90 / mean of the total (ms) and the median of each stage over ``repeats``."""
    for _ in range(warmup):
        run_once()
    runs = [run_once() for _ in range(repeats)]
    totals = np.array([sum(r.values()) for r in runs]) * 1000.0
    return {
        "median_ms": float(np.median(totals)),
        "p90_ms": float(np.percentile(totals, 90)),
        "mean_ms": float(totals.mean()),
        "stages_ms": {s: 1000.0 * statistics.median(r[s] for r in runs) for s in runs[0]},
    }


def gpu_figures(loaded: LoadedNetwork, path: Path, view: str | None, repeats: int) -> dict:
    """CUDA: batch-1 end-to-end latency and batch-32 throughput (network + decode), fp32/bf16."""
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0)}
    cfg = loaded.config.preprocess
    pre = preprocess_image(read_any(path)[0], cfg)
    for name, bf16 in (("cuda-fp32", False), ("cuda-bf16", True)):
        if bf16 and not bf16_supported("cuda"):
            continue
        backend = TorchBackend(copy.deepcopy(loaded.model), device="cuda", bf16=bf16)
        predictor = Predictor(backend, cfg, loaded.codec, model_id=loaded.model_id)
        latency = time_backend(lambda p=predictor: end_to_end(p, path, view), repeats, 3)
        images, classes, regions = as_batch([pre] * 32)
        throughput = time_calls(
            lambda p=predictor, x=images, c=classes, r=regions: p.run_network(
                x, c, r, task_only=True
            ),
            repeats=max(3, repeats // 4),
            warmup=2,
            device=predictor.device,
        )
        out[name] = {
            "batch1_median_ms": latency["median_ms"],
            "batch1_p90_ms": latency["p90_ms"],
            "batch1_stages_ms": latency["stages_ms"],
            "batch32_images_per_s": 32_000.0 / throughput.median_ms,
        }
    return out


# ------------------------------------------------------------------------------ the report
def _machine() -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if "model name" in ln), "")
    return {
        "cpu": name or platform.processor(),
        "physical_cores": physical_cores(),
        "logical_cpus": psutil.cpu_count(logical=True),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "torch_threads": torch.get_num_threads(),
        **cpu_features(),
        "load_average": list(psutil.getloadavg()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }


def _file_mb(path: Path | None, loaded: LoadedNetwork, folder: Path) -> float:
    """Size (MiB) of the file a backend loads; the fp32 state dict for PyTorch."""
    if path is None:
        path = loaded.source
        if path is None:
            path = folder / "model_state.pt"
            torch.save(loaded.model.state_dict(), path)
    return path.stat().st_size / 2**20


def _goals(rows: dict[str, dict], accuracy: dict[str, dict] | None) -> dict[str, Any]:
    """Each goal of the issue with the measured value and the margin (negative = missed)."""
    fastest = min(rows, key=lambda n: rows[n]["median_ms"])
    row = rows[fastest]
    goals: dict[str, Any] = {"fastest": fastest}
    goals["latency_ms"] = _goal(row["median_ms"], GOALS["latency_ms"], lower=True)
    if BASELINE in rows:
        goals["speedup"] = _goal(row["speedup"], GOALS["speedup"], lower=False)
    goals["size_mb"] = _goal(row["model_file_mb"], GOALS["size_mb"], lower=True)
    change = (accuracy or {}).get(fastest)
    if change and change.get("accuracy_change_points") is not None:
        goals["accuracy_points"] = _goal(
            abs(change["accuracy_change_points"]), GOALS["accuracy_points"], lower=True
        )
    if change and change.get("mean_measurement_change_mm") is not None:
        goals["mm"] = _goal(change["mean_measurement_change_mm"], GOALS["mm"], lower=True)
    return goals


def _goal(value: float, target: float, *, lower: bool) -> dict[str, Any]:
    met = value <= target if lower else value >= target
    return {"value": value, "target": target, "met": bool(met), "margin": abs(target - value)}


def format_table(report: dict[str, Any]) -> str:
    """The report as text: one row per backend, then goals."""
    lines = [
        f"abdus benchmark: {report['target']}  ({report['model']['variant']}, "
        f"{report['model']['depth']}, {report['model']['size'][0]}x{report['model']['size'][1]})",
        f"machine: {report['machine']['cpu']}, {report['machine']['physical_cores']} core(s), "
        f"load average {report['machine']['load_average']}",
        "cpu features: "
        + ", ".join(f"{k} {'yes' if report['machine'][k] else 'no'}" for k in CPU_FEATURES),
    ]
    for name, why in (report.get("skipped") or {}).items():
        lines.append(f"skipped {name}: {why}")
    if report.get("note"):
        lines.append(f"note: {report['note']}")
    lines.append(
        f"{'backend':<11} {'median ms':>9} {'p90 ms':>8} {'speed-up':>8} {'file MB':>8}  "
        + "  ".join(f"{s:>10}" for s in STAGES)
    )
    for name, row in report["backends"].items():
        stages = "  ".join(f"{row['stages_ms'].get(s, 0.0):>10.1f}" for s in STAGES)
        lines.append(
            f"{name:<11} {row['median_ms']:>9.1f} {row['p90_ms']:>8.1f} {row['speedup']:>7.2f}x "
            f"{row['model_file_mb']:>8.1f}  {stages}"
        )
    for name, change in (report.get("accuracy") or {}).items():
        lines.append(f"{name}: {format_cost(change)}")
    for key, goal in report["goals"].items():
        if isinstance(goal, dict):
            state = "met" if goal["met"] else f"MISSED by {goal['margin']:.2f}"
            lines.append(f"goal {key}: {goal['value']:.2f} vs {goal['target']} -> {state}")
    if report.get("gpu"):
        lines.append(f"gpu: {json.dumps(report['gpu'])}")
    if report.get("auto"):
        lines.append(f"auto: {report['auto']} ({report['auto_reason']})")
    return "\n".join(lines)


def _load_target(
    target: str, size: int | None, depth: str | None, widths: Sequence[int] | None
) -> tuple[LoadedNetwork, bool]:
    if target in PRESETS:
        try:
            return preset_model(target, size=size, depth=depth, widths=widths), True
        except ValueError as err:
            raise AbdusInputError(str(err), target) from None
    if size is not None or depth is not None or widths is not None:
        raise AbdusInputError("--size / --depth / --widths apply to a preset", target)
    if Path(target).suffix == ".onnx":
        raise AbdusInputError("benchmark a run folder, a model.pt or a preset name", target)
    return open_network(target), False


def run_benchmark(
    target: str,
    *,
    as_json: bool = False,
    repeats: int = 20,
    warmup: int = 3,
    backends: Sequence[str] | None = None,
    size: int | None = None,
    depth: str | None = None,
    widths: Sequence[int] | None = None,
    data: str | Path | None = None,
) -> dict[str, Any]:
    """Benchmark ``target`` (run folder, ``model.pt`` or preset name); prints and returns the
    report (see module doc). ``data``: a dataset folder for the accuracy change of each fast
    backend (and INT8 calibration); ``size`` / ``depth`` / ``widths`` override a preset's
    canvas / ResNet / stage widths."""
    names = list(backends or BENCH_BACKENDS)
    if unknown := [n for n in names if n not in BENCH_BACKENDS]:
        raise AbdusInputError(f"unknown backend(s) {unknown}; valid: {', '.join(BENCH_BACKENDS)}")
    skipped = {}
    if "torch-bf16" in names and not bf16_supported("cpu"):
        if backends:  # named on purpose: time it, loudly
            print(f"warning: {NO_BF16}; timing torch-bf16 as asked", file=sys.stderr)
        else:
            names.remove("torch-bf16")
            skipped["torch-bf16"] = NO_BF16
    if repeats < 1 or warmup < 0:
        raise AbdusInputError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    loaded, untrained = _load_target(str(target), size, depth, widths)
    machine = _machine()
    with tempfile.TemporaryDirectory(prefix="abdus-bench-") as tmp:
        folder = Path(tmp)
        image = generated_dicom(folder)
        view = TEST_VIEW if untrained else None
        built = build_backends(loaded, names, folder, data=data)
        rows = {}
        for name, (predictor, path) in built.items():
            fast = name != BASELINE  # the baseline decodes all 14 maps, as researchers do

            def once(p: Predictor = predictor, fast: bool = fast) -> dict[str, float]:
                return end_to_end(p, image, view, task_only=fast)

            row = time_backend(once, repeats, warmup)
            row["model_file_mb"] = _file_mb(path, loaded, folder)
            rows[name] = row
        base = rows.get(BASELINE, {}).get("median_ms")
        for row in rows.values():
            row["speedup"] = base / row["median_ms"] if base else float("nan")
        accuracy = _accuracy(built, loaded, data) if data else None
        gpu = gpu_figures(loaded, image, view, repeats) if torch.cuda.is_available() else None
        files = {name: path for name, (_, path) in built.items()}
        latency = {name: row["median_ms"] for name, row in rows.items()}
        auto = pick_measured(latency, accuracy, files)  # reads the INT8 file's recorded check
    report = _report(loaded, target, untrained, machine, rows, accuracy, gpu, repeats, warmup)
    report["skipped"] = skipped
    report["auto"], report["auto_reason"] = auto
    print(json.dumps(report, indent=2) if as_json else format_table(report))
    return report


def _accuracy(built: dict, loaded: LoadedNetwork, data: str | Path) -> dict[str, dict] | None:
    """Change of each fast backend against torch-fp32 on the run's test split."""
    if BASELINE not in built:
        return None
    config = loaded.config
    predictors = [built[BASELINE][0]] + [p for n, (p, _) in built.items() if n != BASELINE]
    outputs = collect_outputs(
        predictors, data, test_fraction=config.test_fraction, seed=config.seed
    )
    fast = [n for n in built if n != BASELINE]
    return {n: summarise_change(outputs[0], o) for n, o in zip(fast, outputs[1:], strict=True)}


def _report(loaded, target, untrained, machine, rows, accuracy, gpu, repeats, warmup) -> dict:
    model = loaded.model
    machine["load_average_after"] = list(psutil.getloadavg())
    return {
        "target": str(target),
        "untrained": untrained,
        "note": "untrained weights: latency does not depend on them; the test view is fixed "
        f"to {TEST_VIEW} (4 landmarks decoded)"
        if untrained
        else "",
        "machine": machine,
        "model": {
            "variant": model.variant,
            "depth": model.config.depth,
            "size": list(loaded.config.preprocess.size),
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "repeats": repeats,
        "warmup": warmup,
        "baseline": BASELINE,
        "backends": rows,
        "accuracy": accuracy,
        "gpu": gpu,
        "goals": _goals(rows, accuracy),
    }
