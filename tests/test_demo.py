import json
from pathlib import Path

import pytest

from abdus.cli import main
from abdus.demo import (
    cohort_differences,
    demo_cohort_settings,
    format_summary,
    run_demo,
    run_new_demo,
)
from abdus.errors import AbdusInputError
from abdus.phantom.generate import MARKER_NAME
from abdus.taxonomy import MEASUREMENT_CODES


def test_tiny_demo_end_to_end(tmp_path, capsys):
    home = tmp_path / "demo"
    summary = run_new_demo(home, patients=4, preset="tiny", jobs=1)
    run = home / "runs" / "1"
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    for key in ("view_accuracy", "confusion_matrix", "measurement_mae_mm", "measurement_median_mm",
                "landmark_radial_error_mm", "human", "n_images", "model", "preset"):  # fmt: skip
        assert key in metrics
    assert metrics["model"] == "mgcn_r" and metrics["preset"] == "tiny"
    assert 0.0 <= summary["view_accuracy"] <= 1.0
    assert set(summary["measurement_mae_mm"]) <= set(MEASUREMENT_CODES)
    assert json.loads((run / "summary.json").read_text()) == summary
    assert (run / "evaluation" / "report.html").read_text().count("data:image/png") > 0
    assert (run / "run" / "model.pt").is_file()
    printed = capsys.readouterr().out
    assert "view accuracy" in printed and "untrained" in printed
    # The cohort records what it was generated with, so a second demo can reuse it.
    (cohort,) = (home / "cohorts").iterdir()
    assert cohort_differences(cohort, demo_cohort_settings(patients=4, seed=0)) == []
    assert cohort_differences(cohort, demo_cohort_settings(patients=4, seed=1)) == [
        "seed 0 (wanted 1)"
    ]


@pytest.mark.slow
def test_make_demo_twice_trains_again_on_the_same_cohort(tmp_path, capsys):
    home = tmp_path / "demo"
    argv = ["demo", "--out", str(home), "--preset", "tiny", "--patients", "4"]
    assert main(argv) == 0
    cohort = next((home / "cohorts").iterdir())
    manifest = (cohort / "manifest.json").read_bytes()
    assert main(argv) == 0
    assert "reusing the synthetic cohort" in capsys.readouterr().out
    assert [p.name for p in (home / "cohorts").iterdir()] == [cohort.name]
    assert (cohort / "manifest.json").read_bytes() == manifest
    for n in ("1", "2"):
        assert (home / "runs" / n / "summary.json").is_file()


@pytest.fixture
def fake_steps(monkeypatch) -> dict[str, list]:
    """Generation, training and evaluation replaced by stand-ins that record their calls: the
    folder logic of ``abdus demo`` without minutes of work. The stand-in cohort's manifest
    carries the meta that ``generate_cohort`` records (``test_tiny_demo_end_to_end`` checks
    that the real one does)."""
    calls: dict[str, list] = {"generate": [], "train": []}

    def generate_cohort(out, *, patients, seed, second_read_fraction, **_):
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        meta = demo_cohort_settings(patients=patients, seed=seed)
        assert meta["second_read_fraction"] == second_read_fraction
        (out / MARKER_NAME).write_text("{}")
        (out / "manifest.json").write_text(json.dumps({"meta": meta, "images": []}))
        calls["generate"].append(out)

    def train(data, run, **_):
        Path(run).mkdir(parents=True)
        (Path(run) / "model.pt").write_bytes(b"")
        calls["train"].append(Path(data))

    def evaluate(run, data, **_):
        return {"n_images": 1, "n_patients": 1, "measurement_mae_mm": {}}

    monkeypatch.setattr("abdus.demo.generate_cohort", generate_cohort)
    monkeypatch.setattr("abdus.demo.train", train)
    monkeypatch.setattr("abdus.demo.evaluate_run", evaluate)
    monkeypatch.setattr("abdus.demo.evaluate_untrained", evaluate)
    return calls


