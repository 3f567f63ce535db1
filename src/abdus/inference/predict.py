"""``abdus predict``: run a model on scanner files and write JSON, CSV, overlays and DICOM SR.

Inputs are DICOM (single / multi-frame, any encoding the reader decodes), PNG and JPEG files and
folders of them (recursive, in sorted path order). Every frame of a file, and with multi-region
DICOM every 2-D tissue region of a frame, is one image. Per image: ``<name>.json`` (see
``outputs.prediction_record``), with ``--overlay`` ``<name>.png``, with ``--sr`` and a DICOM
input ``<name>.sr.dcm`` (TID 1500, ``abdus.io.sr``). ``predictions.csv`` lists the batch.

A file or image that fails does not stop the batch: its JSON and CSV row carry a one-line error,
stderr gets ``error: <path>: <problem>``, and the exit code is 1 at the end. What the reader
warns about a file (not an ultrasound image, no pixel spacing, a clipped region, ...) goes to
stderr as one line ``warning: <path>: <warning>; ...`` per file, and into each image's JSON.
Images are preprocessed one by one and run through the network ``batch_size`` at a time; only
the heat maps of each image's view task are decoded (the others are not reported).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import torch

from abdus.choices import check_backend_option
from abdus.data.preprocess import PreprocessedImage, preprocess_image
from abdus.errors import AbdusInputError
from abdus.inference.backends import bf16_supported
from abdus.inference.loading import open_predictor
from abdus.inference.outputs import (
    CSV_NAME,
    UniqueNames,
    csv_row,
    error_record,
    image_name,
    measured_calipers,
    prediction_record,
    source_json,
    withheld_measurements,
    write_csv,
    write_overlay,
    write_record,
)
from abdus.inference.predictor import BasePredictor, Prediction, as_batch
from abdus.io.reader import read_any, sniff_format
from abdus.io.sr import CaliperMeasurement, write_sr
from abdus.io.types import UltrasoundImage
from abdus.modelfile import is_pbt_model
from abdus.progress import progress
from abdus.taxonomy import view_by_name

# Suffixes that mark a file in a folder as meant to be an image even when it cannot be read.
IMAGE_SUFFIXES = (".dcm", ".dicom", ".dic", ".png", ".jpg", ".jpeg")
SR_SUFFIX = ".sr.dcm"
NON_IMAGE_MODALITIES = ("SR", "KO", "PR", "DOC", "REG")


def _is_image_file(path: Path) -> bool:
    """Whether a file found in a folder is an image to predict on (see ``collect_inputs``)."""
    try:
        kind = sniff_format(path)
    except AbdusInputError:
        return path.suffix.lower() in IMAGE_SUFFIXES  # broken image: keep it, to report it
    if kind != "dicom":
        return True
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # a damaged DICOM: keep it, to report it
        return True
    # Documents that are not images (SR, ours included; DICOMDIR; key objects) are skipped.
    document = "ContentSequence" in header or "DirectoryRecordSequence" in header
    return not (document or str(header.get("Modality", "")) in NON_IMAGE_MODALITIES)


def collect_inputs(inputs: Sequence[str | Path], *, exclude: Path | None = None) -> list[Path]:
    """The files to predict on, in order: given files as given, folders walked recursively in
    sorted order (hidden entries and anything under ``exclude`` left out; a folder's non-image
    files such as manifests and SR documents are skipped, not reported)."""
    skip = exclude.resolve() if exclude is not None else None
    files: list[Path] = []
    for given in inputs:
        path = Path(given)
        if not path.is_dir():
            files.append(path)
            continue
        for found in sorted(path.rglob("*")):
            parts = found.relative_to(path).parts
            if any(p.startswith(".") for p in parts) or not found.is_file():
                continue
            if skip is not None and found.resolve().is_relative_to(skip):
                continue
            if _is_image_file(found):
                files.append(found)
    unique = list(dict.fromkeys(files))
    if not unique:
        raise AbdusInputError("no DICOM, PNG or JPEG files in the inputs")
    return unique


def one_line(err: BaseException) -> tuple[str, str | None]:
    """(problem, path) of an error, the problem on one line without the path prefix."""
    if isinstance(err, AbdusInputError):
        text, path = str(err), err.path
        if path and text.startswith(f"{path}: "):
            text = text[len(path) + 2 :]
    else:
        text, path = f"{type(err).__name__}: {err}", None
    return " ".join(text.split())[:500], path


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


# (name, source file, image, prediction, output folder): writes one more output of an image.
ExtraOutput = Callable[[str, Path, UltrasoundImage, Prediction, Path], None]


@dataclass
class ImageResult:
    """What ``PredictSession`` wrote for one image: its ``name``, its JSON ``record`` and the
    files it wrote into the output folder (JSON last)."""

    name: str
    record: dict[str, Any]
    files: list[Path] = field(default_factory=list)


@dataclass
class _Item:
    """One image waiting for the network."""

    name: str
    path: Path
    image: UltrasoundImage
    region: int | None
    pre: PreprocessedImage
    is_dicom: bool


class PredictSession:
    """Accumulates images into batches and writes every output (see module doc)."""

    def __init__(
        self,
        predictor: BasePredictor,
        out: Path,
        *,
        overlay: bool = False,
        sr: bool = False,
        view: str | None = None,
        batch_size: int = 8,
        say: Callable[[str], None] = _to_stderr,
        extra_output: ExtraOutput | None = None,
    ) -> None:
        """``say`` gets each one-line error / warning (default: stderr); ``extra_output`` is
        called for every predicted image after its SR, before its JSON."""
        self.predictor, self.out = predictor, out
        self.overlay, self.sr, self.view, self.batch_size = overlay, sr, view, batch_size
        self.say, self.extra_output = say, extra_output
        self.results: list[ImageResult] = []  # every image's outcome, in completion order
        self.names = UniqueNames()
        self.order: dict[str, int] = {}  # name -> position in input order (for the CSV)
        self.rows: list[dict[str, Any]] = []
        self.pending: list[_Item] = []
        self.images = self.failed = 0

    def _name(self, wanted: str) -> str:
        name = self.names.take(wanted)
        self.order[name] = len(self.order)
        return name

    def sorted_rows(self) -> list[dict[str, Any]]:
        """CSV rows in input order (failures are reported before their batch runs)."""
        return sorted(self.rows, key=lambda row: self.order[row["name"]])

    def _meta(self) -> dict[str, str]:
        return {"model_id": self.predictor.model_id, "backend": self.predictor.name}

    def fail(self, name: str, source: dict[str, Any], err: BaseException) -> None:
        """Report an image or file that failed: stderr line, error JSON, CSV row."""
        problem, path = one_line(err)
        self.say(f"error: {path or source['file']}: {problem}")
        record = error_record(source, problem, **self._meta())
        self.failed += 1
        self.rows.append(csv_row(name, record))
        result = ImageResult(name, record)
        self.results.append(result)
        try:
            write_record(self.out / f"{name}.json", record)
            result.files.append(self.out / f"{name}.json")
        except OSError as write_err:  # the output folder itself is broken: say so, go on
            self.say(f"error: {self.out / name}.json: {write_err}")

    def add_file(self, path: Path, spacing_mm: float | None) -> None:
        """Read a file and queue its images (running full batches)."""
        try:
            is_dicom = sniff_format(path) == "dicom"
            images = read_any(
                path, spacing_mm=spacing_mm, spacing_source="user", split_regions=True
            )
        except Exception as err:  # any failure of one file is reported, not raised
            name = self._name(path.stem or path.name)
            self.fail(name, source_json(path, None, None), err)
            return
        warn_file(path, images, say=self.say)
        frames = len({im.frame for im in images})
        for image in images:
            same_frame = [im for im in images if im.frame == image.frame]
            region = next(i for i, im in enumerate(same_frame) if im is image)
            region = region if image.region is not None else None
            name = self._name(image_name(path.stem, image.frame, region, frames, len(same_frame)))
            try:
                pre = preprocess_image(image, self.predictor.preprocess)
            except Exception as err:
                self.fail(name, source_json(path, image, region), err)
                continue
            self.pending.append(_Item(name, path, image, region, pre, is_dicom))
            if len(self.pending) >= self.batch_size:
                self.flush()

    def flush(self) -> None:
        """Run the network on the queued images and write their outputs."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        views = [self.view] * len(batch) if self.view else None
        try:
            outputs = self.predictor.run_network(
                *as_batch([item.pre for item in batch]), views=views, task_only=True
            )
        except Exception as err:
            for item in batch:
                self.fail(item.name, source_json(item.path, item.image, item.region), err)
            return
        for item, output in zip(batch, outputs, strict=True):
            try:
                self._write(item, output)
            except Exception as err:
                self.fail(item.name, source_json(item.path, item.image, item.region), err)

    def _write(self, item: _Item, output: Any) -> None:
        """Interpret one network output and write its JSON (and overlay, SR, CSV row).

        A failed SR is an error of that image (stderr, ``error`` field, exit code 1) but its
        prediction is still written.
        """
        prediction = self.predictor.interpret(output, item.pre, item.image, view=self.view)
        if self.sr and not item.is_dicom:
            prediction.warnings.append("no SR written: the input is not a DICOM file")
        source = source_json(item.path, item.image, item.region)
        record = prediction_record(prediction, source, **self._meta())
        result = ImageResult(item.name, record)
        if self.sr and item.is_dicom:
            try:
                self._write_sr(item, prediction)
                result.files.append(self.out / f"{item.name}{SR_SUFFIX}")
            except Exception as err:  # the prediction stands; only its SR is missing
                problem, _ = one_line(err)
                record["error"] = f"SR not written: {problem}"
                self.say(f"error: {item.path}: {record['error']}")
                self.failed += 1
        if self.overlay:
            write_overlay(self.out / f"{item.name}.png", item.image, prediction)
            result.files.append(self.out / f"{item.name}.png")
        if self.extra_output is not None:
            self.extra_output(item.name, item.path, item.image, prediction, self.out)
        write_record(self.out / f"{item.name}.json", record)
        result.files.append(self.out / f"{item.name}.json")
        self.results.append(result)
        self.rows.append(csv_row(item.name, record))
        self.images += 1

    def _write_sr(self, item: _Item, prediction: Any) -> None:
        calipers = [CaliperMeasurement(*c) for c in measured_calipers(prediction)]
        write_sr(
            self.out / f"{item.name}{SR_SUFFIX}",
            item.path,
            calipers,
            view=prediction.view,
            frame=item.image.frame,
            model_id=self.predictor.model_id,
            withheld=withheld_measurements(prediction),
        )


