"""``abdus generate``: a synthetic cohort of virtual patients, as files a scanner writes.

Each patient (``sample_patient``) is scanned in every standard view (``scan_view``), ``others``
three times as often (different non-standard content each time), written as DICOM or PNG
(:mod:`abdus.phantom.writers`), read by simulated reader A (the reference) and, on a random
subset, by reader B (:mod:`abdus.phantom.readers`), and listed in ``manifest.json`` with the
noise-free truth. A ``contact_sheet.png`` shows one example per view (first patient).

Determinism: patient ``i`` draws everything from ``SeedSequence(seed).spawn(...)[i]`` (built
directly as ``SeedSequence(seed, spawn_key=(i,))``), and each image from its own child of it,
so files and manifest are the same bytes whatever ``jobs`` is, and reader B's subset does not
move reader A's draws. The manifest is written last, atomically: a cohort folder either has a
complete manifest or none.

Folder layout::

    OUT/.abdus-cohort                 marker: this folder was made by abdus generate
    OUT/images/P00001/IM_0001.dcm     (or .png) file names never reveal the view
    OUT/contact_sheet.png
    OUT/manifest.json
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # installed with scikit-learn
from tqdm import tqdm

from abdus import __version__
from abdus.errors import AbdusInputError
from abdus.io.atomic import atomic_write_json
from abdus.io.manifest import MANIFEST_NAME, ImageRecord, Manifest, Read, save_manifest
from abdus.phantom import writers
from abdus.phantom.contact_sheet import Tile, make_tile, write_contact_sheet
from abdus.phantom.readers import read_image, truth_read
from abdus.phantom.render import Scan, sample_patient, scan_view
from abdus.taxonomy import VIEW_NAMES

IMAGE_FORMATS = ("dicom", "png")
GENERATOR = "abdus generate"
MARKER_NAME = ".abdus-cohort"
CONTACT_SHEET_NAME = "contact_sheet.png"
IMAGES_DIR = "images"
OTHERS_FACTOR = 3  # `others` images per patient = 3 x images_per_view (varied content)
# Share of DICOM encodings, roughly a PACS mix of scanner exports.
DICOM_ENCODING_SHARE = {"rgb": 0.4, "monochrome2": 0.2, "jpeg_baseline": 0.4}


@dataclass(frozen=True)
class CohortConfig:
    """What defines a cohort's content (``jobs`` is not here: it never changes the result)."""

    patients: int
    seed: int
    image_format: str = "dicom"
    second_read_fraction: float = 0.3
    images_per_view: int = 1

    def check(self) -> None:
        """Raise AbdusInputError for an option out of range (CLI users see one line)."""
        if self.image_format not in IMAGE_FORMATS:
            valid = ", ".join(IMAGE_FORMATS)
            raise AbdusInputError(f"unknown format {self.image_format!r}; valid: {valid}")
        if self.patients < 1:
            raise AbdusInputError(f"--patients must be at least 1, got {self.patients}")
        if self.seed < 0:
            raise AbdusInputError(f"--seed must be >= 0, got {self.seed}")
        if not 0.0 <= self.second_read_fraction <= 1.0:
            fraction = self.second_read_fraction
            raise AbdusInputError(f"--second-read-fraction must be in 0..1, got {fraction}")
        if self.images_per_view < 1:
            raise AbdusInputError(f"images_per_view must be >= 1, got {self.images_per_view}")


@dataclass(frozen=True)
class PatientResult:
    """What one worker returns: the manifest records and, for the sheet, one tile per view."""

    records: list[ImageRecord]
    tiles: dict[str, Tile]


def patient_id_of(index: int) -> str:
    """Patient id of the ``index``-th (0-based) patient: P00001, P00002, ..."""
    return f"P{index + 1:05d}"


def views_of_patient(images_per_view: int = 1) -> list[str]:
    """The true view of each image of a patient, in acquisition order."""
    standard = [v for v in VIEW_NAMES if v != "others"]
    return [v for v in standard for _ in range(images_per_view)] + ["others"] * (
        OTHERS_FACTOR * images_per_view
    )


def _pick_encoding(rng: np.random.Generator) -> str:
    names = list(DICOM_ENCODING_SHARE)
    return names[int(rng.choice(len(names), p=list(DICOM_ENCODING_SHARE.values())))]


def _write_image(
    out: Path,
    scan: Scan,
    config: CohortConfig,
    patient_id: str,
    k: int,
    choice: np.random.Generator,
) -> tuple[str, str]:
    """Write image ``k`` of a patient; returns (relative file path, encoding)."""
    stem = f"{IMAGES_DIR}/{patient_id}/IM_{k + 1:04d}"
    if config.image_format == "png":
        writers.write_png(out / f"{stem}.png", scan)
        return f"{stem}.png", "png"
    encoding = _pick_encoding(choice)
    identity = writers.dicom_identity(config.seed, patient_id, k)
    writers.write_dicom(out / f"{stem}.dcm", scan, identity, encoding)
    return f"{stem}.dcm", encoding


