"""abdus review: the work list, saving corrections (source px, mm, versions), conflicts, the
limits and the token, the exports, the live server, and training on what was reviewed."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from abdus.cli import main
from abdus.errors import AbdusInputError
from abdus.io.coco import import_coco_keypoints
from abdus.io.manifest import Manifest, Read, image_geometry, load_manifest, save_manifest
from abdus.io.reader import read_frame
from abdus.phantom.generate import generate_cohort
from abdus.review.app import create_review_app, run_review
from abdus.review.priority import NORMAL_ADULT_RANGE_MM, outside_normal_range
from abdus.review.store import ReviewStore

DCIODVFY = shutil.which("dciodvfy")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("review_cohort") / "data"
    generate_cohort(root, patients=2, seed=3, second_read_fraction=0.5, progress=False)
    return root


def _prediction(file: Path, length_mm: float, probability: float, confidence: float) -> dict:
    """A kidney long-axis prediction on ``file``: a caliper of ``length_mm`` along x, with the
    file's own spacing (as ``abdus predict`` writes it)."""
    spacing = read_frame(file).spacing_mm
    x0, y0 = 300.0, 360.0
    landmarks = {
        "kl_la_1": {"x": x0, "y": y0, "confidence": confidence},
        "kl_la_2": {"x": x0 + length_mm / spacing[1], "y": y0, "confidence": 0.95},
    }
    return {
        "source": {"file": str(file), "frame": 0, "region": None},
        "model_id": "m-test",
        "backend": "torch",
        "view": "kidney_right_long",
        "view_probability": probability,
        "view_probabilities": {"kidney_right_long": probability},
        "landmarks": landmarks,
        "measurements_mm": {},
        "spacing_mm": list(spacing),
        "error": None,
    }


@pytest.fixture(scope="module")
def predictions(cohort, tmp_path_factory) -> Path:
    """Four predict JSON files on the cohort's kidney views: confident, unsure of the view,
    unsure of a landmark, and a kidney measured far too long (normal: 90-130 mm)."""
    folder = tmp_path_factory.mktemp("predictions")
    manifest = load_manifest(cohort)
    first, second = [manifest.path_of(r) for r in manifest.records if r.view.startswith("kidney")][
        :2
    ]
    cases = {
        "sure": _prediction(first, 110.0, 0.99, 0.95),
        "view_unsure": _prediction(first, 110.0, 0.40, 0.95),
        "landmark_unsure": _prediction(second, 110.0, 0.99, 0.30),
        "too_long": _prediction(second, 160.0, 0.99, 0.95),
    }
    for name, record in cases.items():
        (folder / f"{name}.json").write_text(json.dumps(record))
    (folder / "failed.json").write_text(json.dumps({**record, "error": "unreadable"}))
    return folder


@pytest.fixture
def store(predictions, tmp_path) -> ReviewStore:
    return ReviewStore(predictions, tmp_path / "reviewed", reviewer="Doe^Jane")


@pytest.fixture
def client(store) -> TestClient:
    return TestClient(create_review_app(store))


def test_normal_ranges_flag_values_outside():
    assert set(NORMAL_ADULT_RANGE_MM) == {
        "KL_LA",
        "KT_LA",
        "KT_SA",
        "LL_LA",
        "SL_LA",
        "ST_LA",
        "ST_SA",
    }
    assert outside_normal_range({"KL_LA": 160.0, "SL_LA": 100.0, "KT_SA": None}) == ["KL_LA"]


def test_work_list_puts_what_needs_a_look_first_and_filters(client):
    listing = client.get("/api/items").json()
    names = [row["name"] for row in listing["items"]]
    assert listing["total"] == 4 and "failed" not in names  # an image that failed is skipped
    assert names[-1] == "sure" and set(names[:3]) == {"view_unsure", "landmark_unsure", "too_long"}
    assert listing["items"][0]["priority"] > listing["items"][-1]["priority"]
    row = listing["items"][0]
    assert set(row) == {"id", "name", "view", "view_probability", "status", "priority", "version"}
    assert client.get("/api/items?view=spleen_long").json()["total"] == 0
    assert client.get("/api/items?status=todo&view=kidney_right_long").json()["total"] == 4
    assert client.get("/api/items?status=corrected").json()["total"] == 0
    assert client.get("/api/items?status=lost").status_code == 400


