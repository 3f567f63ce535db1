"""The evaluation report, Table 1 and the reproduction report, from hand-built metrics dicts."""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from abdus.evaluation.cases import Outlier
from abdus.evaluation.metrics import (
    measurement_summary,
    radial_summary,
    view_metrics,
    wilson_interval,
)
from abdus.evaluation.plots import GalleryCase
from abdus.evaluation.report import human_verdict, write_report
from abdus.evaluation.reproduce_report import write_reproduce_report
from abdus.evaluation.tables import (
    MISSING,
    PAPER_SOURCE,
    Table,
    counts_line,
    format_number,
    table1_csv,
    table1_markdown,
    write_table1,
)
from abdus.taxonomy import MEASUREMENT_CODES, PAPER_TABLE1_MM


def _rater(pairs: dict[str, list], *, true=None, pred=None, errors=None) -> dict:
    """A metrics dict shaped like ``evaluate.compare``'s, from chosen pairs (mm)."""
    out: dict = {"n_images": 0}
    if true is not None:
        out.update(view_metrics(true, pred))
    summary = measurement_summary(pairs)
    out["measurements"] = summary
    out["measurement_mae_mm"] = {k: v["mae_mm"] for k, v in summary.items()}
    out["measurement_pairs_mm"] = pairs
    landmarks = radial_summary(errors or {})
    out["landmarks"] = landmarks
    out["landmark_errors_mm"] = errors or {}
    out["end_to_end"] = {k: {"coverage": 0.5, **v} for k, v in summary.items()}
    return out


# Model KL_LA: |102-100|, |94-100|, |104-100|, |104-100| -> MAE 4.000 mm over n=4.
MODEL_PAIRS = {
    "KL_LA": [[102.0, 100.0], [94.0, 100.0], [104.0, 100.0], [104.0, 100.0]],
    "ST_SA": [[60.0, 40.0], [61.0, 40.0], [59.0, 40.0], [60.5, 40.0]],  # ~20 mm: clearly worse
}
HUMAN_PAIRS = {
    "KL_LA": [[101.0, 100.0], [96.0, 100.0], [103.0, 100.0]],  # 2.667 mm: no clear difference
    "ST_SA": [[41.0, 40.0], [39.0, 40.0], [40.5, 40.0]],  # ~0.83 mm
}


@pytest.fixture
def metrics() -> dict:
    model = _rater(MODEL_PAIRS, true=[0, 5, 5, 9, 9], pred=[0, 5, 7, 9, 9],
                   errors={"kl_la_1": [0.5, 1.5, 3.0, 9.0], "st_sa_1": [2.5]})  # fmt: skip
    model.update(model="mgcn_r", preset="tiny", split="test", n_patients=3)
    model["n_images"] = 5
    model["human"] = _rater(HUMAN_PAIRS, true=[0, 5, 9], pred=[0, 5, 10],
                            errors={"kl_la_1": [1.0]})  # fmt: skip
    model["human"]["n_images"] = 3
    model["truth"] = _rater({"KL_LA": [[100.0, 99.0]]}, true=[0], pred=[0])
    model["reader_a_vs_truth"] = _rater({"KL_LA": [[100.0, 99.5]]}, true=[0], pred=[0])
    return model


def _html_pngs(text: str) -> list[Image.Image]:
    images = []
    for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text):
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        images.append(image)
    return images


def test_report_with_human_reader(tmp_path, metrics):
    gallery = [GalleryCase(np.zeros((32, 32)), np.full((14, 2), np.nan),
                           np.full((14, 2), np.nan), "others", "others", {}, "best")]  # fmt: skip
    md_path, html_path = write_report(metrics, tmp_path, gallery=gallery, title="Run <7>")
    md, page = md_path.read_text(), html_path.read_text()
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["bland_altman_human.png", "bland_altman_model.png", "confusion.png",
                    "gallery.png", "radial_errors.png"]  # fmt: skip
    assert all(f"]({name})" in md for name in pngs)  # linked from the Markdown
    assert len(_html_pngs(page)) == len(pngs)  # every figure embedded, decodable
    assert "<title>Run &lt;7&gt;</title>" in page and "Run <7>" not in page
    assert "| KL_LA | 4 | 4.00 |" in md  # MAE 4.00 mm over n=4, reference-view protocol
    assert "4.00 (n=4)" in md and "2.67 (n=3)" in md  # summary: model and reader B
    assert f"MGCN_R, {PAPER_SOURCE} | 4.278" in md  # the paper's numbers, labelled
    assert "Model view accuracy: 80.0% of 5 images" in md
    assert "KL_LA: no clear difference from the human reader" in md
    assert "ST_SA: model worse than the human reader" in md
    assert "KT_LA: not comparable" in md
    assert (
        "of 7 measurements: 0 better, 1 worse, 1 no clear difference, 0 too few images, 5 not" in md
    )
    assert "Against the noise-free truth" in md
    assert "(mm)" in md and "(%)" in md


