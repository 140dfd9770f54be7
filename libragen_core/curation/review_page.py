"""The manual review page: one static HTML file plus contact-sheet PNGs beside it.

Open review/index.html in any browser (no server needed). Each clip that passed the automatic
filters gets a card: a contact sheet of its frames, its caption and its filter scores, with
Accept / Reject buttons. Keys: J / K or the arrow keys move between cards, A accepts, R rejects,
U clears, S saves. Choices survive a reload (localStorage); "Save decisions" downloads
decisions.json, which `libragen curate --out DIR --decisions decisions.json` reads back.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path
from ..io.video import read_video
from .decisions import FORMAT, VERSION


def sheet_name(clip_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", clip_id) + ".png"


def contact_sheet(frames: np.ndarray, max_tiles: int = 12, height: int = 128, gap: int = 2) -> np.ndarray:
    """Every step-th frame (at most max_tiles), scaled to `height` pixels: small frames (SpriteWorld's
    64 px) by whole-pixel zoom, large ones (real video) shrunk."""
    step = max(1, -(-len(frames) // max_tiles))
    h0 = frames.shape[1]
    if height % h0 == 0:
        zoom = height // h0
        tiles = [np.kron(f, np.ones((zoom, zoom, 1), np.uint8)) for f in frames[::step]]
    else:
        from PIL import Image

        size = (max(1, round(frames.shape[2] * height / h0)), height)
        tiles = [np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames[::step]]
    h, w = tiles[0].shape[:2]
    sheet = np.full((h, len(tiles) * (w + gap) - gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        sheet[:, i * (w + gap) : i * (w + gap) + w] = tile
    return sheet


def write_review_page(out_dir, accepted: list[dict], *, outcomes_by_id: dict, run_id: str,
                      frames_of=None, image_of=None, heading: str = "Clip review") -> Path:
    """Write out_dir/review/index.html and review/sheets/*.png for the accepted records.
    frames_of(record) -> the frames a sheet shows (default: every frame of its video);
    image_of(record) -> (the card's whole picture, its frame count) instead, e.g. a DPO pair's
    references, winner and loser stacked (training/pair_review.py)."""
    from ..io.images import save_png

    out_dir = Path(out_dir)
    review = out_dir / "review"
    (review / "sheets").mkdir(parents=True, exist_ok=True)
    items = []
    for rec in accepted:
        name = sheet_name(rec["id"])
        if image_of is not None:
            image, n_frames = image_of(rec)
        else:
            frames = frames_of(rec) if frames_of is not None else read_video(out_dir / rec["video"])[0]
            image, n_frames = contact_sheet(frames), len(frames)
        save_png(review / "sheets" / name, image)
        results = outcomes_by_id.get(rec["id"], {}).get("results", [])
        items.append({
            "id": rec["id"],
            "sheet": f"sheets/{name}",
            "caption": rec["caption"],
            "frames": int(n_frames),
            "scores": [[r["name"], r["score"], r["threshold"]] for r in results],
        })
    page = render_html(items, run_id, heading)
    path = review / "index.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


# Inside a <script> element the HTML parser still reacts to "</script", "<!--" and "<script" (a
# "<!--<script>" in a caption made it swallow the page's own script and blank the page). JSON can
# spell every character as \uXXXX, so the data block is written without "<", ">" or "&" at all; the
# line and paragraph separators too (JavaScript source before ES2019 does not allow them raw).
_SCRIPT_SAFE = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def script_json(value) -> str:
    """`value` as JSON that can sit inside an HTML <script> element unchanged."""
    return json.dumps(value, ensure_ascii=False).translate(_SCRIPT_SAFE)


def render_html(items: list[dict], run_id: str, heading: str = "Clip review") -> str:
    data = script_json({"run_id": run_id, "format": FORMAT, "version": VERSION, "items": items})
    # one pass: a title holding "__DATA__" must not receive the data
    parts = {"__TITLE__": html.escape(f"LibraGen review: {run_id}"), "__DATA__": data,
             "__HEADING__": html.escape(heading)}
    return re.sub("__TITLE__|__DATA__|__HEADING__", lambda m: parts[m.group(0)], _TEMPLATE)


_TEMPLATE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  :root { --ok: #1d7a3a; --bad: #b3261e; --ink: #1b1b1f; --muted: #5f6368; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--ink); background: #f4f4f6; }
  header { position: sticky; top: 0; z-index: 2; display: flex; gap: 16px; align-items: center; flex-wrap: wrap;
           padding: 10px 16px; background: #fff; border-bottom: 1px solid #ddd; }
  header h1 { font-size: 16px; margin: 0 12px 0 0; }
  #counter { font-variant-numeric: tabular-nums; }
  #counter b { font-weight: 600; }
  .keys { color: var(--muted); font-size: 12px; }
  kbd { border: 1px solid #ccc; border-bottom-width: 2px; border-radius: 3px; padding: 0 4px; background: #fafafa; font-size: 11px; }
  button { font: inherit; padding: 6px 14px; border-radius: 6px; border: 1px solid #bbb; background: #fff; cursor: pointer; }
  button:focus-visible { outline: 3px solid #6a9cf5; outline-offset: 1px; }
  #save { background: #1a56db; color: #fff; border-color: #1a56db; margin-left: auto; }
  main { padding: 16px; display: grid; gap: 14px; max-width: 1100px; margin: 0 auto; }
  .card { background: #fff; border: 2px solid #ddd; border-radius: 10px; padding: 12px 14px; scroll-margin-top: 70px; }
  .card.current { box-shadow: 0 0 0 3px #6a9cf5; }
  .card.accept { border-color: var(--ok); }
  .card.reject { border-color: var(--bad); opacity: .72; }
  .top { display: flex; gap: 10px; align-items: center; margin-bottom: 8px; }
  .id { font-family: ui-monospace, monospace; font-size: 12px; color: var(--muted); }
  .state { font-size: 12px; font-weight: 600; text-transform: uppercase; letter-spacing: .04em; }
  .accept .state { color: var(--ok); } .reject .state { color: var(--bad); }
  .sheet { max-width: 100%; image-rendering: pixelated; display: block; border-radius: 4px; }
  .caption { white-space: pre-wrap; margin: 8px 0; }
  table { border-collapse: collapse; font-size: 12px; color: var(--muted); }
  td { padding: 1px 10px 1px 0; font-variant-numeric: tabular-nums; }
  .actions { display: flex; gap: 8px; margin-top: 8px; }
  .actions .acc { border-color: var(--ok); color: var(--ok); }
  .actions .rej { border-color: var(--bad); color: var(--bad); }
  .accept .actions .acc { background: var(--ok); color: #fff; }
  .reject .actions .rej { background: var(--bad); color: #fff; }
</style>
</head>
<body>
<header>
  <h1>__HEADING__</h1>
  <span id="counter"></span>
  <span class="keys"><kbd>J</kbd>/<kbd>K</kbd> move &nbsp; <kbd>A</kbd> accept &nbsp; <kbd>R</kbd> reject &nbsp; <kbd>U</kbd> clear &nbsp; <kbd>S</kbd> save</span>
  <button id="save" type="button">Save decisions</button>
</header>
<main id="cards"></main>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const KEY = "libragen-review:" + DATA.run_id;
let decisions = {};
try { decisions = JSON.parse(localStorage.getItem(KEY) || "{}"); } catch (e) { decisions = {}; }
let current = 0;
const cards = [];

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function build() {
  const main = document.getElementById("cards");
  DATA.items.forEach((item, i) => {
    const card = el("section", {class: "card", "data-id": item.id, tabindex: "-1"});
    const top = el("div", {class: "top"});
    top.append(el("span", {class: "id"}, (i + 1) + ". " + item.id), el("span", {class: "state"}, ""));
    const img = el("img", {class: "sheet", src: item.sheet, alt: "frames of " + item.id, loading: "lazy"});
    const cap = el("div", {class: "caption"}, item.caption);
    const table = el("table");
    for (const [name, score, threshold] of item.scores) {
      const tr = el("tr");
      tr.append(el("td", {}, name), el("td", {}, String(score)), el("td", {}, "threshold " + threshold));
      table.append(tr);
    }
    const actions = el("div", {class: "actions"});
    const acc = el("button", {class: "acc", type: "button"}, "Accept");
    const rej = el("button", {class: "rej", type: "button"}, "Reject");
    // stopPropagation: the card's own click handler would move the focus back to this card
    acc.addEventListener("click", (e) => { e.stopPropagation(); current = i; decide("accept"); });
    rej.addEventListener("click", (e) => { e.stopPropagation(); current = i; decide("reject"); });
    actions.append(acc, rej);
    card.append(top, img, cap, table, actions);
    card.addEventListener("click", () => { current = i; refresh(false); });
    main.append(card);
    cards.push(card);
  });
}

function refresh(scroll) {
  let a = 0, r = 0;
  cards.forEach((card, i) => {
    const d = decisions[card.dataset.id];
    card.classList.toggle("accept", d === "accept");
    card.classList.toggle("reject", d === "reject");
    card.classList.toggle("current", i === current);
    card.querySelector(".state").textContent = d ? d + "ed" : "";
    if (d === "accept") a++; else if (d === "reject") r++;
  });
  const n = cards.length;
  document.getElementById("counter").innerHTML =
    "<b>" + (a + r) + "</b> of " + n + " reviewed &middot; <b>" + a + "</b> accepted &middot; <b>" + r +
    "</b> rejected &middot; <b>" + (n - a - r) + "</b> left";
  if (scroll && cards[current]) cards[current].scrollIntoView({block: "nearest"});
  try { localStorage.setItem(KEY, JSON.stringify(decisions)); } catch (e) { /* private mode: memory only */ }
}

function decide(value) {
  const card = cards[current];
  if (!card) return;
  if (value === null) delete decisions[card.dataset.id]; else decisions[card.dataset.id] = value;
  if (value !== null && current < cards.length - 1) current++;
  refresh(true);
}

function save() {
  const doc = {format: DATA.format, version: DATA.version, run_id: DATA.run_id,
               saved_at: new Date().toISOString(), decisions: decisions};
  const blob = new Blob([JSON.stringify(doc, null, 1)], {type: "application/json"});
  const url = URL.createObjectURL(blob);
  const a = el("a", {href: url, download: "decisions.json"});
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key.toLowerCase();
  if (k === "j" || k === "arrowdown") { current = Math.min(cards.length - 1, current + 1); refresh(true); }
  else if (k === "k" || k === "arrowup") { current = Math.max(0, current - 1); refresh(true); }
  else if (k === "a") decide("accept");
  else if (k === "r") decide("reject");
  else if (k === "u") decide(null);
  else if (k === "s") save();
  else return;
  e.preventDefault();
});
document.getElementById("save").addEventListener("click", save);
build();
refresh(false);
</script>
</body>
</html>
"""
