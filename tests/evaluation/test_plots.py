"""Report figures: valid PNGs, and the gallery picks best / median / worst by mean error (mm)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from abdus.evaluation.cases import (
    find_outliers,
    gallery_cases,
    landmark_error_per_image_mm,
    outlier_cases,
)
from abdus.evaluation.curves import learning_curves_png, stage_curves
from abdus.evaluation.plots import (
    GalleryCase,
    bland_altman_png,
    confusion_png,
    gallery_png,
    radial_error_histogram_png,
    write_png,
)
from abdus.evaluation.predictions import SplitPredictions
from abdus.evaluation.tables import ConfusionPanel
from abdus.io.manifest import ImageRecord, Read
from abdus.taxonomy import LANDMARK_INDEX, NUM_LANDMARKS, NUM_VIEWS, VIEW_INDEX

KL = VIEW_INDEX["kidney_right_long"]
KT = VIEW_INDEX["kidney_right_trans"]
SL = VIEW_INDEX["spleen_long"]
OTHERS = VIEW_INDEX["others"]


def _open_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image


def test_confusion_png_is_a_png_with_one_panel_per_matrix():
    counts = np.diag(np.arange(1, NUM_VIEWS + 1))
    counts[0, 1] = 3
    panel = ConfusionPanel("Model", counts, 0.9, int(counts.sum()))
    one = _open_png(confusion_png([panel]))
    three = _open_png(confusion_png([panel, panel, ConfusionPanel("Human", None, None, 0)]))
    assert three.width > 2 * one.width > 0  # panels side by side (Fig. 3 layout)
    with pytest.raises(ValueError, match="no confusion"):
        confusion_png([])


def test_bland_altman_png_draws_only_codes_with_pairs():
    pairs = {"KL_LA": [[100.0, 98.0], [90.0, 93.0], [110.0, 110.5]], "KT_LA": []}
    image = _open_png(bland_altman_png(pairs))
    one_panel_width = image.width
    pairs["ST_SA"] = [[40.0, 41.0], [42.0, 40.0]]
    assert _open_png(bland_altman_png(pairs)).width > one_panel_width
    with pytest.raises(ValueError, match="no measurement pairs"):
        bland_altman_png({"KL_LA": []})


def test_radial_histogram_ignores_nan_and_refuses_nothing():
    errors = {"kl_la_1": [0.5, 1.5, 3.0, 250.0], "st_sa_2": [2.0, np.nan], "kt_la_1": []}
    _open_png(radial_error_histogram_png(errors))
    with pytest.raises(ValueError, match="no landmark errors"):
        radial_error_histogram_png({"kl_la_1": [np.nan]})


def test_write_png_is_atomic_and_complete(tmp_path):
    data = radial_error_histogram_png({"kl_la_1": [1.0, 2.0]})
    path = write_png(tmp_path / "sub" / "h.png", data)
    assert path.read_bytes() == data
    assert [p.name for p in path.parent.iterdir()] == ["h.png"]  # no temporary left behind


# ---------------------------------------------------------------------------- gallery


def _points(**named) -> np.ndarray:
    p = np.full((NUM_LANDMARKS, 2), np.nan)
    for name, xy in named.items():
        p[LANDMARK_INDEX[name]] = xy
    return p


def _predictions(offsets: list[float], spacing: list[float]) -> SplitPredictions:
    """Kidney-long images, reference 40 px apart; the model shifts both points by ``offset`` px
    in x, so the mean radial error is offset * spacing mm. Image 3 is ``others`` (no task)."""
    n = len(offsets)
    ref = np.stack([_points(kl_la_1=(10, 20), kl_la_2=(50, 20)) for _ in range(n)])
    pred = np.zeros((n, NUM_LANDMARKS, 2))  # a model outputs every channel
    pred[:] = ref
    pred[:, :, 0] += np.asarray(offsets)[:, None]
    pred = np.nan_to_num(pred, nan=5.0)
    views = np.full(n, KL)
    views[3] = OTHERS
    ref[3] = np.nan
    records = [
        ImageRecord(id=f"im{i}", file=f"im{i}.png", patient_id="p", reference=Read("others"))
        for i in range(n)
    ]
    model_views = np.full(n, KL)
    model_views[0] = SL  # a wrong view must not change the landmark ranking
    return SplitPredictions(records, pred, model_views, np.asarray(spacing, float),
                            {"reference": (ref, views)})  # fmt: skip


def test_landmark_error_per_image_in_mm_over_the_reference_task():
    preds = _predictions([2.0, 0.0, 6.0, 1.0, 4.0, 3.0], [0.5, 0.5, 0.5, 0.5, np.nan, 2.0])
    errors = landmark_error_per_image_mm(preds)
    np.testing.assert_allclose(errors[[0, 1, 2, 5]], [1.0, 0.0, 3.0, 6.0])
    assert np.isnan(errors[3])  # "others": no landmark task
    assert np.isnan(errors[4])  # no pixel spacing: no mm


def test_gallery_cases_pick_best_median_worst():
    # Scorable errors (mm): im0 1.0, im1 0.0, im2 3.0, im5 6.0 (im3 others, im4 no spacing).
    preds = _predictions([2.0, 0.0, 6.0, 1.0, 4.0, 3.0], [0.5, 0.5, 0.5, 0.5, np.nan, 2.0])
    images = [np.full((1, 64, 64), i / 10) for i in range(6)]  # (1, H, W) as the dataset gives
    cases = gallery_cases(preds, images)
    assert [c.title.split(":")[0] for c in cases] == ["best", "median", "worst"]
    assert [c.title.split()[1] for c in cases] == ["im1", "im2", "im5"]
    worst = cases[2]
    assert worst.image.shape == (64, 64) and worst.image[0, 0] == pytest.approx(0.5)
    # Reference 40 px apart at 2 mm/px = 80 mm; the shifted prediction keeps the distance.
    assert worst.measurements == {"KL_LA": (pytest.approx(80.0), pytest.approx(80.0))}
    assert np.isfinite(worst.pred_points).all(axis=1).sum() == 2  # only the kidney_long task
    assert (worst.ref_view, worst.pred_view) == ("kidney_right_long", "kidney_right_long")
    assert len(gallery_cases(preds, images, k=1)) == 1
    assert len(gallery_cases(preds, images, k=10)) == 4  # only four images are scorable
    with pytest.raises(ValueError, match="6 predictions"):
        gallery_cases(preds, images[:5])


def test_gallery_png_draws_cases_even_with_points_off_the_canvas():
    preds = _predictions([2.0, 0.0, 200.0, 1.0, 4.0, 3.0], [0.5] * 6)
    cases = gallery_cases(preds, [np.zeros((64, 64))] * 6)
    assert cases[-1].pred_points[LANDMARK_INDEX["kl_la_2"], 0] > 64  # off the canvas
    _open_png(gallery_png(cases))
    blank = GalleryCase(np.zeros((32, 32)), np.full((14, 2), np.nan), np.full((14, 2), np.nan),
                        "others", "others")  # fmt: skip
    _open_png(gallery_png([blank]))
    with pytest.raises(ValueError, match="no gallery"):
        gallery_png([])


def test_outliers_are_the_images_with_a_landmark_beyond_the_limit_worst_first():
    # Radial errors (mm) of both kidney landmarks: im0 1, im2 30, im5 60 (im4 has no spacing).
    preds = _predictions([2.0, 0.0, 60.0, 100.0, 4.0, 30.0], [0.5, 0.5, 0.5, 0.5, np.nan, 2.0])
    found = find_outliers(preds, threshold_mm=20.0)
    assert [o.image_id for o in found] == ["im5", "im2"]
    assert found[0].errors_mm == {"kl_la_1": pytest.approx(60.0), "kl_la_2": pytest.approx(60.0)}
    assert found[0].ref_view == "kidney_right_long"
    assert find_outliers(preds, threshold_mm=100.0) == []
    cases = outlier_cases(preds, [np.zeros((64, 64))] * 6, found)
    titles = ["im5: kl_la_1 off by 60.0 mm", "im2: kl_la_1 off by 30.0 mm"]
    assert [c.title for c in cases] == titles
    _open_png(gallery_png(cases * 3, columns=4))  # two rows, the last one part empty


def _epoch(stage: str, epoch: int, loss: float, val: dict, best: bool) -> dict:
    return {"stage": stage, "epoch": epoch, "train": {"loss": loss}, "val": val, "best": best}


def test_learning_curves_mark_the_kept_epoch_and_read_old_runs():
    history = [
        _epoch("landmarks", 1, 9.0, {"landmark_error_mm": 12.0}, True),
        _epoch("landmarks", 2, 5.0, {"landmark_error_mm": 6.0}, True),
        _epoch("landmarks", 3, 4.0, {"landmark_error_mm": 7.0}, False),
        _epoch("views", 1, 2.0, {"view_accuracy": 0.5}, True),
    ]
    curves = stage_curves(history)
    assert curves["landmarks"]["value"] == [12.0, 6.0, 7.0] and curves["landmarks"]["best"] == [2]
    assert curves["views"]["value"] == [50.0] and curves["views"]["split"] == ["validation"]
    _open_png(learning_curves_png(history))
    old = [{"stage": "views", "epoch": 1, "train": {"loss": 2.0}, "test": {"view_accuracy": 0.4}}]
    assert stage_curves(old)["views"]["split"] == ["test"]  # abdus 0.1 scored test patients
    assert learning_curves_png([]) is None
