"""Time to the next image in the ``abdus review`` page: accept images in a row with the keyboard.

Builds a SOURCE of ``--items`` items (a generated PNG cohort whose manifest repeats its images
under new ids, so every item is decoded by the server like a new image), starts
``abdus review`` on 127.0.0.1, opens the page in Debian's chromium (headless, Playwright) and
presses ``a`` (accept, save, next) ``--accept`` times. For each press the page records the ms
from the key press to the ``load`` of the next item's image; the script prints the median, p95
and max (and the same of the save alone, the POST of each accept), and the machine, as JSON.

    .venv/bin/python scripts/bench_review.py                       # 1000 items, 50 accepted
    .venv/bin/python scripts/bench_review.py --screenshot docs/review.png

``--screenshot`` also saves the page showing a kidney view after a caliper end was dragged.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "review"))
import browser_support as support


def make_source(folder: Path, items: int, patients: int) -> Path:
    """A generated cohort whose manifest lists its images again and again up to ``items``."""
    subprocess.run(
        [*support.ABDUS, "generate", str(folder), "--patients", str(patients), "--format", "png"],
        check=True,
        capture_output=True,
    )
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    images = manifest["images"]
    repeated = []
    for i in range(items):
        record = dict(images[i % len(images)])
        record["id"] = f"{record['id']}_r{i // len(images):03d}"
        repeated.append(record)
    manifest["images"] = repeated
    path.write_text(json.dumps(manifest))
    return folder


def machine() -> dict[str, object]:
    """CPU model, vector extensions and cores (from lscpu where available)."""
    info: dict[str, object] = {"cores": os.cpu_count(), "python": platform.python_version()}
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    info["cpu"] = fields.get("Model name", "").strip()
    flags = fields.get("Flags", "").split()
    info["avx2"] = "avx2" in flags
    info["avx512f"] = "avx512f" in flags
    return info


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def screenshot(page, path: Path) -> None:
    """The page on the first measurable kidney long view, one caliper end dragged (not saved)."""
    items = page.evaluate("window.abdusReview.state.list")
    for entry in [i for i in items if i["view"] in ("kidney_right_long", "kidney_left_long")]:
        page.click(f'#items li[data-id="{entry["id"]}"]')
        support.wait_shown(page, entry["id"])
        if page.evaluate("window.abdusReview.state.notMeasurable.size") == 0:
            break
    box = page.locator('circle[data-landmark="kl_la_1"]').bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 30, y + 12, steps=5)
    page.mouse.up()
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))


def bench(items: int, accept: int, patients: int, shot: Path | None) -> dict[str, object]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        source = make_source(Path(tmp) / "source", items, patients)
        process, base = support.start_review(source, Path(tmp) / "reviewed", timeout_s=120)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=support.chromium_path(), headless=True)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(base + "/")
                support.wait_shown(page)
                if shot is not None:
                    screenshot(page, shot)
                    page.reload()
                    support.wait_shown(page)
                time.sleep(1.0)  # let the preload of the second item finish, as a reader would
                waits = []
                for _ in range(accept):
                    done = page.evaluate("window.abdusReview.timings.length")
                    page.keyboard.press("a")
                    page.wait_for_function(
                        "n => window.abdusReview.timings.length > n", arg=done, timeout=30_000
                    )
                    waits.append(page.evaluate("window.abdusReview.timings.at(-1).sinceKey"))
                saves = page.evaluate("window.abdusReview.saveMs")
                statuses: dict[str, int] = {}
                for entry in page.evaluate("window.abdusReview.state.list"):
                    statuses[entry["status"]] = statuses.get(entry["status"], 0) + 1
                browser.close()
        finally:
            support.stop_review(process)
    return {
        "items": items,
        "pressed": accept,
        "statuses": statuses,
        "ms_to_next_image": {
            "median": round(statistics.median(waits), 1),
            "p95": round(percentile(waits, 0.95), 1),
            "max": round(max(waits), 1),
        },
        "ms_of_save": {
            "median": round(statistics.median(saves), 1),
            "p95": round(percentile(saves, 0.95), 1),
        },
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1000, help="items in SOURCE (default 1000)")
    parser.add_argument("--accept", type=int, default=50, help="images accepted (default 50)")
    parser.add_argument("--patients", type=int, default=4, help="generated patients (default 4)")
    parser.add_argument("--screenshot", type=Path, help="also save a screenshot of the page")
    args = parser.parse_args()
    if support.chromium_path() is None:
        sys.exit("bench_review: Debian chromium is needed (bash scripts/install_system_deps.sh)")
    print(json.dumps(bench(args.items, args.accept, args.patients, args.screenshot), indent=2))


if __name__ == "__main__":
    main()
