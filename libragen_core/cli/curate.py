"""`libragen curate`: filter a dataset automatically, then apply the review page's decisions.

    libragen curate DATASET_DIR --out OUT_DIR [--workers 2] [--threshold blur=0.2 ...]
    libragen curate VIDEO_FOLDER --out OUT_DIR [--threshold duration=3 ...]   # real videos -> a manifest
    libragen curate --out OUT_DIR --decisions decisions.json [--undecided keep|drop]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError


def _threshold(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"thresholds are NAME=NUMBER (e.g. blur=0.2); got {text!r}") from None


def add_parser(sub):
    p = sub.add_parser("curate", help="curate a dataset: automatic filters, a review page, then the final manifest")
    p.add_argument("dataset", nargs="?", help="a SpriteWorld-style dataset folder with manifest.jsonl, or a folder of "
                   "videos with <name>.json / <name>.txt captions beside them (omit with --decisions)")
    p.add_argument("--out", required=True, help="output folder for accepted/rejected manifests, report and review page")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--threshold", type=_threshold, action="append", default=[], metavar="NAME=VALUE",
                   help="override a filter threshold (repeatable); names as in report.json")
    p.add_argument("--no-review", action="store_true", help="skip writing the review page")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    p.add_argument("--decisions", help="decisions.json saved from the review page: write final.jsonl")
    p.add_argument("--undecided", default="keep", choices=["keep", "drop"],
                   help="with --decisions: what to do with clips left undecided (default keep)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..curation.pipeline import apply_decisions, curate_dataset

    if args.decisions:
        if args.dataset:
            raise InputError("give either DATASET (to filter) or --decisions (to finish a run), not both")
        s = apply_decisions(args.out, args.decisions, undecided=args.undecided)
        print(f"final.jsonl: {s['n_final']} of {s['n_accepted_auto']} clips "
              f"({len(s['manual_rejects'])} rejected on review, {s['n_undecided']} undecided -> {args.undecided})")
        return 0
    if not args.dataset:
        raise InputError("give a dataset folder to filter, or --decisions decisions.json to finish a run")
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1; got {args.workers}")
    if not (Path(args.dataset) / "manifest.jsonl").is_file():  # a folder of videos: real footage
        from ..curation.videos import curate_videos

        report = curate_videos(args.dataset, args.out, thresholds=dict(args.threshold), workers=args.workers,
                               review=not args.no_review, progress=not args.quiet, overwrite=args.overwrite)
        print(json.dumps({f["name"]: f["removed"] for f in report["filters"]}))
        print(f"accepted {report['n_accepted']} of {report['n_clips']} videos ({report['n_incomplete']} more lack a "
              f"caption or references); manifest: {args.out}/accepted.jsonl; report: {args.out}/report.md"
              + ("" if args.no_review else f"; review page: {args.out}/review/index.html"))
        return 0
    report = curate_dataset(args.dataset, args.out, thresholds=dict(args.threshold), workers=args.workers,
                            review=not args.no_review, progress=not args.quiet, overwrite=args.overwrite)
    print(json.dumps({f["name"]: f["removed"] for f in report["filters"]}))
    print(f"accepted {report['n_accepted']} of {report['n_clips']} clips; report: {args.out}/report.md"
          + ("" if args.no_review else f"; review page: {args.out}/review/index.html"))
    return 0