def _json_ready(value: Any) -> Any:
    """``value`` with numpy scalars/arrays and tuples turned into plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _record(
    scan: Scan, file: str, encoding: str, patient_id: str, k: int, reads: tuple[Read, Read | None]
) -> ImageRecord:
    """The manifest record of image ``k``: reads = (reader A, reader B or None)."""
    reference, second = reads
    spacing = float(scan.spacing_mm)
    meta = {
        "displayed_label": scan.displayed_label,
        "truth_measurements_mm": _json_ready(scan.truth_measurements_mm),
        "spacing_mm": spacing,
        "region_box": [int(v) for v in scan.region_box],
        "depth_origin": [float(v) for v in scan.depth_origin],
        "encoding": encoding,
        "acquisition": _json_ready(scan.acquisition),
    }
    return ImageRecord(
        id=f"{patient_id}_{k + 1:04d}",
        file=file,
        patient_id=patient_id,
        reference=reference,
        second_read=second,
        truth=truth_read(scan),
        spacing_mm=(spacing, spacing) if encoding == "png" else None,
        overlay_boxes=tuple(tuple(int(v) for v in box) for box in scan.overlay_boxes),
        size=(int(scan.screen.shape[0]), int(scan.screen.shape[1])),
        meta=meta,
    )


def generate_patient(index: int, config: CohortConfig, out: Path, tiles: bool) -> PatientResult:
    """Scan, write and read every image of patient ``index``; ``tiles``: also make sheet tiles."""
    patient_id = patient_id_of(index)
    views = views_of_patient(config.images_per_view)
    anatomy_seq, *image_seqs = np.random.SeedSequence(config.seed, spawn_key=(index,)).spawn(
        1 + len(views)
    )
    anatomy = sample_patient(np.random.default_rng(anatomy_seq), patient_id)
    records, sheet = [], {}
    for k, (view, seq) in enumerate(zip(views, image_seqs, strict=True)):
        render_rng, a_rng, b_rng, choice = (np.random.default_rng(s) for s in seq.spawn(4))
        scan = scan_view(anatomy, view, render_rng)
        second = choice.random() < config.second_read_fraction  # first draw: nested subsets
        file, encoding = _write_image(out, scan, config, patient_id, k, choice)
        reads = (read_image(scan, "A", a_rng), read_image(scan, "B", b_rng) if second else None)
        records.append(_record(scan, file, encoding, patient_id, k, reads))
        if tiles and view not in sheet:
            sheet[view] = make_tile(scan.screen, view, scan.truth_landmarks)
    return PatientResult(records=records, tiles=sheet)


# --------------------------------------------------------------------------- output folder


def _is_cohort(out: Path) -> bool:
    """True when ``out`` was made by abdus generate (marker, or a manifest that says so)."""
    if (out / MARKER_NAME).is_file():
        return True
    try:
        meta = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8")).get("meta", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(meta, dict) and meta.get("generator") == GENERATOR


def prepare_output(out: Path) -> None:
    """Make ``out`` ready: new, empty, or a previous cohort (whose files are removed).

    The old manifest goes first, so no manifest ever points at files being replaced. Files
    that abdus did not write (anything but the marker, manifest, sheet and images/) stay.
    """
    if out.exists() and not out.is_dir():
        raise AbdusInputError("exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()):
        if not _is_cohort(out):
            raise AbdusInputError(
                "folder is not empty and is not an abdus cohort; give a new or empty folder", out
            )
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        (out / CONTACT_SHEET_NAME).unlink(missing_ok=True)
        shutil.rmtree(out / IMAGES_DIR, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / MARKER_NAME, {"generator": GENERATOR, "version": __version__})


# --------------------------------------------------------------------------- parallel run


def _limit_worker_threads() -> None:
    """One BLAS/OpenMP thread per worker process: the processes are the parallelism."""
    threadpool_limits(1)


def _patient_results(config: CohortConfig, out: Path, jobs: int) -> Iterator[PatientResult]:
    """Results in patient order, computed in ``jobs`` processes."""
    work = functools.partial(_generate_indexed, config=config, out=out)
    if jobs == 1:
        yield from map(work, range(config.patients))
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with context.Pool(jobs, initializer=_limit_worker_threads) as pool:
        yield from pool.imap(work, range(config.patients), chunksize=1)


def _generate_indexed(index: int, config: CohortConfig, out: Path) -> PatientResult:
    return generate_patient(index, config, out, tiles=index == 0)


def generate_cohort(
    out: str | Path,
    *,
    patients: int,
    seed: int,
    image_format: str = "dicom",
    jobs: int = 1,
    second_read_fraction: float = 0.3,
    images_per_view: int | None = None,
    progress: bool = True,
) -> Manifest:
    """Write a synthetic cohort into ``out`` and return its manifest.

    ``patients`` virtual patients, each scanned ``images_per_view`` times (default 1) in every
    standard view and 3x as often in ``others``; ``image_format`` "dicom" or "png";
    ``second_read_fraction`` of images (0..1) also read by reader B; ``jobs`` worker processes
    (the result does not depend on it). Raises AbdusInputError for bad options or an output
    folder that is neither new, empty, nor a previous cohort.
    """
    config = CohortConfig(
        patients=int(patients),
        seed=int(seed),
        image_format=image_format,
        second_read_fraction=float(second_read_fraction),
        images_per_view=1 if images_per_view is None else int(images_per_view),
    )
    config.check()
    if jobs < 1:
        raise AbdusInputError(f"--jobs must be at least 1, got {jobs}")
    root = Path(out)
    prepare_output(root)
    records: list[ImageRecord] = []
    tiles: dict[str, Tile] = {}
    total = config.patients * len(views_of_patient(config.images_per_view))
    with tqdm(total=total, unit="img", desc="generate", disable=not progress) as bar:
        for result in _patient_results(config, root, min(jobs, config.patients)):
            records.extend(result.records)
            tiles = tiles or result.tiles
            bar.update(len(result.records))
    write_contact_sheet(root / CONTACT_SHEET_NAME, [tiles[v] for v in VIEW_NAMES if v in tiles])
    meta = {"generator": GENERATOR, "abdus_version": __version__, **asdict(config)}
    name = f"abdus synthetic cohort (seed {config.seed})"  # not the folder: bytes stay the same
    manifest = Manifest(root=root, records=records, name=name, meta=meta)
    save_manifest(manifest, root / MANIFEST_NAME)
    return manifest
