"""The accuracy / caliper change of a fast backend against the reference, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from abdus.inference.compare import SplitOutputs, summarise_change
from abdus.taxonomy import LANDMARK_INDEX, NUM_LANDMARKS, VIEW_INDEX


def _outputs(points: np.ndarray, views: list[int], ref_view: int, spacing: float) -> SplitOutputs:
    n = len(views)
    return SplitOutputs(
        views=np.asarray(views),
        points=points,
        ref_views=np.full(n, ref_view),
        spacing=np.full(n, spacing),
    )


def test_summarise_change_by_hand():
    kl = VIEW_INDEX["kidney_left_long"]
    b = LANDMARK_INDEX["kl_la_2"]  # kl_la_1 stays at (0, 0)
    points = np.zeros((2, NUM_LANDMARKS, 2))
    points[:, b] = (10.0, 0.0)  # KL_LA = 10 px = 5 mm at 0.5 mm/px
    moved = points.copy()
    moved[1, b] = (10.0, 4.0)  # image 1: 4 px shift of one landmark; KL_LA = sqrt(116) px
    reference = _outputs(points, [kl, kl], kl, 0.5)
    candidate = _outputs(moved, [kl, 0], kl, 0.5)
    change = summarise_change(reference, candidate)
    assert change["view_accuracy_reference"] == 1.0
    assert change["view_accuracy_candidate"] == 0.5
    assert change["accuracy_change_points"] == pytest.approx(-50.0)
    assert change["view_agreement"] == 0.5
    assert change["n_measurements"] == 2
    expected = (np.sqrt(116.0) - 10.0) * 0.5 / 2  # mean over the two images
    assert change["mean_measurement_change_mm"] == pytest.approx(expected)
    assert change["median_measurement_change_mm"] == pytest.approx(
        expected
    )  # median of two = their mean
    assert change["share_over_2mm"] == 0.0  # the one change is 0.39 mm
    assert change["mean_landmark_shift_mm"] == pytest.approx(4 * 0.5 / 4)  # 1 of 4 landmarks
    assert change["mean_landmark_shift_px"] == pytest.approx(4 / 4)
    assert change["mean_measurement_change_px"] == pytest.approx((np.sqrt(116.0) - 10.0) / 2)


def test_summarise_change_apart_for_low_confidence_landmarks():
    """A jump on a landmark the reference flags as low confidence counts in the overall
    figures and is left out of the ``confident_*`` ones."""
    kl = VIEW_INDEX["kidney_left_long"]
    b = LANDMARK_INDEX["kl_la_2"]
    points = np.zeros((2, NUM_LANDMARKS, 2))
    points[:, b] = (10.0, 0.0)
    moved = points.copy()
    moved[1, b] = (30.0, 0.0)  # image 1 jumps 20 px = 10 mm
    confidence = np.ones((2, NUM_LANDMARKS))
    confidence[1, b] = 0.2  # below predict's 0.3: flagged
    reference = _outputs(points, [kl, kl], kl, 0.5)
    reference.confidence = confidence
    change = summarise_change(reference, _outputs(moved, [kl, kl], kl, 0.5))
    assert change["mean_measurement_change_mm"] == pytest.approx(5.0)
    assert change["share_over_2mm"] == 0.5
    assert change["n_confident_measurements"] == 1
    assert change["confident_mean_measurement_change_mm"] == 0.0
    assert change["confident_share_over_2mm"] == 0.0
    # without confidences nothing is split off
    assert "n_confident_measurements" not in summarise_change(
        _outputs(points, [kl, kl], kl, 0.5), _outputs(moved, [kl, kl], kl, 0.5)
    )