def test_taxonomy_names_views_landmarks_and_measurements(client):
    taxonomy = client.get("/api/taxonomy").json()
    assert taxonomy["tasks"]["kidney_left_long"] == ["kl_la_1", "kl_la_2"]
    assert taxonomy["tasks"]["others"] == [] and len(taxonomy["views"]) == 11
    kl = next(m for m in taxonomy["measurements"] if m["code"] == "KL_LA")
    assert kl == {"code": "KL_LA", "landmarks": ["kl_la_1", "kl_la_2"], "view_task": "kidney_long"}


def test_item_detail_and_image(client, store):
    detail = client.get("/api/items/sure").json()
    rows, cols, _ = image_geometry(store.by_id["sure"].file)
    assert (detail["width"], detail["height"]) == (cols, rows)
    assert detail["spacing_mm"] == list(read_frame(store.by_id["sure"].file).spacing_mm)
    assert detail["version"] == 0 and detail["measurements_mm"]["KL_LA"] == pytest.approx(110.0)
    assert detail["landmarks"]["kl_la_1"]["confidence"] == 0.95
    assert detail["previous_id"] is not None
    assert detail["next_id"] is None  # the most certain item comes last
    assert detail["original"]["view"] == "kidney_right_long"
    image = client.get("/api/items/sure/image")
    assert image.headers["content-type"] == "image/png" and image.content[:4] == b"\x89PNG"


def _correction(detail: dict, dx: float) -> dict:
    points = {n: {"x": p["x"], "y": p["y"]} for n, p in detail["landmarks"].items()}
    points["kl_la_2"]["x"] += dx
    return {
        "version": detail["version"],
        "status": "corrected",
        "view": detail["view"],
        "landmarks": points,
        "not_measurable": [],
        "comment": "lower pole was on the liver",
    }


def test_a_correction_saves_source_px_and_mm_and_keeps_the_original(client, store):
    detail = client.get("/api/items/sure").json()
    body = _correction(detail, dx=-20.0)
    reply = client.post("/api/items/sure", json=body)
    assert reply.status_code == 200, reply.text
    a, b = body["landmarks"]["kl_la_1"], body["landmarks"]["kl_la_2"]
    row_mm, col_mm = detail["spacing_mm"]
    expected = float(np.hypot((b["x"] - a["x"]) * col_mm, (b["y"] - a["y"]) * row_mm))
    assert reply.json()["version"] == 1
    assert reply.json()["measurements_mm"]["KL_LA"] == pytest.approx(expected, abs=1e-9)

    after = client.get("/api/items/sure").json()
    assert after["landmarks"]["kl_la_2"]["x"] == b["x"] and after["status"] == "corrected"
    assert after["original"]["landmarks"]["kl_la_2"]["x"] == detail["landmarks"]["kl_la_2"]["x"]

    manifest = load_manifest(store.out)  # checks the files are found from REVIEWED
    (record,) = manifest.records
    assert record.reference.landmarks["kl_la_2"] == (b["x"], b["y"])
    assert manifest.path_of(record).resolve() == store.by_id["sure"].file.resolve()
    review = record.meta["review"]
    assert review["reviewer"] == "Doe^Jane" and review["version"] == 1 and review["time"]
    assert review["original"]["landmarks"]["kl_la_2"]["x"] == detail["landmarks"]["kl_la_2"]["x"]
    history = (store.out / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["version"] for line in history] == [1]


def test_a_stale_version_is_refused_with_409_and_changes_nothing(client, store):
    detail = client.get("/api/items/too_long").json()
    assert client.post("/api/items/too_long", json=_correction(detail, -300.0)).status_code == 200
    stale = client.post("/api/items/too_long", json=_correction(detail, -10.0))
    assert stale.status_code == 409 and "version 1" in stale.json()["detail"]
    now = client.get("/api/items/too_long").json()
    assert now["version"] == 1
    assert now["landmarks"]["kl_la_2"]["x"] == detail["landmarks"]["kl_la_2"]["x"] - 300.0
    assert len((store.out / "history.jsonl").read_text().splitlines()) == 1


