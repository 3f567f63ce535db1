import csv
import json

from abdus.evaluation.ablation import reproduce
from abdus.phantom.generate import generate_cohort


def test_tiny_reproduce_writes_table1_fig3_and_sizes(tmp_path):
    data = tmp_path / "data"
    generate_cohort(data, patients=4, seed=5, image_format="png", jobs=1, progress=False)
    result = reproduce(data, tmp_path / "out", preset="tiny")
    out = tmp_path / "out"
    rows = list(csv.reader((out / "table1.csv").open()))
    methods = [r[0] for r in rows[1:]]
    for method in ("PBT", "SFCN", "MFCN", "MGCN", "MGCN_R"):
        assert method in methods
    assert (out / "fig3_confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64" in (out / "reproduce.html").read_text()
    saved = json.loads((out / "reproduce.json").read_text())
    assert set(saved["metrics"]) == {"stl", "sfcn", "mfcn", "mgcn", "mgcn_r", "pbt"}
    # Separate networks hold more parameters than the one multi-task network.
    sizes = result["sizes"]
    assert sizes["stl"]["parameters"] + sizes["sfcn"]["parameters"] > sizes["mgcn_r"]["parameters"]
    # Every variant was scored on the same test images.
    counts = {m["n_images"] for m in result["metrics"].values()}
    assert len(counts) == 1
