"""Scene building: ranges drawn as documented, organs fitted into the sector, bad views."""

from __future__ import annotations

import numpy as np
import pytest

from abdus.phantom.anatomy import sample_patient
from abdus.phantom.layouts import BowelGas, BowelLoops, Span
from abdus.phantom.scene import MARGIN_MM, SceneBuilder
from abdus.phantom.views import build_scene


def _builder(seed: int = 0) -> SceneBuilder:
    rng = np.random.default_rng(seed)
    return SceneBuilder(sample_patient(rng, "S"), 50.0, 70.0, rng)


def test_draws_stay_in_their_span_and_counts_include_both_ends() -> None:
    builder = _builder()
    values = [builder.draw(Span(-3.0, 5.0)) for _ in range(500)]
    assert min(values) >= -3.0 and max(values) <= 5.0 and np.std(values) > 1.0
    counts = {builder.draw_count(Span(1, 3)) for _ in range(200)}
    assert counts == {1, 2, 3}


def test_bowel_near_puts_loops_in_the_box_below_the_wall() -> None:
    builder = _builder(1)
    loops = BowelLoops(Span(-10.0, 10.0), Span(20.0, 30.0), Span(4, 4), BowelGas(0.0, 0.0))
    builder.bowel_near(5.0, builder.wall_inner_z, loops)
    walls = builder.layers[::2]  # each loop: wall, then content (no gas at chance 0)
    assert len(builder.layers) == 8
    for layer in walls:
        assert -5.0 <= layer.shape.cx <= 15.0
        assert builder.wall_inner_z + 20.0 <= layer.shape.cz <= builder.wall_inner_z + 30.0


def test_fitted_landmarks_lie_inside_the_sector() -> None:
    rng = np.random.default_rng(5)
    for i in range(6):
        anatomy = sample_patient(rng, f"S{i}")
        scene = build_scene(anatomy, "kidney_left_long", 50.0, 60.0, rng)
        half_sector = np.radians(30.0)
        for x, z in scene.landmarks.values():
            beam = np.arctan2(x, z)
            lateral_mm = np.hypot(x, z) * np.sin(half_sector - abs(beam))
            assert lateral_mm >= MARGIN_MM - 1e-6
            assert np.hypot(x, z) - 50.0 <= scene.min_depth_mm


def test_unknown_view_names_the_valid_ones() -> None:
    anatomy = sample_patient(np.random.default_rng(0), "U")
    with pytest.raises(ValueError, match="valid views: liver_right_long"):
        build_scene(anatomy, "heart_long", 50.0, 70.0, np.random.default_rng(0))
