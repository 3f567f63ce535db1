import numpy as np
import pytest
import torch

from abdus.data.heatmaps import HeatmapCodec
from abdus.data.preprocess import PreprocessConfig, preprocess_image
from abdus.inference.predictor import NetworkOutput, Predictor
from abdus.io.types import Region, UltrasoundImage
from abdus.models import build_model
from abdus.taxonomy import LANDMARK_INDEX, NUM_LANDMARKS, NUM_VIEWS, VIEW_INDEX

CONFIG = PreprocessConfig(spacing_mm=2.0, size=(64, 64))
CODEC = HeatmapCodec.from_mm((64, 64), 4.0, 2.0)


def _tiny_predictor() -> Predictor:
    torch.manual_seed(0)
    model = build_model(
        "mgcn_r", depth="resnet18", widths=(8, 16, 32, 64), gcn_k=7, classifier_hidden=16
    )
    return Predictor(model, CONFIG, CODEC)


def _image(spacing=(0.5, 0.25)) -> UltrasoundImage:
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (200, 300)).astype(np.float32)
    return UltrasoundImage(pixels=pixels, spacing_mm=spacing, spacing_source="user", source="x.png")


def _output_for(view: str, source_points: dict, pre) -> NetworkOutput:
    probs = np.full(NUM_VIEWS, 0.01)
    probs[VIEW_INDEX[view]] = 0.9
    points = np.zeros((NUM_LANDMARKS, 2))
    for name, xy in source_points.items():
        points[LANDMARK_INDEX[name]] = pre.transform.to_model(np.array(xy, dtype=float))
    return NetworkOutput(probs, points, np.ones(NUM_LANDMARKS))


def test_interpret_maps_back_to_source_px_and_measures_in_mm():
    image = _image()
    pre = preprocess_image(image, CONFIG)
    truth = {"kt_la_1": (50.0, 100.0), "kt_la_2": (250.0, 100.0), "kt_sa_1": (150.0, 40.0),
             "kt_sa_2": (150.0, 160.0)}  # fmt: skip
    pred = _tiny_predictor().interpret(_output_for("kidney_left_trans", truth, pre), pre, image)
    assert pred.view == "kidney_left_trans"
    assert set(pred.landmarks) == set(truth)
    for name, (x, y) in truth.items():
        assert pred.landmarks[name]["x"] == pytest.approx(x, abs=1e-6)
        assert pred.landmarks[name]["y"] == pytest.approx(y, abs=1e-6)
    # 200 px along x at 0.25 mm = 50 mm; 120 px along y at 0.5 mm = 60 mm.
    assert pred.measurements_mm == {"KT_LA": pytest.approx(50.0), "KT_SA": pytest.approx(60.0)}
    assert pred.warnings == []


def test_landmarks_kept_only_for_the_predicted_views_task():
    image = _image()
    pre = preprocess_image(image, CONFIG)
    out = _output_for("liver_right_trans", {}, pre)
    pred = _tiny_predictor().interpret(out, pre, image)
    assert pred.landmarks == {} and pred.measurements_mm == {}
    given = _tiny_predictor().interpret(out, pre, image, view="spleen_long")
    assert set(given.landmarks) == {"sl_la_1", "sl_la_2"} and given.view_source == "given"


def test_no_spacing_gives_null_measurements_with_a_reason():
    image = _image(spacing=None)
    pred = _tiny_predictor().predict_image(image, view="kidney_right_long")
    assert pred.measurements_mm == {"KL_LA": None}
    assert "spacing" in pred.measurement_notes["KL_LA"]
    assert any("no pixel spacing" in w for w in pred.warnings)


def test_one_shot_forward_equals_separate_task_forwards():
    predictor = _tiny_predictor()
    x = torch.rand(2, 1, 64, 64)
    masked = x * (torch.rand_like(x) > 0.2)
    logits, heatmaps = predictor.backend.run(x, masked)
    with torch.inference_mode():
        assert torch.allclose(heatmaps, predictor.model(x)["heatmaps"], atol=1e-5)
        assert torch.allclose(logits, predictor.model(masked)["logits"], atol=1e-5)


def test_low_confidence_view_is_flagged_not_hidden():
    image = _image()
    pre = preprocess_image(image, CONFIG)
    out = _output_for("spleen_long", {}, pre)
    out.probabilities[:] = 1.0 / NUM_VIEWS
    out.probabilities[VIEW_INDEX["spleen_long"]] += 0.01
    pred = _tiny_predictor().interpret(out, pre, image)
    assert pred.view == "spleen_long"
    assert any("low confidence view" in w for w in pred.warnings)


def _kidney_trans_prediction(image, points):
    pre = preprocess_image(image, CONFIG)
    out = _output_for("kidney_left_trans", points, pre)
    return _tiny_predictor().interpret(out, pre, image)


KT_POINTS = {"kt_la_1": (50.0, 100.0), "kt_la_2": (250.0, 100.0), "kt_sa_1": (150.0, 40.0),
             "kt_sa_2": (150.0, 160.0)}  # fmt: skip


def test_a_caliper_end_off_the_frame_withholds_its_measurement_only():
    pred = _kidney_trans_prediction(_image(), {**KT_POINTS, "kt_la_1": (-58.9, 100.0)})
    assert pred.measurements_mm["KT_LA"] is None
    assert pred.measurements_mm["KT_SA"] == pytest.approx(60.0)
    note = pred.measurement_notes["KT_LA"]
    assert "kt_la_1" in note and "-58.9" in note and "outside the 300 x 200 px image" in note
    assert "KT_SA" not in pred.measurement_notes
    assert any(w.startswith("KT_LA withheld:") for w in pred.warnings)
    assert pred.landmarks["kt_la_1"]["x"] == pytest.approx(-58.9, abs=1e-6)  # kept as located


def test_a_caliper_end_off_the_ultrasound_region_withholds_its_measurement():
    image = _image()
    image.region = Region((20, 10, 280, 190), (0.5, 0.25), 1, 1)  # x 20..279, y 10..189 px
    inside = _kidney_trans_prediction(image, {**KT_POINTS, "kt_sa_1": (150.0, 9.5)})
    assert inside.measurements_mm["KT_SA"] is not None  # on the region's edge pixel
    pred = _kidney_trans_prediction(image, {**KT_POINTS, "kt_sa_2": (150.0, 195.0)})
    assert pred.measurements_mm["KT_SA"] is None and pred.measurements_mm["KT_LA"] is not None
    assert "outside the ultrasound region" in pred.measurement_notes["KT_SA"]