def _check_options(backend: str, view: str | None, batch_size: int, bf16: bool) -> None:
    check_backend_option(backend)
    if view is not None:
        try:
            view_by_name(view)
        except ValueError as err:
            raise AbdusInputError(str(err)) from None
    if batch_size < 1:
        raise AbdusInputError(f"--batch-size must be at least 1, got {batch_size}")
    if bf16 and backend != "torch":
        raise AbdusInputError("--bf16 applies to --backend torch only")


def resolve_device(device: str | None) -> torch.device:
    """The torch device for ``device``: None / "auto" (the GPU when there is one, else the
    CPU), "cpu", "cuda" or "cuda:N"; AbdusInputError for anything else or absent CUDA."""
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError:
        chosen = None
    if chosen is None or chosen.type not in ("cpu", "cuda"):
        raise AbdusInputError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise AbdusInputError(f"device {device!r} requested but CUDA is not available")
    if chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise AbdusInputError(f"no GPU {chosen.index}: {torch.cuda.device_count()} found")
    return chosen


def _load_predictor(
    model: str | Path, backend: str, bf16: bool, device: str | None = None
) -> BasePredictor:
    """``open_predictor`` on ``resolve_device(device)``; "auto" puts the PBT baseline, which
    runs on the CPU only, on the CPU."""
    auto = (device or "auto").strip().lower() == "auto"
    where = "cpu" if auto and is_pbt_model(model) else resolve_device(device)
    return open_predictor(model, backend=backend, bf16=bf16, device=where)