def test_concurrent_saves_of_one_version_keep_exactly_one(store):
    detail = store.detail("landmark_unsure")
    results: list[int] = []

    def save(dx: float) -> None:
        reply = TestClient(create_review_app(store)).post(
            "/api/items/landmark_unsure", json=_correction(detail, dx)
        )
        results.append(reply.status_code)

    threads = [threading.Thread(target=save, args=(float(-k),)) for k in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [200, 409, 409, 409]


def test_a_restart_replays_the_history(predictions, store, client):
    client.post("/api/items/sure", json=_correction(client.get("/api/items/sure").json(), 5.0))
    again = ReviewStore(predictions, store.out)
    assert again.states["sure"].version == 1 and again.states["sure"].status == "corrected"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"status": "maybe"}, "status"),
        ({"view": "kidney_long"}, "unknown view"),
        ({"landmarks": {"sl_la_1": {"x": 1, "y": 1}}}, "not a landmark of view"),
        ({"landmarks": {"kl_la_1": {"x": 5000, "y": 1}}}, "off the frame"),
        ({"not_measurable": ["SL_LA"]}, "not_measurable"),
        ({"version": "1"}, "version"),
    ],
)
def test_bad_saves_are_400_naming_the_field(client, change, needle):
    body = {**_correction(client.get("/api/items/sure").json(), 0.0), **change}
    reply = client.post("/api/items/sure", json=body)
    assert reply.status_code == 400 and needle in reply.json()["detail"]


def test_the_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert client.get("/static/index.html").content == page.content
    assert client.get("/static/no-such-file.js").status_code == 404


def test_traversal_and_unknown_ids_are_refused(client):
    for path in (
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
        "/static/..%2f..%2f..%2fapp.py",
        "/static/%2fetc%2fpasswd",
        "/api/items/..%2f..%2fmanifest.json",
        "/api/items/%2e%2e/image",
    ):
        reply = client.get(path)
        assert reply.status_code in (400, 404), path
        assert b"[tool" not in reply.content and b"root:" not in reply.content


def test_a_body_over_the_limit_is_413(store):
    client = TestClient(create_review_app(store, max_body_bytes=1000))
    reply = client.post("/api/items/sure", content=b"{" + b" " * 5000 + b"}")
    assert reply.status_code == 413
    assert client.post("/api/items/sure", content=b"{not json").status_code == 400


def test_a_token_is_required_when_set(store):
    client = TestClient(create_review_app(store, token="s3cret-token"))
    assert client.get("/api/items").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.get("/api/items", headers=wrong).status_code == 401
    right = {"Authorization": "Bearer s3cret-token"}
    assert client.get("/api/items", headers=right).status_code == 200


