import numpy as np
import pytest

from abdus.evaluation.metrics import (
    bland_altman,
    confusion_matrix,
    far_off_share,
    measurement_summary,
    radial_summary,
    view_metrics,
)


def test_known_confusion_matrix():
    true = [0, 0, 1, 1, 1, 5]
    pred = [0, 1, 1, 1, 0, 5]
    counts = confusion_matrix(true, pred)
    assert counts[0, 0] == 1 and counts[0, 1] == 1
    assert counts[1, 1] == 2 and counts[1, 0] == 1
    assert counts[5, 5] == 1 and counts.sum() == 6
    m = view_metrics(true, pred)
    assert m["view_accuracy"] == pytest.approx(4 / 6)
    assert m["per_view"]["others"]["precision"] == pytest.approx(1 / 2)
    assert m["per_view"]["liver_right_long"]["recall"] == pytest.approx(2 / 3)
    assert m["per_view"]["spleen_trans"]["precision"] is None  # never predicted
    assert m["confusion_matrix_normalised"][1][1] == pytest.approx(2 / 3)


def test_measurement_errors_and_bland_altman_by_hand():
    pairs = {"KL_LA": [(100.0, 98.0), (90.0, 95.0), (110.0, 110.0)]}
    s = measurement_summary(pairs)["KL_LA"]
    assert s["n"] == 3
    assert s["mae_mm"] == pytest.approx((2 + 5 + 0) / 3)
    assert s["median_mm"] == pytest.approx(2.0)
    diffs = np.array([2.0, -5.0, 0.0])
    assert s["ba_bias_mm"] == pytest.approx(diffs.mean())
    assert s["ba_loa_high_mm"] == pytest.approx(diffs.mean() + 1.96 * diffs.std(ddof=1))
    assert bland_altman([], [])["bias"] is None


def test_radial_shares():
    s = radial_summary({"kl_la_1": [1.0, 3.0, 5.0, 9.0]})["kl_la_1"]
    assert s["within_2mm"] == 0.25 and s["within_4mm"] == 0.5 and s["within_8mm"] == 0.75
    assert s["median_mm"] == pytest.approx(4.0)


def test_far_off_share_counts_landmarks_beyond_the_limit():
    far = far_off_share({"kl_la_1": [1.0, 25.0, 20.0], "st_la_2": [50.0], "ll_la_1": []})
    assert far == {"limit_mm": 20.0, "n": 4, "n_far": 2, "share": 0.5}  # 20.0 is not beyond
    assert far_off_share({})["share"] is None
