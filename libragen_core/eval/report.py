"""Eval outputs: results.json, a markdown table, and a contact sheet PNG, each written atomically.

Contact sheet: one row per case (its caption-prompt video): the references, a gap, then six
frames spread over the clip, with the case id and its summary metrics written under the row.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_path
from .harness import SUMMARY_METRICS
from .suite import EvalCase

_LABELS = {"fidelity": "fid", "fidelity_min": "fid_min", "motion": "motion", "motion_acc": "mot_acc", "copy_paste": "copy",
           "smoothness": "smooth", "dynamic": "dyn", "realness": "real", "copy_paste_rate": "copy_rate"}


def results_json(results: dict) -> str:
    rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results["rows"]]
    return json.dumps({**results, "rows": rows}, indent=1, sort_keys=True)


def markdown_table(results: dict) -> str:
    cols = list(SUMMARY_METRICS) + ["copy_paste_rate", "n"]
    head = "| split | " + " | ".join(_LABELS.get(c, c) for c in cols) + " |"
    lines = [f"### {results['model']}: {results['n_cases']} cases, {results['n_videos']} videos, "
             f"{results.get('references', 'cross')} references", "", head,
             "|" + "---|" * (len(cols) + 1)]
    agg = results["aggregates"]
    groups = [("all", agg["all"])]
    groups += [(f"identities {k}", v) for k, v in agg["identities"].items()]
    groups += [(f"prompt {k}", v) for k, v in agg["prompt"].items()]
    groups += [(f"{k} subject(s)", v) for k, v in agg["subjects"].items()]
    for name, g in groups:
        if not g:
            continue
        cells = [f"{g[c]:.3f}" if c != "n" else str(g[c]) for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def contact_sheet(results: dict, cases: list[EvalCase], cell: int = 96, n_frames: int = 6) -> np.ndarray:
    from PIL import Image, ImageDraw

    by_case = {r["case"]: r for r in results["rows"] if r["prompt_kind"] == "caption"}
    max_refs = max(c.n_subjects for c in cases)
    gap, text_h = 8, 30
    width = (max_refs + n_frames) * cell + gap
    height = len(cases) * (cell + text_h)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, case in enumerate(cases):
        row = by_case.get(case.id)
        if row is None:
            continue
        y = i * (cell + text_h)
        kind = results.get("references")
        refs = [] if kind == "none" else case.inpair_refs if kind == "inpair" else case.refs
        if not refs:  # a text-to-video row: leave the reference cells empty, not the case's images
            draw.text((4, y + cell // 2 - 6), "no references", fill=(120, 120, 120))
        for k, ref in enumerate(refs):
            sheet.paste(Image.fromarray(ref).resize((cell, cell), Image.NEAREST), (k * cell, y))
        frames = row["_frames"]
        idx = np.linspace(0, len(frames) - 1, n_frames).round().astype(int)
        x0 = max_refs * cell + gap
        for j, t in enumerate(idx):
            sheet.paste(Image.fromarray(frames[t]).resize((cell, cell), Image.NEAREST), (x0 + j * cell, y))
        s = row["metrics"]["summary"]
        motions = ",".join(sub["motion"]["motion"] + ("" if sub["motion"]["correct"] else f"->{sub['motion']['predicted']}")
                           for sub in row["metrics"]["subjects"])
        line1 = f"{case.id}  " + "  ".join(f"{_LABELS[m]} {s[m]:.2f}" for m in SUMMARY_METRICS)
        draw.text((2, y + cell + 2), line1, fill=(0, 0, 0))
        draw.text((2, y + cell + 15), f"motions: {motions}", fill=(70, 70, 70))
    return np.asarray(sheet)


def write_report(results: dict, cases: list[EvalCase], out_dir) -> dict[str, Path]:
    """Write results.json, report.md and contact_sheet.png into out_dir (which must exist or be creatable)."""
    from ..io.images import save_png

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "report.md", "contact_sheet": out / "contact_sheet.png"}
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(results_json(results) + "\n", encoding="utf-8")
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(markdown_table(results), encoding="utf-8")
    save_png(paths["contact_sheet"], contact_sheet(results, cases))
    return paths