def test_exports_csv_coco_and_verified_sr(client, store):
    detail = client.get("/api/items/sure").json()
    assert client.post("/api/items/sure", json=_correction(detail, -20.0)).status_code == 200
    accept = {**_correction(client.get("/api/items/view_unsure").json(), 0.0), "status": "accepted"}
    accept["not_measurable"] = ["KL_LA"]
    assert client.post("/api/items/view_unsure", json=accept).status_code == 200
    exports = client.post("/api/export").json()

    with open(exports["csv"], encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    by_id = {row["id"]: row for row in rows}
    assert set(by_id) == {"sure", "view_unsure"} and by_id["view_unsure"]["KL_LA"] == ""
    saved_mm = client.get("/api/items/sure").json()["measurements_mm"]["KL_LA"]
    assert float(by_id["sure"]["KL_LA"]) == pytest.approx(saved_mm, abs=1e-3)

    coco = import_coco_keypoints(exports["coco"])
    record = next(r for r in coco.records if r.reference.landmarks)
    assert record.spacing_mm == tuple(detail["spacing_mm"]) and record.view == "kidney_right_long"
    assert record.reference.landmarks == store.states["sure"].landmarks

    assert len(exports["sr"]) == 2
    for path in exports["sr"]:
        ds = pydicom.dcmread(path)
        assert ds.VerificationFlag == "VERIFIED"
        observer = ds.VerifyingObserverSequence[0]
        assert observer.VerifyingObserverName == "Doe^Jane" and observer.VerificationDateTime
        if DCIODVFY:
            result = subprocess.run([DCIODVFY, path], capture_output=True, text=True)
            output = result.stdout + result.stderr
            assert [ln for ln in output.splitlines() if ln.startswith("Error")] == [], path


def test_a_labelled_dataset_shows_both_readers_and_ranks_disagreement(cohort, tmp_path):
    manifest = load_manifest(cohort)
    records = [
        replace(r, file=os.path.relpath(cohort / r.file, tmp_path)) for r in manifest.records
    ]
    agreed = next(i for i, r in enumerate(records) if r.view == "liver_right_trans")
    records[agreed] = replace(records[agreed], second_read=Read("liver_right_trans", {}))
    disputed = next(i for i, r in enumerate(records) if r.view == "liver_left_long")
    records[disputed] = replace(records[disputed], second_read=Read("others", {}))
    save_manifest(Manifest(tmp_path, records), tmp_path)

    store = ReviewStore(tmp_path, tmp_path / "reviewed")
    assert len(store.items) == len(records)
    with_b = [item for item in store.items if item.record.second_read is not None]
    assert with_b and all("second_read" in item.original for item in with_b)
    by_name = {item.name: item for item in store.items}
    assert by_name[records[disputed].id].priority == 1.0
    assert by_name[records[agreed].id].priority == 0.0
    priorities = [item.priority for item in store.order]
    assert priorities == sorted(priorities, reverse=True)
    client = TestClient(create_review_app(store))
    others = sum(1 for item in store.items if item.original["view"] == "others")
    assert client.get("/api/items?view=others").json()["total"] == others > 0


def test_the_server_listens_on_a_free_port_and_says_where(predictions, tmp_path):
    out, stop = tmp_path / "reviewed", threading.Event()
    thread = threading.Thread(
        target=run_review, args=(predictions, out), kwargs={"port": 0, "stop": stop}
    )
    thread.start()
    try:
        for _ in range(1200):  # at most 60 s
            if (out / "review.json").is_file() or not thread.is_alive():
                break
            time.sleep(0.05)
        assert thread.is_alive(), "abdus review stopped before it said where it listens"
        assert (out / "review.json").is_file(), "no review.json after 60 s"
        status = json.loads((out / "review.json").read_text())
        url = f"http://{status['host']}:{status['port']}/api/items"
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert json.loads(reply.read())["total"] == 4
    finally:
        stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive() and not (out / "review.json").exists()


def test_an_image_that_is_gone_is_a_clear_400(predictions, tmp_path):
    folder = tmp_path / "predictions"
    shutil.copytree(predictions, folder)
    record = json.loads((folder / "sure.json").read_text())
    record["source"]["file"] = str(tmp_path / "gone.dcm")
    (folder / "sure.json").write_text(json.dumps(record))
    client = TestClient(create_review_app(ReviewStore(folder, tmp_path / "reviewed")))
    reply = client.get("/api/items/sure/image")
    assert reply.status_code == 400 and "gone.dcm" in reply.json()["detail"]


def test_another_host_needs_a_token_file(predictions, tmp_path):
    with pytest.raises(AbdusInputError, match="token-file"):
        run_review(predictions, tmp_path / "reviewed", host="0.0.0.0", port=0)


def test_the_cli_refuses_another_host_without_a_token_in_one_line(predictions, tmp_path, capsys):
    argv = ["review", str(predictions), "--out", str(tmp_path / "r"), "--host", "0.0.0.0"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "--token-file" in error and error.count("\n") == 1


@pytest.mark.slow
def test_a_reviewed_dataset_trains(cohort, tmp_path):
    from abdus.training.trainer import train

    store = ReviewStore(cohort, tmp_path / "reviewed", reviewer="Doe^Jane")
    for item in store.items:
        detail = store.detail(item.id)
        points = {n: {"x": p["x"], "y": p["y"]} for n, p in detail["landmarks"].items()}
        body = {"version": 0, "status": "accepted", "view": detail["view"], "landmarks": points}
        store.save(item.id, body)
    run = train(tmp_path / "reviewed", tmp_path / "run", preset="tiny")
    assert (run / "model.pt").is_file()
