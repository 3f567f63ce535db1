"""The ``abdus`` command line. Thin: it parses, then calls one typed function per command.

User mistakes (bad files, bad options) print one line ``error: ...`` and exit with status 2;
nothing the user had is overwritten.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from abdus import __version__
from abdus.allocator import keep_freed_memory
from abdus.choices import ABLATION_ORDER, BACKEND_CHOICES, MODELS, PRESETS
from abdus.errors import AbdusInputError

RESNET_DEPTHS = ("resnet18", "resnet34", "resnet50")  # abdus.models.encoder.RESNET_SPECS
DEVICE_HELP = "cpu, cuda or cuda:N (default: auto, the GPU when there is one)"
PRESET_HELP = "tiny (tests), demo (minutes on a CPU) or paper (the published scale; a GPU)"
DATA_HELP = "dataset folder (with manifest.json) or manifest path"
# Batch commands: their C heap keeps freed memory for the next step (abdus.allocator); the
# services (serve, review) and info keep glibc's defaults.
HEAP_KEEPING_COMMANDS = frozenset(
    (
        "generate",
        "train",
        "distill",
        "evaluate",
        "reproduce",
        "predict",
        "export",
        "benchmark",
        "demo",
    )
)


def _call(target: str, args: argparse.Namespace, positional: str, keywords: str = "") -> Any:
    """Call ``module:function`` with attributes of ``args``: ``positional`` names them in order,
    ``keywords`` as ``name`` or ``parameter=attribute`` (space-separated). The module is imported
    only now, so the parser (and ``--help``) starts without PyTorch."""
    module, name = target.split(":")
    function = getattr(importlib.import_module(module), name)
    pairs = [keyword.partition("=") for keyword in keywords.split()]
    named = {parameter: getattr(args, attribute or parameter) for parameter, _, attribute in pairs}
    return function(*(getattr(args, a) for a in positional.split()), **named)


def _cmd_info(args: argparse.Namespace) -> int:
    return _call("abdus.io.info:run_info", args, "files", "as_json=json spacing_mm")


def _cmd_generate(args: argparse.Namespace) -> int:
    keywords = "patients seed image_format=format jobs second_read_fraction"
    _call("abdus.phantom.generate:generate_cohort", args, "out", keywords)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    # Every model, the PBT baseline included.
    keywords = "model preset config resume device seed"
    run = _call("abdus.training.trainer:train", args, "data out", keywords)
    print(f"run folder: {run}")
    return 0


def _cmd_distill(args: argparse.Namespace) -> int:
    keywords = "widths depth alpha temperature epochs_scale device resume"
    run = _call("abdus.training.distill:distill", args, "teacher data out", keywords)
    print(f"student run folder: {run} (evaluate it with: abdus evaluate {run} --data DATA)")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from abdus.evaluation.evaluate import evaluate_run

    metrics = evaluate_run(args.run, args.data, split=args.split, out=args.out, device=args.device)
    out = args.out or f"{args.run}/evaluation"
    accuracy = metrics.get("view_accuracy")
    views = "n/a (the model does not classify views)" if accuracy is None else f"{accuracy:.4f}"
    print(f"view accuracy {views}; metrics and report in {out}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from abdus.evaluation.ablation import reproduce

    reproduce(args.data, args.out, preset=args.preset, models=args.models, device=args.device)
    print(f"Table 1, Fig. 3 and sizes in {args.out} (reproduce.md, reproduce.html)")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    keywords = "spacing_mm overlay sr backend bf16 view batch_size device"
    return _call("abdus.inference.predict:run_predict", args, "model inputs out", keywords)


def _cmd_serve(args: argparse.Namespace) -> int:
    keywords = (
        "ae_title dicom_port allow_ae forward http_port host token_file backend workers "
        "secondary_capture retries retry_delay max_upload_mb device"
    )
    return _call("abdus.service.serve:run_serve", args, "model spool", keywords)


def _cmd_review(args: argparse.Namespace) -> int:
    keywords = "port host token_file reviewer"
    return _call("abdus.review.app:run_review", args, "source out", keywords)


def _cmd_export(args: argparse.Namespace) -> int:
    from abdus.inference.compare import format_cost

    if args.int8 and args.data is None:
        raise AbdusInputError("--int8 needs --data DATA (the dataset that calibrates it)")
    keywords = "int8 calibration=data calibration_images check_images"
    report = _call("abdus.inference.export_command:export_onnx", args, "run out", keywords)
    cost = report.pop("int8_cost", None)
    for key, value in report.items():
        print(f"{key}: {value}")
    if cost is not None:
        print(f"int8 cost: {format_cost(cost)}")
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    keywords = "as_json=json repeats warmup backends size depth widths data"
    _call("abdus.inference.benchmark:run_benchmark", args, "target", keywords)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from abdus.demo import run_new_demo

    patients = {} if args.patients is None else {"patients": args.patients}
    run_new_demo(args.out, preset=args.preset, seed=args.seed, **patients)
    return 0


def _encoder_options(p: argparse.ArgumentParser, *, depth: str, widths: str) -> None:
    """``--depth`` and ``--widths`` of an encoder (``abdus.models.ModelConfig``)."""
    p.add_argument("--depth", default=None, choices=RESNET_DEPTHS, help=depth)
    p.add_argument("--widths", type=int, nargs=4, default=None, metavar="W", help=widths)


def _hidden_alias(parser: argparse.ArgumentParser, flag: str, *, dest: str) -> None:
    """An old spelling of an option: still accepted (scripts keep working), not in --help."""
    parser.add_argument(flag, dest=dest, default=None, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every abdus command."""
    parser = argparse.ArgumentParser(
        prog="abdus",
        description="Abdominal ultrasound view classification and caliper measurement.",
    )
    parser.add_argument("--version", action="version", version=f"abdus {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="one of the commands below"
    )

    p = sub.add_parser("info", help="what a file holds: size, frames, regions, spacing (mm)")
    p.add_argument("files", nargs="+", metavar="FILE", help="DICOM, PNG or JPEG files")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--spacing-mm", type=float, default=None, help="spacing to use when a file has none (mm/px)"
    )
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("generate", help="write a synthetic cohort with exact ground truth")
    p.add_argument("out", metavar="OUT", help="output dataset folder (must be new or empty)")
    p.add_argument("--patients", type=int, default=20, help="virtual patients (default 20)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    p.add_argument(
        "--format",
        choices=("dicom", "png"),
        default="dicom",
        help="ultrasound DICOM, or PNG with the spacing in the manifest (default dicom)",
    )
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    second_reads = "share of images that reader B also reads (0..1)"
    p.add_argument("--second-read-fraction", type=float, default=0.3, help=second_reads)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser(
        "train", help="train a model on a dataset (the paper's two stages, an optional refit)"
    )
    p.add_argument("data", metavar="DATA", help=DATA_HELP)
    p.add_argument("--out", required=True, help="run folder (new, or existing with --resume)")
    p.add_argument(
        "--model", default="mgcn_r", choices=MODELS, help="network variant or PBT (default mgcn_r)"
    )
    p.add_argument("--preset", default="demo", choices=PRESETS, help=PRESET_HELP)
    p.add_argument("--config", default=None, help="YAML file overriding preset fields")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument(
        "--seed", type=int, default=None, help="split, initial weights and data order (default 0)"
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("distill", help="train a smaller network taught by a trained one")
    p.add_argument("teacher", metavar="RUN", help="the teacher: run folder or model.pt")
    p.add_argument("--data", required=True, help=DATA_HELP + " (the teacher's, same split)")
    p.add_argument("--out", required=True, help="the student's run folder (new, or --resume)")
    _encoder_options(
        p,
        depth="the student's ResNet depth (default: the teacher's)",
        widths="the student's encoder stage widths (default: half the teacher's)",
    )
    p.add_argument(
        "--alpha", type=float, default=0.5, help="weight of the teacher against the labels (0-1)"
    )
    p.add_argument(
        "--temperature", type=float, default=2.0, help="softens the logits in the view stage"
    )
    p.add_argument(
        "--epochs-scale", type=float, default=None, help="multiplies every stage's epochs"
    )
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--resume", action="store_true", help="continue from the student's checkpoint")
    p.set_defaults(func=_cmd_distill)

    p = sub.add_parser("evaluate", help="metrics.json and a report for a trained run")
    p.add_argument("run", metavar="RUN", help="run folder (with model.pt)")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument(
        "--split",
        default="test",
        choices=("test", "val", "train", "all"),
        help="the run's patient-level split to score (default test: patients never seen)",
    )
    p.add_argument("--out", default=None, help="output folder (default RUN/evaluation)")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("reproduce", help="train and evaluate every variant: Table 1 and Fig. 3")
    p.add_argument("data", metavar="DATA", help=DATA_HELP)
    p.add_argument("--out", required=True, help="output folder (one run folder per model)")
    p.add_argument("--preset", default="demo", choices=PRESETS, help=PRESET_HELP)
    p.add_argument(
        "--models",
        nargs="+",
        default=list(ABLATION_ORDER),
        choices=ABLATION_ORDER,
        help="which variants (default: all)",
    )
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("predict", help="view, calipers and measurements (mm) for files")
    p.add_argument("model", metavar="RUN_OR_MODEL", help="run folder, model.pt or model.onnx")
    p.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="DICOM, PNG or JPEG files, or folders of them"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--spacing-mm", type=float, default=None, help="mm/px for files with none")
    p.add_argument("--overlay", action="store_true", help="also write overlay PNGs")
    p.add_argument("--sr", action="store_true", help="also write DICOM SR (TID 1500) files")
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKEND_CHOICES,
        help="auto (default: the fastest backend measured exact enough on this CPU; it says "
        "which and why), torch, onnx or onnx-int8 (the .onnx beside the model, or given)",
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 autocast (--backend torch; refused on a CPU without native bfloat16)",
    )
    p.add_argument("--view", default=None, help="use this view instead of the classifier")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="ONNX model (optionally static INT8) for deployment")
    p.add_argument("run", metavar="RUN", help="run folder or model.pt")
    p.add_argument("--out", required=True, help="output .onnx path")
    p.add_argument("--int8", action="store_true", help="static INT8 quantisation (QDQ)")
    p.add_argument(
        "--data",
        default=None,
        help="dataset: its train split calibrates INT8, its validation split checks it (--int8)",
    )
    _hidden_alias(p, "--calibration", dest="data")
    p.add_argument(
        "--calibration-images",
        type=int,
        default=32,
        help="train-split images of DATA that calibrate INT8 (default 32)",
    )
    check = "validation-split images of DATA on which INT8 is compared with fp32 (0: skip)"
    p.add_argument("--check-images", type=int, default=200, help=check)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("benchmark", help="end-to-end latency of each backend, side by side")
    p.add_argument(
        "target",
        metavar="RUN_OR_PRESET",
        help="run folder, model file, or a preset name (tiny|demo|paper)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per backend")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first, per backend")
    p.add_argument("--backends", nargs="+", default=None, help="subset of backends")
    p.add_argument("--size", type=int, default=None, help="input side (model px)")
    _encoder_options(
        p,
        depth="encoder of a preset's untrained model (default: the preset's)",
        widths="a preset's encoder stage widths (e.g. a distilled student's: 32 64 128 256)",
    )
    p.add_argument("--data", default=None, help="dataset to measure accuracy change on")
    p.set_defaults(func=_cmd_benchmark)

    p = sub.add_parser("serve", help="DICOM node and REST service: predict on what is sent")
    p.add_argument("model", metavar="RUN_OR_MODEL", help="run folder, model.pt or model.onnx")
    p.add_argument("--spool", required=True, help="spool folder: received, results, outbox")
    p.add_argument("--ae-title", default="ABDUS", help="this node's AE title (default ABDUS)")
    p.add_argument("--dicom-port", type=int, default=11112, help="DICOM port (0: any free)")
    p.add_argument(
        "--allow-ae",
        action="extend",
        nargs="+",
        default=[],
        metavar="AET",
        help="accept only these calling AEs",
    )
    p.add_argument(
        "--forward",
        action="extend",
        nargs="+",
        default=[],
        metavar="AET@HOST:PORT",
        help="C-STORE every result (SR, SC) to these nodes",
    )
    p.add_argument("--http-port", type=int, default=8080, help="REST port (0: any free)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default loopback)")
    p.add_argument("--token-file", default=None, help="bearer token file (needed off loopback)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKEND_CHOICES,
        help="auto (default: picked for this CPU and model, logged), torch, onnx or onnx-int8",
    )
    p.add_argument("--workers", type=int, default=1, help="processing threads (default 1)")
    p.add_argument(
        "--secondary-capture", action="store_true", help="also write and forward an SC image"
    )
    p.add_argument("--retries", type=int, default=5, help="forward retries per result")
    p.add_argument("--retry-delay", type=float, default=1.0, help="first retry delay (s), doubling")
    p.add_argument("--max-upload-mb", type=float, default=64.0, help="POST /predict size limit")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("review", help="browser page to check and correct calipers")
    p.add_argument("source", metavar="SOURCE", help="abdus predict output folder, or a dataset")
    p.add_argument("--out", required=True, metavar="REVIEWED", help="reviewed dataset folder")
    p.add_argument("--port", type=int, default=8765, help="HTTP port (default 8765; 0: any free)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default loopback)")
    p.add_argument("--token-file", default=None, help="bearer token file (needed off loopback)")
    p.add_argument("--reviewer", default=None, help="reviewer name (default: the login name)")
    p.set_defaults(func=_cmd_review)

    p = sub.add_parser("demo", help="generate, train, evaluate and report on synthetic data")
    p.add_argument(
        "--out",
        default="runs/demo",
        help="demo folder (default runs/demo): each run in OUT/runs/N, the cohort in "
        "OUT/cohorts/ (reused while seed, patients and generator match)",
    )
    p.add_argument("--patients", type=int, default=None, help="synthetic patients (default 320)")
    p.add_argument("--preset", default="demo", choices=PRESETS, help=PRESET_HELP)
    p.add_argument("--seed", type=int, default=0, help="cohort, split and training seed")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``abdus`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in HEAP_KEEPING_COMMANDS:
        keep_freed_memory()
    try:
        return int(args.func(args) or 0)
    except AbdusInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