def warn_file(
    path: Path, images: Sequence[UltrasoundImage], say: Callable[[str], None] = _to_stderr
) -> None:
    """One line (to ``say``, default stderr) with what the reader warned about ``path`` (each
    warning once, over all its frames and regions); nothing when it warned about nothing."""
    warnings = list(dict.fromkeys(w for image in images for w in image.warnings))
    if warnings:
        text = " ".join("; ".join(warnings).split())
        say(f"warning: {path}: {text}")


def predict_file(
    predictor: BasePredictor,
    path: Path,
    out: Path,
    *,
    sr: bool = False,
    overlay: bool = False,
    spacing_mm: float | None = None,
    view: str | None = None,
    say: Callable[[str], None] = _to_stderr,
    extra_output: ExtraOutput | None = None,
) -> list[ImageResult]:
    """Run ``abdus predict`` on one file into the folder ``out`` (which must exist): the same
    outputs, names and per-image errors as a batch holding only this file, without the CSV.
    Returns each image's result in image order (services use this; ``abdus serve``)."""
    session = PredictSession(
        predictor, out, overlay=overlay, sr=sr, view=view, say=say, extra_output=extra_output
    )
    session.add_file(path, spacing_mm)
    session.flush()
    return sorted(session.results, key=lambda result: session.order[result.name])


