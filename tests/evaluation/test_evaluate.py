import numpy as np
import pytest

from abdus.evaluation.evaluate import compare
from abdus.taxonomy import LANDMARK_INDEX, NUM_LANDMARKS, VIEW_INDEX

KL = VIEW_INDEX["kidney_right_long"]
KLL = VIEW_INDEX["kidney_left_long"]
SL = VIEW_INDEX["spleen_long"]
OTHERS = VIEW_INDEX["others"]


def _points(**named):
    p = np.full((NUM_LANDMARKS, 2), np.nan)
    for name, xy in named.items():
        p[LANDMARK_INDEX[name]] = xy
    return p


def _full(**named):
    p = np.zeros((NUM_LANDMARKS, 2))  # a model outputs every channel
    for name, xy in named.items():
        p[LANDMARK_INDEX[name]] = xy
    return p


def test_measurement_protocols_by_hand():
    # Image 0: kidney long, reference 100 px apart; model 90 px, right view.
    # Image 1: kidney long, reference 50 px; model 56 px but predicts spleen_long (wrong task).
    # Image 2: others: no measurement. Spacing 0.5 mm/px.
    ref = np.stack([
        _points(kl_la_1=(0, 0), kl_la_2=(100, 0)),
        _points(kl_la_1=(0, 0), kl_la_2=(0, 50)),
        _points(),
    ])  # fmt: skip
    pred = np.stack([
        _full(kl_la_1=(5, 0), kl_la_2=(95, 0)),
        _full(kl_la_1=(0, 0), kl_la_2=(0, 56)),
        _full(),
    ])  # fmt: skip
    m = compare(pred, np.array([KLL, SL, OTHERS]), ref, np.array([KL, KL, OTHERS]),
                np.full(3, 0.5))  # fmt: skip
    # Reference-view protocol: |45 - 50| = 5 mm and |28 - 25| = 3 mm.
    assert m["measurement_mae_mm"]["KL_LA"] == pytest.approx(4.0)
    assert m["measurements"]["KL_LA"]["n"] == 2
    # End to end: the spleen prediction loses image 1's measurement.
    assert m["end_to_end"]["KL_LA"]["coverage"] == pytest.approx(0.5)
    assert m["end_to_end"]["KL_LA"]["mae_mm"] == pytest.approx(5.0)
    # Left/right confusion keeps the kidney task; 1 of 3 views right.
    assert m["view_accuracy"] == pytest.approx(1 / 3)
    # Radial errors in mm: kl_la_1 is 2.5 mm and 0 mm off, kl_la_2 2.5 and 3 mm.
    assert m["landmark_radial_error_mm"]["kl_la_1"] == pytest.approx(1.25)
    assert m["landmarks"]["kl_la_2"]["within_2mm"] == 0.0


def test_images_without_spacing_enter_view_metrics_only():
    ref = np.stack([_points(kl_la_1=(0, 0), kl_la_2=(100, 0))])
    pred = np.stack([_full(kl_la_1=(0, 0), kl_la_2=(90, 0))])
    m = compare(pred, np.array([KL]), ref, np.array([KL]), np.array([np.nan]))
    assert m["view_accuracy"] == 1.0
    assert m["measurement_mae_mm"] == {}