def test_each_demo_gets_its_own_run_folder_and_reuses_a_matching_cohort(tmp_path, fake_steps):
    home = tmp_path / "demo"
    argv = ["demo", "--out", str(home), "--patients", "3"]
    assert main(argv) == 0
    assert main(argv) == 0  # before: "a demo run already exists there"
    assert len(fake_steps["generate"]) == 1
    assert fake_steps["train"] == [home / "cohorts" / "seed0-3p"] * 2
    assert sorted(p.name for p in (home / "runs").iterdir()) == ["1", "2"]
    assert all((home / "runs" / n / "summary.json").is_file() for n in ("1", "2"))
    # Another seed: a cohort of its own; the first one stays as it was.
    before = (home / "cohorts" / "seed0-3p" / "manifest.json").read_bytes()
    assert main([*argv, "--seed", "1"]) == 0
    assert fake_steps["train"][-1] == home / "cohorts" / "seed1-3p"
    assert (home / "cohorts" / "seed0-3p" / "manifest.json").read_bytes() == before
    assert (home / "runs" / "3" / "run").is_dir()


def test_a_cohort_of_another_generator_version_or_a_user_folder_is_never_overwritten(
    tmp_path, fake_steps
):
    home = tmp_path / "demo"
    run_new_demo(home, patients=3)
    old = home / "cohorts" / "seed0-3p" / "manifest.json"
    record = json.loads(old.read_text())
    record["meta"]["abdus_version"] = "0.0.1"  # generated by an older abdus
    old.write_text(json.dumps(record))
    user = home / "cohorts" / "seed0-3p-2"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    run_new_demo(home, patients=3)
    assert fake_steps["train"][-1] == home / "cohorts" / "seed0-3p-3"
    assert json.loads(old.read_text()) == record
    assert [p.name for p in user.iterdir()] == ["notes.txt"]
    # The new cohort is then the one reused.
    run_new_demo(home, patients=3)
    assert len(fake_steps["generate"]) == 2
    assert fake_steps["train"][-1] == home / "cohorts" / "seed0-3p-3"


def test_a_cohort_left_by_an_earlier_demo_layout_is_reused(tmp_path, fake_steps):
    home = tmp_path / "demo"
    run_demo(home, patients=3)  # the layout of scripts/demo_stability.py: OUT/data, OUT/run
    assert fake_steps["generate"] == [home / "data"]
    run_new_demo(home, patients=3)
    assert fake_steps["generate"] == [home / "data"]
    assert fake_steps["train"] == [home / "data"] * 2
    assert (home / "runs" / "1" / "summary.json").is_file()


def test_run_demo_refuses_a_cohort_generated_otherwise_and_an_existing_run(tmp_path, fake_steps):
    run_demo(tmp_path / "a", patients=3)
    with pytest.raises(AbdusInputError, match=r"generated otherwise: patients 3 \(wanted 4\)"):
        run_demo(tmp_path / "b", patients=4, data=tmp_path / "a" / "data")
    with pytest.raises(AbdusInputError, match="a demo run already exists"):
        run_demo(tmp_path / "a", patients=3)
    assert len(fake_steps["train"]) == 1


def test_summary_says_when_the_model_is_worse_than_the_human():
    summary = {
        "n_images": 10, "n_patients": 2, "seconds": 60.0, "device": "cpu", "chance": 1 / 11,
        "view_accuracy": 0.5, "view_accuracy_untrained": 0.1, "view_accuracy_human": 0.8,
        "measurement_mae_mm": {"KL_LA": 9.0}, "measurement_mae_mm_untrained": {"KL_LA": 50.0},
        "measurement_mae_mm_human": {"KL_LA": 4.5}, "report": "r.html",
    }  # fmt: skip
    text = format_summary(summary)
    assert "worse than the second human reader" in text
    assert "KL_LA (2.0x)" in text
    summary["measurement_mae_mm"] = {"KL_LA": 4.0}
    summary["view_accuracy"] = 0.9
    assert "on par with or better" in format_summary(summary)
