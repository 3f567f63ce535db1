"""The PBT model file ``model.pbt``: a joblib pickle (the trees hold scikit-learn estimators),
so load only files you trust, as with any pickle. Its header (format, version, taxonomy) is
checked like every abdus model file (``abdus.modelfile.check_header``); it records the config,
the feature bank, the trees, the shape priors and training statistics."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import joblib
import sklearn

from abdus import __version__
from abdus.baselines.haar import HaarFeatureBank
from abdus.baselines.pbt_config import PBTConfig
from abdus.baselines.pbt_detect import CrossPrior, PairPrior, PBTModel, TaskPrior
from abdus.errors import AbdusInputError
from abdus.io.atomic import atomic_path
from abdus.modelfile import PBT_NAME, check_header, taxonomy_header

FORMAT_NAME = "abdus-pbt"
FORMAT_VERSION = 1
MODEL_FILE = PBT_NAME


def save_pbt(model: PBTModel, path: str | Path) -> Path:
    """Write ``model`` to ``path`` (joblib pickle, atomically); returns the path."""
    bank = model.bank
    payload = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "abdus_version": __version__,
        "sklearn_version": sklearn.__version__,
        "taxonomy": taxonomy_header(),
        "config": model.config.to_dict(),
        "feature_bank": {
            "rects": bank.rects,
            "weights": bank.weights,
            "starts": bank.starts,
            "names": list(bank.names),
        },
        "trees": model.trees,
        "edges": model.edges,
        "priors": {
            name: {
                "pairs": {code: dataclasses.asdict(p) for code, p in prior.pairs.items()},
                "cross": None if prior.cross is None else dataclasses.asdict(prior.cross),
            }
            for name, prior in model.priors.items()
        },
        "training": model.training,
    }
    with atomic_path(path) as tmp:
        joblib.dump(payload, tmp)
    return Path(path)


def load_pbt(path: str | Path) -> PBTModel:
    """A model from ``model.pbt`` or a run folder holding it.

    AbdusInputError naming the file when it is missing, unreadable, not an abdus PBT model, from
    a newer abdus, or made for another taxonomy. The file is a pickle: load only trusted files.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise AbdusInputError("PBT model file not found", path)
    try:
        payload = joblib.load(path)
    except Exception as err:  # truncated or foreign file: one clear line, no traceback
        detail = " ".join(str(err).split())[:200]
        raise AbdusInputError(f"not a readable abdus PBT model ({detail})", path) from None
    check_header(
        payload, path, formats=(FORMAT_NAME,), version=FORMAT_VERSION, what="abdus PBT model"
    )
    bank = payload["feature_bank"]
    priors = {
        name: TaskPrior(
            {code: PairPrior(**p) for code, p in prior["pairs"].items()},
            None if prior["cross"] is None else CrossPrior(**prior["cross"]),
        )
        for name, prior in payload["priors"].items()
    }
    return PBTModel(
        config=PBTConfig.from_dict(payload["config"]),
        bank=HaarFeatureBank(bank["rects"], bank["weights"], bank["starts"], tuple(bank["names"])),
        trees=payload["trees"],
        priors=priors,
        edges=payload["edges"],
        training=payload["training"],
        source=str(path),
    )