def test_report_shows_learning_curves_and_every_far_off_landmark(tmp_path, metrics):
    history = [
        {"stage": "landmarks", "epoch": e, "train": {"loss": 10.0 / e},
         "val": {"landmark_error_mm": v}, "best": e == 2}
        for e, v in ((1, 12.0), (2, 6.0), (3, 7.0))
    ]  # fmt: skip
    metrics["landmarks_far_off"] = {"limit_mm": 20.0, "n": 40, "n_far": 3, "share": 0.075}
    outliers = [
        Outlier(4, "im4", "spleen_trans", {"st_la_2": 51.9, "st_la_1": 22.0, "st_sa_1": 3.0}),
        Outlier(1, "im1", "kidney_left_long", {"kl_la_1": 30.3, "kl_la_2": 2.0}),
    ]
    blank = GalleryCase(np.zeros((32, 32)), np.full((14, 2), np.nan), np.full((14, 2), np.nan),
                        "others", "others", {}, "im4")  # fmt: skip
    md_path, html_path = write_report(metrics, tmp_path, history=history, outliers=outliers,
                                      outlier_cases=[blank])  # fmt: skip
    md = md_path.read_text()
    assert (tmp_path / "learning_curves.png").is_file() and (tmp_path / "outliers.png").is_file()
    assert "3 of 40 landmarks (7.5%) on 2 images" in md
    assert "| im4 | spleen_trans | st_la_2 51.9, st_la_1 22.0 |" in md  # only those > 20 mm
    assert "| im1 | kidney_left_long | kl_la_1 30.3 |" in md
    assert len(_html_pngs(html_path.read_text())) == len(list(tmp_path.glob("*.png")))


def test_report_without_second_reads_or_classifier(tmp_path, metrics):
    for key in ("human", "truth", "reader_a_vs_truth", "view_accuracy", "confusion_matrix"):
        metrics.pop(key)
    md_path, html_path = write_report(metrics, tmp_path)
    md = md_path.read_text()
    assert "No second reads" in md
    assert "does not classify views" in md
    assert not (tmp_path / "bland_altman_human.png").exists()
    assert not (tmp_path / "confusion.png").exists()
    assert "noise-free truth" not in md
    assert len(_html_pngs(html_path.read_text())) == 2  # Bland–Altman + histogram


def test_landmark_only_model_still_shows_the_human_confusion_matrix(tmp_path, metrics):
    for key in ("view_accuracy", "confusion_matrix", "per_view"):
        metrics.pop(key)
    md = write_report(metrics, tmp_path)[0].read_text()
    assert "does not classify views" in md
    assert (tmp_path / "confusion.png").exists()
    assert "| 0 others | 0 | — | — | 100.0 | 100.0 |" in md  # reader B's per-view figures


def test_report_of_an_empty_metrics_dict_says_what_is_missing(tmp_path):
    md_path, html_path = write_report({}, tmp_path)
    md = md_path.read_text()
    assert "| KL_LA | 0 | — |" in md
    assert "no view classification" in md
    assert html_path.read_text().startswith("<!DOCTYPE html>")
    assert not list(tmp_path.glob("*.png"))
    assert not list(tmp_path.glob(".*"))  # no temporary files left


