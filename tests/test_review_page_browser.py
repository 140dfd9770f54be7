"""The review page in a real browser: click and type decisions, save, feed the file back.

Needs Chromium (Debian: `apt-get install chromium`; or set LIBRAGEN_CHROMIUM to a binary) and
the playwright Python package (`pip install playwright`; its own browser download is not used).
Set LIBRAGEN_REVIEW_SCREENSHOT=path.png to keep a screenshot of the page.
"""
from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def open_review_page(uri: str):
    """A review page (file URI) in headless Chromium: yields (page, the page's script errors)."""
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(accept_downloads=True, viewport={"width": 1100, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(uri)
            yield page, errors
        finally:
            browser.close()


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
    with open_review_page(page_path.as_uri()) as (page, errors):
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


HOSTILE_CAPTION = ("Ref 1: a dot <!--<script> moves </script><img src=x onerror=\"window.__pwned = 1\"> left"
                   "\u2028second line\u2029& 'quotes' \" ]]>")
HOSTILE_ID = "clip\"><img src=x onerror=\"window.__pwned = 2\">"
HOSTILE_RUN = "run</title><script>window.__pwned = 3</script><!--"


def test_hostile_caption_id_and_run_id_render_as_text(curated, tmp_path):
    """A caption holding `<!--<script>` once blanked the page: the data block's script element
    swallowed the page's own script. Every embedded string must come back as the same text."""
    from libragen_core.curation.review_page import write_review_page

    out, _ = curated
    with open(out / "accepted.jsonl", encoding="utf-8") as f:
        records = [json.loads(line) for line in f][:2]
    records = [{**records[0], "video": str(out / records[0]["video"]), "id": HOSTILE_ID, "caption": HOSTILE_CAPTION},
               {**records[1], "video": str(out / records[1]["video"])}]
    page_path = write_review_page(tmp_path, records, outcomes_by_id={}, run_id=HOSTILE_RUN)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors, dialogs = [], []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(page_path.as_uri())
            cards = page.locator("section.card")
            assert cards.count() == 2, page.content()[:2000]
            assert cards.nth(0).locator(".caption").evaluate("e => e.textContent") == HOSTILE_CAPTION
            assert cards.nth(0).get_attribute("data-id") == HOSTILE_ID
            assert cards.nth(1).locator(".caption").evaluate("e => e.textContent") == records[1]["caption"]
            assert page.title() == f"LibraGen review: {HOSTILE_RUN}"
            assert page.locator(".caption img").count() == 0  # the markup stayed text
            page.wait_for_timeout(300)  # an injected onerror handler would have run by now
            assert page.evaluate("window.__pwned") is None
            assert page.inner_text("#counter").startswith("0 of 2 reviewed")
            cards.nth(0).locator("button.acc").click()
            assert page.inner_text("#counter").startswith("1 of 2 reviewed")
            page.screenshot(path=str(tmp_path / "hostile.png"))
            assert not errors and not dialogs, (errors, dialogs)
        finally:
            browser.close()
