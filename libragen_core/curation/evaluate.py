"""Score a curation run against the defect labels a SpriteWorld `defects` dataset carries.

Evaluation only: the filters never see these labels. Takes the records of accepted.jsonl and
rejected.jsonl (each with its original `defect` label and the `curation` field the pipeline adds).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..spriteworld.defects import DEFECT_KINDS
from .filters import FILTER_KIND


def load_run(out_dir) -> list[dict]:
    rows = []
    for name in ("accepted.jsonl", "rejected.jsonl"):
        with open(Path(out_dir) / name, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def _fails(rec: dict, filt: str) -> bool:
    cur = rec["curation"]
    return cur.get("rejected_by") == filt or any(r.startswith(filt + ":") for r in cur.get("reasons", []))


def score_run(rows: list[dict]) -> dict:
    """Per defect kind: n, recall by its own filter, recall by any filter, precision of its filter."""
    kind_filter = {k: f for f, k in FILTER_KIND.items()}
    table = {}
    for kind in DEFECT_KINDS:
        own = kind_filter[kind]
        have = [r for r in rows if r["defect"]["kind"] == kind]
        flagged = [r for r in rows if r["curation"].get("rejected_by") == own]
        table[kind] = {
            "n": len(have),
            "recall_own": sum(_fails(r, own) for r in have) / max(1, len(have)),
            "recall_any": sum(r["curation"].get("rejected_by") is not None for r in have) / max(1, len(have)),
            "precision": sum(r["defect"]["kind"] == kind for r in flagged) / max(1, len(flagged)),
            "flagged": len(flagged),
        }
    clean = [r for r in rows if r["defect"]["kind"] == "none"]
    false_rejects = [r for r in clean if r["curation"].get("rejected_by")]
    return {"kinds": table, "n_clean": len(clean), "clean_false_reject": len(false_rejects) / max(1, len(clean)),
            "clean_rejected_by": sorted(r["curation"]["rejected_by"] for r in false_rejects)}
