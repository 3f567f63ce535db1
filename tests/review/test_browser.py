"""The review page in a real browser (Debian chromium, headless, through Playwright) against a
real ``abdus review``: drag a kidney caliper end by a known number of screen px, save, and find
the moved landmark (source px), its length (mm) and the kept prediction in REVIEWED/manifest.json;
then two saves from one stale version, the second shown as a conflict; then the export."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser_support as support

playwright = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
)
if support.chromium_path() is None:
    pytest.skip(
        "Debian chromium is not installed (bash scripts/install_system_deps.sh)",
        allow_module_level=True,
    )

TOKEN = "review-test-token"
DRAG_PX = (60, -25)  # screen (CSS) px; the page is at device scale 1
KIDNEY_LONG = ("kidney_right_long", "kidney_left_long")


@pytest.fixture(scope="module")
def review(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``abdus review`` over one generated patient (PNG) with a token: (base URL, REVIEWED)."""
    root = tmp_path_factory.mktemp("review")
    source, out = root / "cohort", root / "reviewed"
    (root / "token").write_text(TOKEN + "\n")
    subprocess.run(
        [*support.ABDUS, "generate", str(source), "--patients", "1", "--format", "png"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    process, base = support.start_review(source, out, token_file=root / "token")
    try:
        yield base, out
    finally:
        support.stop_review(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=support.chromium_path(), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _open(browser, base: str, item_id: str):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{base}/#token={TOKEN}")  # the page sends it as a bearer token
    support.wait_shown(page)
    # a click on the item already shown opens it again, after the wait below could pass
    if page.evaluate("window.abdusReview.shownId") != item_id:
        page.click(f'#items li[data-id="{item_id}"]')
        support.wait_shown(page, item_id)
    return page


def _get_json(url: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _kidney_item(page, base: str) -> dict:
    """The first kidney long view whose length the reader measured (both landmarks)."""
    items = page.evaluate("window.abdusReview.state.list")
    for item in items:
        if item["view"] in KIDNEY_LONG:
            detail = _get_json(f"{base}/api/items/{item['id']}")
            if {"kl_la_1", "kl_la_2"} <= set(detail["landmarks"]):
                return item
    raise AssertionError(f"no measured kidney long view among {[i['view'] for i in items]}")


def test_drag_save_and_conflict(review: tuple[str, Path], browser) -> None:
    base, out = review
    anonymous = browser.new_page()
    anonymous.goto(base + "/")  # the page is public; without the token its API calls are not
    anonymous.wait_for_selector("#banner:not([hidden])")
    assert "bearer token" in anonymous.inner_text("#banner-text")
    anonymous.close()
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{base}/#token={TOKEN}")
    support.wait_shown(page)
    item_id = _kidney_item(page, base)["id"]
    page.close()

    page = _open(browser, base, item_id)
    stale = _open(browser, base, item_id)  # a second reviewer on the same version
    item = page.evaluate("window.abdusReview.state.item")
    row_mm, col_mm = item["spacing_mm"]
    before = item["landmarks"]["kl_la_1"]
    other = item["landmarks"]["kl_la_2"]
    # Zoom in with the wheel over the end to be dragged (the point under the pointer stays put).
    fit_scale = page.evaluate("window.abdusReview.viewer.view.scale")
    box = page.locator('circle[data-landmark="kl_la_1"]').bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -400)
    page.wait_for_function("s => window.abdusReview.viewer.view.scale > 1.5 * s", arg=fit_scale)
    scale = page.evaluate("window.abdusReview.viewer.view.scale")

    handle = page.locator('circle[data-landmark="kl_la_1"]').bounding_box()
    # Whole CSS px, so the pointer moves by exactly DRAG_PX whatever the browser rounds.
    x, y = round(handle["x"] + handle["width"] / 2), round(handle["y"] + handle["height"] / 2)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + DRAG_PX[0], y + DRAG_PX[1], steps=8)
    page.mouse.up()

    expected = (before["x"] + DRAG_PX[0] / scale, before["y"] + DRAG_PX[1] / scale)
    expected_mm = math.hypot(
        (other["x"] - expected[0]) * col_mm, (other["y"] - expected[1]) * row_mm
    )
    shown = page.locator('#measurements tr[data-code="KL_LA"] td.mm').inner_text()
    assert shown.endswith(" mm") and float(shown.split()[0]) == pytest.approx(
        expected_mm, abs=0.051
    )

    page.click("#save")
    page.wait_for_function("document.querySelector('#save-state').textContent.startsWith('saved')")
    page.reload()
    support.wait_shown(page)

    manifest = json.loads((out / "manifest.json").read_text())
    record = next(r for r in manifest["images"] if r["id"] == item_id)
    saved = record["landmarks"]["kl_la_1"]
    assert math.hypot(saved[0] - expected[0], saved[1] - expected[1]) < 1.0
    review_meta = record["meta"]["review"]
    assert review_meta["status"] == "corrected"
    original = review_meta["original"]["landmarks"]["kl_la_1"]
    assert math.hypot(original["x"] - before["x"], original["y"] - before["y"]) < 1e-6
    served = _get_json(f"{base}/api/items/{item_id}")
    assert served["measurements_mm"]["KL_LA"] == pytest.approx(expected_mm, abs=0.5)

    # The second page still holds the version before the save: its save is refused, and the
    # page says why and offers to reload.
    stale.click("#save")
    stale.wait_for_selector("#banner:not([hidden])")
    assert "Not saved" in stale.inner_text("#banner-text")
    assert stale.is_visible("#banner-reload")
    stale.click("#banner-reload")
    stale.wait_for_selector("#banner", state="hidden")
    assert stale.evaluate("window.abdusReview.state.item.version") == served["version"]

    page.click("#export")
    page.wait_for_function(
        "document.querySelector('#banner-text').textContent.startsWith('Export')"
    )
    assert page.inner_text("#banner-text").startswith("Exported")
    assert item_id in (out / "exports" / "measurements.csv").read_text()

    # Another view brings its task's calipers and measurements (placed by default here).
    page.select_option("#item-view", "spleen_trans")
    landmarks = page.eval_on_selector_all("circle", "cs => cs.map(c => c.dataset.landmark)")
    assert sorted(landmarks) == ["st_la_1", "st_la_2", "st_sa_1", "st_sa_2"]
    rows = page.eval_on_selector_all("#measurements tr", "rs => rs.map(r => r.dataset.code)")
    assert rows == ["ST_LA", "ST_SA"]

    # Keys: n goes to the next item of the work list, p back.
    order = [i["id"] for i in page.evaluate("window.abdusReview.state.list")]
    current = page.evaluate("window.abdusReview.shownId")
    page.evaluate("document.activeElement.blur()")  # keys typed into a form field are text
    page.keyboard.press("n")
    support.wait_shown(page, order[order.index(current) + 1])
    page.keyboard.press("p")
    support.wait_shown(page, current)
