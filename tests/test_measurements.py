import numpy as np
import pytest

from abdus.measurements import measurements_from_array, measurements_from_landmarks
from abdus.taxonomy import LANDMARK_INDEX, NUM_LANDMARKS


def test_anisotropic_spacing_is_applied_per_axis():
    # 30 px along x at 0.4 mm/px and 40 px along y at 0.3 mm/px: 12 mm and 12 mm -> 16.97 mm.
    got = measurements_from_landmarks({"kl_la_1": (10, 10), "kl_la_2": (40, 50)}, (0.3, 0.4))
    assert got == {"KL_LA": pytest.approx(np.hypot(12.0, 12.0))}


def test_missing_landmark_or_spacing_gives_none_never_a_guess():
    points = np.full((NUM_LANDMARKS, 2), np.nan)
    points[LANDMARK_INDEX["kt_la_1"]] = (0, 0)
    points[LANDMARK_INDEX["kt_la_2"]] = (3, 4)
    got = measurements_from_array(points, (1.0, 1.0), ["KT_LA", "KT_SA"])
    assert got == {"KT_LA": pytest.approx(5.0), "KT_SA": None}
    assert measurements_from_array(points, None, ["KT_LA"]) == {"KT_LA": None}
    assert measurements_from_landmarks({"kt_la_1": (0, 0), "kt_la_2": (3, 4)}, None) == {}
