"""The pair review page (the paper filters DPO pairs by hand, docs/method.md section 4).

    python -m training.pair_review --config training/configs/cpu-smoke.toml --stage dpo_consis --set run.out=...

Writes <run.out>/<stage>/pairs/review/index.html: the curation review page
(libragen_core.curation.review_page) with one card per pair the automatic judges kept, its
picture three rows high: the references as the model sees them, the winner's frames, the
loser's frames. Accept / Reject, then "Save decisions" downloads decisions.json; give it to the
DPO stage with `--set <stage>.filter.decisions=decisions.json` (its rejected pairs are left out).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from libragen_core.errors import InputError

from .common.schema import PostChainConfig
from .dpo_pairs import PAIR_STAGES, pairs_folder
from .pairs import read_records
from .post_common import stages_main


def pair_picture(folder: Path, pid: str) -> tuple[np.ndarray, int]:
    """(references / winner / loser rows stacked, the winner's frame count) of one stored pair."""
    from PIL import Image

    from libragen_core.curation.review_page import contact_sheet
    from libragen_core.io.video import read_video

    files = folder / "pairs"
    winner, loser = (read_video(files / f"{pid}.{side}.mp4")[0] for side in ("winner", "loser"))
    rows = [contact_sheet(winner), contact_sheet(loser)]
    refs = files / f"{pid}.refs.png"
    if refs.is_file():
        rows.insert(0, contact_sheet(np.asarray(Image.open(refs).convert("RGB"))[None]))
    gap, width = 6, max(r.shape[1] for r in rows)
    out = np.full((sum(r.shape[0] for r in rows) + gap * (len(rows) - 1), width, 3), 255, np.uint8)
    y = 0
    for r in rows:
        out[y:y + r.shape[0], :r.shape[1]] = r
        y += r.shape[0] + gap
    return out, len(winner)


def write_pair_review(folder: str | Path, run_id: str) -> Path:
    """folder: a stage's pairs folder (pairs.jsonl, pairs/); returns the page's path."""
    from libragen_core.curation.review_page import write_review_page

    folder = Path(folder)
    records = [r for r in read_records(folder) if r.kept]
    missing = [r.id for r in records if not (folder / "pairs" / f"{r.id}.winner.mp4").is_file()]
    if missing:
        raise InputError(f"{folder}: pairs {', '.join(missing[:3])} have no videos; they were made without "
                         "videos (SpriteWorld's in-loop pairs); generate them with python -m training.dpo_pairs")
    cards = [{"id": r.id, "caption": f"{r.caption}\nrows: {'references, ' if (folder / 'pairs' / f'{r.id}.refs.png').is_file() else ''}"
                                     f"winner ({'real clip' if r.kind == 'realfake' else 'references in place'}), "
                                     f"loser ({'the model' if r.kind == 'realfake' else 'references shifted'})"}
             for r in records]
    outcomes = {r.id: {"results": [{"name": k, "score": round(float(v), 4), "threshold": "-"}
                                   for k, v in sorted(r.metrics.items())]} for r in records}
    return write_review_page(folder, cards, outcomes_by_id=outcomes, run_id=run_id,
                             image_of=lambda c: pair_picture(folder, c["id"]), heading="DPO pair review")


def run_pair_review(cfg: PostChainConfig, stage: str) -> Path:
    page = write_pair_review(pairs_folder(cfg, stage), f"{Path(cfg.run.out).name}/{stage}")
    print(f"[{stage}] review page: {page}; save decisions.json from it, then run the stage with "
          f"--set {stage}.filter.decisions=decisions.json")
    return page


def main(argv=None) -> int:
    return stages_main("python -m training.pair_review", __doc__, list(PAIR_STAGES), run_pair_review, argv)


if __name__ == "__main__":
    sys.exit(main())
