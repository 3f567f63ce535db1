import json

import pytest

from abdus.baselines.pbt import train_pbt
from abdus.errors import AbdusInputError
from abdus.evaluation.evaluate import evaluate_run
from abdus.inference.predict import run_predict
from abdus.phantom.generate import generate_cohort


@pytest.fixture(scope="module")
def pbt_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pbt")
    generate_cohort(root / "data", patients=3, seed=2, image_format="dicom", jobs=1, progress=False)
    train_pbt(root / "data", root / "run", preset="tiny")
    return root


def test_predict_runs_the_pbt_baseline_with_a_given_view(pbt_run):
    files = sorted((pbt_run / "data" / "images").rglob("*.dcm"))[:2]
    out = pbt_run / "pred"
    assert run_predict(pbt_run / "run", files, out, view="kidney_right_long") == 0
    record = json.loads(next(out.glob("*.json")).read_text())
    assert set(record["landmarks"]) == {"kl_la_1", "kl_la_2"}
    assert record["measurements_mm"]["KL_LA"] > 0
    assert record["view_source"] == "given"
    with pytest.raises(AbdusInputError, match="view"):
        run_predict(pbt_run / "run", files, pbt_run / "pred2")


def test_evaluate_scores_a_pbt_run_like_the_networks(pbt_run):
    metrics = evaluate_run(pbt_run / "run", pbt_run / "data", split="all")
    assert metrics["model"] == "pbt"
    assert metrics["measurement_mae_mm"]  # measured on the reference views' tasks
    assert "view_accuracy" not in metrics  # PBT does not classify views
    assert (pbt_run / "run" / "evaluation" / "metrics.json").is_file()
