"""The review page in a real browser: click and type decisions, save, feed the file back.

Needs Chromium (Debian: `apt-get install chromium`; or set LIBRAGEN_CHROMIUM to a binary) and
the playwright Python package (`pip install playwright`; its own browser download is not used).
Set LIBRAGEN_REVIEW_SCREENSHOT=path.png to keep a screenshot of the page.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from libragen_core.curation.pipeline import apply_decisions, curate_dataset
from libragen_core.errors import InputError
from libragen_core.spriteworld.dataset import write_dataset

CHROMIUM = os.environ.get("LIBRAGEN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium, or set LIBRAGEN_CHROMIUM)")


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    data, out = root / "data", root / "out"
    scene = {"n_subjects": 1, "p_camera": 0.0, "p_occluder": 0.0, "identity_filter": {"sizes": ["large"]},
             "motions": ["move_left", "move_right", "grow", "circle_cw"]}
    write_dataset(data, "t2v", 6, seed=515, scene_options=scene)
    report = curate_dataset(data, out, progress=False)
    assert report["n_accepted"] >= 4, report  # clean large subjects: the filters should keep most
    return out, report


def test_review_page_decisions_round_trip(curated, tmp_path):
    out, report = curated
    page_path = out / "review" / "index.html"
    with open(out / "accepted.jsonl", encoding="utf-8") as f:
        ids = [json.loads(line)["id"] for line in f]
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(accept_downloads=True, viewport={"width": 1100, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.as_uri())
            cards = page.locator("section.card")
            assert cards.count() == len(ids)
            # every contact sheet loads once scrolled to (they load lazily: the ones below the fold
            # are not loaded at the page's load event, which once failed this check)
            sheets = page.locator("img.sheet")
            assert sheets.count() == len(ids)
            for k in range(sheets.count()):
                sheets.nth(k).scroll_into_view_if_needed()
            page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)",
                                   timeout=15000)
            assert f"0</b> of {len(ids)} reviewed" in page.inner_html("#counter")

            cards.nth(0).locator("button.acc").click()
            cards.nth(1).locator("button.rej").click()
            # the keyboard: focus moved to card 3 after the reject; R rejects it, then clear it with U
            page.keyboard.press("r")
            page.keyboard.press("k")
            page.keyboard.press("u")
            page.keyboard.press("j")
            page.keyboard.press("a")
            counter = page.inner_text("#counter")
            assert counter.startswith(f"3 of {len(ids)} reviewed"), counter
            assert "2 accepted" in counter and "1 rejected" in counter
            assert "reject" in cards.nth(1).get_attribute("class")

            shot = os.environ.get("LIBRAGEN_REVIEW_SCREENSHOT")
            page.screenshot(path=shot or str(tmp_path / "review.png"))
            with page.expect_download() as info:
                page.click("#save")
            saved = tmp_path / "decisions.json"
            info.value.save_as(saved)
            assert info.value.suggested_filename == "decisions.json"

            # a reload keeps the choices (localStorage)
            page.reload()
            assert page.inner_text("#counter").startswith(f"3 of {len(ids)} reviewed")
            assert not errors, errors
        finally:
            browser.close()

    doc = json.loads(saved.read_text(encoding="utf-8"))
    assert doc["format"] == "libragen-curation-decisions" and doc["version"] == 1
    assert doc["run_id"] == report["run_id"]
    assert doc["decisions"] == {ids[0]: "accept", ids[1]: "reject", ids[3]: "accept"}

    summary = apply_decisions(out, saved)
    with open(out / "final.jsonl", encoding="utf-8") as f:
        final = [json.loads(line) for line in f]
    assert [r["id"] for r in final] == [i for i in ids if i != ids[1]]
    assert summary["manual_rejects"] == [ids[1]]
    assert {r["id"]: r["review"] for r in final}[ids[0]] == "accept"
    assert Path(out / final[0]["video"]).is_file()  # paths resolve from the output folder

    dropped = apply_decisions(out, saved, undecided="drop")
    assert dropped["n_final"] == 2


def test_decisions_from_another_run_are_refused(curated, tmp_path):
    out, _ = curated
    bad = tmp_path / "decisions.json"
    bad.write_text(json.dumps({"format": "libragen-curation-decisions", "version": 1, "run_id": "other", "decisions": {}}))
    with pytest.raises(InputError, match="saved for curation run"):
        apply_decisions(out, bad)