def run_predict(
    model: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    spacing_mm: float | None = None,
    overlay: bool = False,
    sr: bool = False,
    backend: str = "auto",
    bf16: bool = False,
    view: str | None = None,
    batch_size: int = 8,
    device: str | None = None,
) -> int:
    """Predict on every image of ``inputs`` into the folder ``out``; returns the exit code.

    ``model``: run folder, ``model.pt`` or abdus ``.onnx``. ``spacing_mm``: mm per pixel for
    files without calibration (else their measurements are null, with the reason). ``view``: a
    view name that replaces the classifier (needed for models without one). ``device``: "cpu",
    "cuda", "cuda:N" or None / "auto" (the GPU when there is one; a PBT model runs on the
    CPU). Returns 0 when
    every image was predicted, 1 when any file or image failed (each one reported on stderr).
    Bad options, a bad model or no input files raise AbdusInputError.
    """
    _check_options(backend, view, batch_size, bf16)
    where = resolve_device(device)  # a bad --device fails before any file is read
    if spacing_mm is not None and not spacing_mm > 0:
        raise AbdusInputError(f"--spacing-mm must be positive, got {spacing_mm}")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise AbdusInputError("the output exists and is not a folder", out_dir)
    files = collect_inputs(inputs, exclude=out_dir)
    if bf16 and where.type == "cpu" and not bf16_supported("cpu"):
        raise AbdusInputError(
            "--bf16: this CPU has no native bfloat16 (no AVX512_BF16 or AMX), where bf16 runs "
            "3-4x slower than fp32; leave --backend auto to get the fastest exact backend"
        )
    predictor = _load_predictor(model, backend, bf16, device)
    if predictor.backend_choice is not None:
        print(predictor.backend_choice.describe())
    if not predictor.classifies and view is None:
        raise AbdusInputError("this model has no view classifier: give the view (--view)", model)
    out_dir.mkdir(parents=True, exist_ok=True)
    session = PredictSession(
        predictor, out_dir, overlay=overlay, sr=sr, view=view, batch_size=batch_size
    )
    for path in progress(files, "predict", total=len(files), unit="file"):
        session.add_file(path, spacing_mm)
    session.flush()
    write_csv(out_dir / CSV_NAME, session.sorted_rows())
    print(
        f"{session.images} image(s) from {len(files)} file(s) predicted into {out_dir}"
        + (f"; {session.failed} failed" if session.failed else "")
    )
    return 1 if session.failed else 0
