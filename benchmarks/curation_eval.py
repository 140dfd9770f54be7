"""Curation filters against injected defect labels, on a fresh seed.

    .venv/bin/python benchmarks/curation_eval.py [--seed 202] [--per-kind 50] [--workers 2] [--write-doc]

Writes a SpriteWorld `defects` dataset (none + 8 defect kinds, balanced) with a seed that no
threshold was calibrated on (calibration used seeds 101-110; --calibration runs one of those, and
says so), runs `curate_dataset` on it, and scores
the result with the labels the dataset carries (the filters never see them):
  recall (own)  of the clips with defect k, the share that k's filter fails
  recall (any)  of the clips with defect k, the share the pipeline rejects
  precision     of the clips the cascade attributes to k's filter, the share that truly have k
                (clean clips and other defects count as false positives)
plus the false-reject rate on clean clips, clips per second and peak RSS.
--write-doc replaces the table between the markers in docs/curation.md.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from libragen_core.curation.evaluate import load_run, score_run
from libragen_core.curation.pipeline import curate_dataset
from libragen_core.spriteworld.dataset import DEFECT_KINDS, write_dataset

DOC = Path(__file__).resolve().parent.parent / "docs" / "curation.md"
BEGIN, END = "<!-- curation-eval:begin -->", "<!-- curation-eval:end -->"


CALIBRATION_SEEDS = range(101, 111)


def markdown(result: dict, seed: int, n: int, secs: float, rss_mb: float) -> str:
    lines = [
        f"{'Calibration' if seed in CALIBRATION_SEEDS else 'Fresh'} seed {seed}, {n} clips ({result['kinds']['blur']['n']} per defect kind + {result['n_clean']} clean), "
        f"64x64x17 mp4. `benchmarks/curation_eval.py --seed {seed} --per-kind {result['kinds']['blur']['n']}`.",
        "",
        "| defect | n | recall (own filter) | recall (any filter) | precision (own filter) |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, r in result["kinds"].items():
        lines.append(f"| {kind} | {r['n']} | {r['recall_own']:.3f} | {r['recall_any']:.3f} | {r['precision']:.3f} ({r['flagged']} flagged) |")
    by = ", ".join(result["clean_rejected_by"]) or "none"
    lines += ["", f"Clean clips rejected: {result['clean_false_reject']:.3f} (by: {by}).",
              f"Throughput: {n / secs:.1f} clips/s wall clock (filters + review sheets), peak RSS {rss_mb:.0f} MB."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=202)
    ap.add_argument("--per-kind", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--write-doc", action="store_true")
    ap.add_argument("--calibration", action="store_true", help="allow a calibration seed (101-110)")
    args = ap.parse_args(argv)
    if args.seed in CALIBRATION_SEEDS and not args.calibration:
        print(f"seed {args.seed} is a calibration seed (101-110); choose another, or pass --calibration", file=sys.stderr)
        return 2
    n = args.per_kind * (len(DEFECT_KINDS) + 1)
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data", Path(tmp) / "out"
        write_dataset(data, "defects", n, args.seed, workers=args.workers)
        start = time.perf_counter()
        curate_dataset(data, out, workers=args.workers, progress=False)
        secs = time.perf_counter() - start
        result = score_run(load_run(out))
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    text = markdown(result, args.seed, n, secs, rss)
    print(text)
    if args.write_doc:
        doc = DOC.read_text(encoding="utf-8")
        if BEGIN not in doc or END not in doc:
            raise SystemExit(f"{DOC} lacks the {BEGIN} / {END} markers")
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        DOC.write_text(head + BEGIN + "\n" + text + "\n" + END + tail, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