class _Tags(HTMLParser):
    """Every start tag of a page, with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_html_escapes_file_names_and_free_text(tmp_path, metrics):
    evil = '<img src=x onerror="alert(1)">&<script>x</script>.dcm'
    metrics["data"] = evil
    metrics["landmarks_far_off"] = {"limit_mm": 20.0, "n": 4, "n_far": 1, "share": 0.25}
    outliers = [Outlier(0, evil, "kidney_left_long", {"kl_la_1": 30.0})]
    md_path, html_path = write_report(metrics, tmp_path, outliers=outliers, title=evil)
    page = html_path.read_text()
    parser = _Tags()
    parser.feed(page)
    tags = {tag for tag, _ in parser.tags}
    assert "script" not in tags
    assert all(attrs["src"].startswith("data:image/png;base64,") for t, attrs in parser.tags
               if t == "img")  # fmt: skip
    assert evil not in page
    assert html.unescape(page).count(evil) == 4  # title, heading, context line, outlier row
    assert evil in md_path.read_text()  # Markdown keeps the text as it is


def test_human_verdicts():
    worse = {"measurement_pairs_mm": MODEL_PAIRS}
    human = {"measurement_pairs_mm": HUMAN_PAIRS}
    verdict, sentence = human_verdict("ST_SA", human, worse)  # roles swapped
    assert verdict == "better" and "model better" in sentence
    verdict, sentence = human_verdict("KL_LA", worse, human)
    assert verdict == "no clear difference" and "1.50× the inter-reader error" in sentence
    one = {"measurement_pairs_mm": {"KL_LA": [[1.0, 2.0]]}}
    verdict, sentence = human_verdict("KL_LA", one, human)
    assert verdict == "too few images" and "too few images" in sentence


def test_wilson_interval_matches_the_textbook_value():
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert wilson_interval(0, 0) is None


# ---------------------------------------------------------------------------- Table 1


def _table1_rows(metrics: dict) -> dict:
    return {"MGCN_R": metrics, "Human": metrics["human"], "STL+SFCN": None}


def test_table1_markdown_layout(metrics):
    md = table1_markdown(_table1_rows(metrics))
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    header, body = lines[0], lines[1:]
    assert header.split(" | ")[2:] == [f"{c} (mm)" for c in MEASUREMENT_CODES[:-1]] + [
        f"{MEASUREMENT_CODES[-1]} (mm) |"
    ]
    # Six paper rows (ours + paper each) and the extra row (ours only).
    assert [line.split(" | ")[0][2:] for line in body] == [
        n for n in ("Human", "PBT", "SFCN", "MFCN", "MGCN", "MGCN_R") for _ in (0, 1)
    ] + ["STL+SFCN"]
    mgcn_r_ours, mgcn_r_paper = body[10], body[11]
    assert "| ours | 4.000 (n=4) | — |" in mgcn_r_ours
    assert f"| {PAPER_SOURCE} | 4.278 | 4.426 |" in mgcn_r_paper
    assert body[2].count(MISSING) == len(MEASUREMENT_CODES)  # PBT not run: all "—"
    assert "MGCN_R: 5 images / 3 patients (test split)" in md
    assert "published in Xu et al." in md


def test_table1_csv_columns_numbers_and_missing_cells(tmp_path, metrics):
    md_path, csv_path = write_table1(_table1_rows(metrics), tmp_path)
    assert md_path.read_text() == table1_markdown(_table1_rows(metrics))
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert csv_path.read_text() == table1_csv(_table1_rows(metrics))
    assert len(rows) == 13
    ours = {r["method"]: r for r in rows if r["source"] == "ours"}
    paper = {r["method"]: r for r in rows if r["source"] == PAPER_SOURCE}
    assert float(ours["MGCN_R"]["KL_LA_mae_mm"]) == pytest.approx(4.0)
    assert ours["MGCN_R"]["KL_LA_n"] == "4"
    assert ours["MGCN_R"]["KT_LA_mae_mm"] == "" and ours["PBT"]["ST_SA_mae_mm"] == ""
    assert float(paper["SFCN"]["ST_LA_mae_mm"]) == PAPER_TABLE1_MM["SFCN"]["ST_LA"]
    assert set(paper) == set(PAPER_TABLE1_MM)


def test_counts_line_and_formatting_helpers():
    line = counts_line({"MGCN_R": {"n_images": 12, "n_patients": 4}})
    assert "MGCN_R: 12 images / 4 patients" in line and "PBT: not run" in line
    assert format_number(None) == format_number(float("nan")) == MISSING
    assert format_number(3.14159, 3) == "3.142"
    with pytest.raises(ValueError, match="cells"):
        Table(("a", "b"), (("1",),))
    assert "a\\|b" in Table(("x",), (("a|b",),)).to_markdown()


def test_reproduce_report(tmp_path, metrics):
    sizes = {
        "mgcn_r": {"parameters": 40_000_000, "size_mb": 152.5, "inference_ms": 80.0},
        "stl": {"parameters": 23_500_000, "size_mb": 89.6, "inference_ms": 30.0},
        "sfcn": {"parameters": 150_000_000, "size_mb": 572.2, "inference_ms": 170.0},
    }
    confusion = {"STL": metrics["truth"], "MTL": metrics, "Human": metrics["human"]}
    md_path, html_path = write_reproduce_report(
        _table1_rows(metrics), tmp_path, confusion=confusion, sizes=sizes,
        context={"preset": "tiny", "device": "cpu"},
    )  # fmt: skip
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["fig3_confusion.png", "reproduce.html", "reproduce.md", "table1.csv",
                     "table1.md"]  # fmt: skip
    md = md_path.read_text()
    assert "4.000 (n=4)" in md and "- device: cpu" in md
    # STL + SFCN summed: 173.50 M parameters, 661.8 MB, 200.0 ms; MGCN_R beside the paper.
    assert "| 173.50 | 661.8 | 200.0 | 539 |" in md
    assert "| 40.00 | 152.5 | 80.0 | 100 |" in md
    assert "MGCN_R is 23% of the single-task system's size here" in md
    (figure,) = _html_pngs(html_path.read_text())
    assert figure.width > 2 * figure.height  # three panels side by side
    assert Image.open(tmp_path / "fig3_confusion.png").size == figure.size
