import json

import pytest

from abdus.cli import main
from abdus.demo import format_summary, run_demo
from abdus.taxonomy import MEASUREMENT_CODES


def test_tiny_demo_end_to_end(tmp_path, capsys):
    summary = run_demo(tmp_path / "demo", patients=4, preset="tiny", jobs=1)
    metrics = json.loads((tmp_path / "demo" / "evaluation" / "metrics.json").read_text())
    for key in ("view_accuracy", "confusion_matrix", "measurement_mae_mm", "measurement_median_mm",
                "landmark_radial_error_mm", "human", "n_images", "model", "preset"):  # fmt: skip
        assert key in metrics
    assert metrics["model"] == "mgcn_r" and metrics["preset"] == "tiny"
    assert 0.0 <= summary["view_accuracy"] <= 1.0
    assert set(summary["measurement_mae_mm"]) <= set(MEASUREMENT_CODES)
    assert (tmp_path / "demo" / "evaluation" / "report.html").read_text().count(
        "data:image/png"
    ) > 0
    printed = capsys.readouterr().out
    assert "view accuracy" in printed and "untrained" in printed
    # A second demo into the same folder refuses to overwrite the run.
    assert main(["demo", "--out", str(tmp_path / "demo"), "--preset", "tiny"]) == 2


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


@pytest.mark.parametrize(
    "argv", [["info", "/no/such/file.dcm"], ["evaluate", "/no/run", "--data", "/no/data"]]
)
def test_cli_user_errors_are_one_line_without_traceback(argv, capsys):
    assert main(argv) in (1, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().startswith("error:")
