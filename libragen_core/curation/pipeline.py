"""The curation pipeline over a SpriteWorld-style dataset folder (manifest.jsonl + clips).

    curate_dataset(data_dir, out_dir)      automatic filters -> accepted.jsonl, rejected.jsonl,
                                           report.md / report.json, review/index.html
    apply_decisions(out_dir, decisions)    the review page's decisions.json -> final.jsonl

Filters see only each record's video and caption; whatever labels a record carries are copied
through untouched and never read here. Every file is written atomically. Records in the output
manifests have their "video" and reference paths rewritten relative to the output folder, so
they resolve from where the manifest is.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..errors import InputError
from ..io.atomic import atomic_path, write_json, write_jsonl
from ..io.video import read_video
from .analysis import Clip
from .filters import THRESHOLDS, filter_specs, run_filters

FORMAT = "libragen-curation"
VERSION = 1


def read_records(data_dir: Path) -> list[dict]:
    manifest = data_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise InputError(f"{data_dir} has no manifest.jsonl; point curate at a dataset folder "
                         "(written by `libragen spriteworld dataset` or with the same layout)")
    records = []
    with open(manifest, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{manifest} line {n} is not JSON ({e}); is the file damaged?") from e
            for key in ("id", "video", "caption"):
                if key not in rec:
                    raise InputError(f"{manifest} line {n} has no {key!r}; every record needs id, video and caption")
            records.append(rec)
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise InputError(f"{manifest} repeats record ids; ids must be unique for review decisions to work")
    return records


def evaluate_record(data_dir: str, record: dict, thresholds: dict) -> dict:
    """Run every filter on one record; returns {id, results: [...], rejected_by, reasons}."""
    frames, _ = read_video(Path(data_dir) / record["video"])
    clip = Clip(frames, record["caption"])
    results = run_filters(clip, thresholds, cascade=False)
    failed = [r for r in results if not r.passed]
    return {
        "id": record["id"],
        "results": [r.to_dict() for r in results],
        "rejected_by": failed[0].name if failed else None,
        "reasons": [f"{r.name}: {r.reason}" for r in failed],
    }


def _evaluate_star(args):
    return evaluate_record(*args)


def _relocate(record: dict, data_dir: Path, out_dir: Path) -> dict:
    rec = dict(record)
    rec["video"] = os.path.relpath(data_dir / record["video"], out_dir)
    if record.get("refs"):
        rec["refs"] = [{**ref, "path": os.path.relpath(data_dir / ref["path"], out_dir)} for ref in record["refs"]]
    return rec


def write_outputs(out_dir: Path, lists: dict[str, list], report: dict, markdown: str) -> None:
    """<name>.jsonl for each list, report.json and report.md, each written atomically."""
    for name, records in lists.items():
        write_jsonl(out_dir / f"{name}.jsonl", records)
    write_json(out_dir / "report.json", report)
    with atomic_path(out_dir / "report.md") as tmp:
        tmp.write_text(markdown, encoding="utf-8")


def prepare_out_dir(out_dir: Path, source: Path, overwrite: bool) -> None:
    """Create the output folder of a curation run, refusing the source folder and an earlier run."""
    if out_dir == source:
        raise InputError("the output folder must differ from the folder being curated")
    if (out_dir / "report.json").exists() and not overwrite:
        raise InputError(f"{out_dir} already holds a curation run (report.json); pass overwrite=True (--overwrite) "
                         "or choose another folder")
    if not out_dir.parent.is_dir():
        raise InputError(f"cannot create {out_dir}: its parent folder does not exist")
    out_dir.mkdir(exist_ok=True)


def run_jobs(fn, jobs: list, workers: int, progress: bool, unit: str) -> list:
    """fn(job) for every job, in order, in `workers` processes, with a progress bar."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="curate", unit=unit)
    outcomes = []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for out in pool.map(fn, jobs, chunksize=2):
                outcomes.append(out)
                bar and bar.update()
    else:
        for job in jobs:
            outcomes.append(fn(job))
            bar and bar.update()
    if bar:
        bar.close()
    return outcomes


def curate_dataset(data_dir, out_dir, *, thresholds: dict | None = None, workers: int = 1,
                   review: bool = True, progress: bool = True, overwrite: bool = False) -> dict:
    """Filter a dataset folder into out_dir; returns the report (also written as report.json)."""
    data_dir, out_dir = Path(data_dir).resolve(), Path(out_dir).resolve()
    records = read_records(data_dir)
    unknown = set(thresholds or {}) - set(THRESHOLDS)
    if unknown:
        raise InputError(f"unknown filter thresholds {sorted(unknown)}; known: {', '.join(THRESHOLDS)}")
    th = {**THRESHOLDS, **(thresholds or {})}
    prepare_out_dir(out_dir, data_dir, overwrite)
    start = time.perf_counter()
    outcomes = run_jobs(_evaluate_star, [(str(data_dir), rec, th) for rec in records], workers, progress, "clip")
    elapsed = time.perf_counter() - start

    accepted, rejected = [], []
    for rec, out in zip(records, outcomes):
        entry = _relocate(rec, data_dir, out_dir)
        entry["curation"] = {"scores": {r["name"]: r["score"] for r in out["results"]}}
        if out["rejected_by"] is None:
            accepted.append(entry)
        else:
            entry["curation"].update(rejected_by=out["rejected_by"], reasons=out["reasons"])
            rejected.append(entry)
    report = build_report(data_dir, out_dir, records, outcomes, th, elapsed)
    write_outputs(out_dir, {"accepted": accepted, "rejected": rejected}, report, report_markdown(report))
    if review:
        from .review_page import write_review_page

        write_review_page(out_dir, accepted, outcomes_by_id={o["id"]: o for o in outcomes}, run_id=report["run_id"])
    return report


def build_report(data_dir: Path, out_dir: Path, records, outcomes, th: dict, elapsed: float) -> dict:
    names = [s.name for s in filter_specs()]
    first = {n: 0 for n in names}
    any_fail = {n: 0 for n in names}
    examples: dict[str, list] = {n: [] for n in names}
    for out in outcomes:
        if out["rejected_by"]:
            first[out["rejected_by"]] += 1
            if len(examples[out["rejected_by"]]) < 5:
                examples[out["rejected_by"]].append({"id": out["id"], "reason": out["reasons"][0]})
        for r in out["results"]:
            any_fail[r["name"]] += not r["passed"]
    n_acc = sum(o["rejected_by"] is None for o in outcomes)
    run_id = f"{data_dir.name}-{int(time.time())}"
    return {
        "format": FORMAT,
        "version": VERSION,
        "run_id": run_id,
        "dataset": str(data_dir),
        "out": str(out_dir),
        "n_clips": len(records),
        "n_accepted": n_acc,
        "n_rejected": len(records) - n_acc,
        "thresholds": th,
        "filters": [{"name": n, "removed": first[n], "failed_any_order": any_fail[n], "examples": examples[n]} for n in names],
        "seconds": round(elapsed, 2),
    }


def report_markdown(report: dict) -> str:
    lines = [
        "# Curation report",
        "",
        f"Dataset: `{report['dataset']}`  ",
        f"Clips: {report['n_clips']}; accepted by the automatic filters: {report['n_accepted']}; "
        f"rejected: {report['n_rejected']} ({report['seconds']} s).",
        "",
        "Filters run in this order; a clip is counted against the first one it fails.",
        "",
        "| filter | removed | failed (any order) | threshold |",
        "|---|---:|---:|---:|",
    ]
    for f in report["filters"]:
        lines.append(f"| {f['name']} | {f['removed']} | {f['failed_any_order']} | {report['thresholds'].get(f['name'], '')} |")
    lines.append("")
    for f in report["filters"]:
        if f["examples"]:
            lines.append(f"## {f['name']}")
            lines += [f"- `{e['id']}`: {e['reason']}" for e in f["examples"]]
            lines.append("")
    lines.append("Next: open `review/index.html`, accept or reject each clip, save decisions.json, then run "
                 "`libragen curate --out <this folder> --decisions decisions.json`.")
    return "\n".join(lines) + "\n"


def apply_decisions(out_dir, decisions_path, *, undecided: str = "keep") -> dict:
    """Write final.jsonl: the accepted clips minus those rejected on the review page."""
    from .decisions import read_decisions

    out_dir = Path(out_dir)
    report_path = out_dir / "report.json"
    if not report_path.is_file():
        raise InputError(f"{out_dir} holds no curation run (report.json); run `libragen curate DATASET --out {out_dir}` first")
    if undecided not in ("keep", "drop"):
        raise InputError(f"undecided must be 'keep' or 'drop'; got {undecided!r}")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    with open(out_dir / "accepted.jsonl", encoding="utf-8") as f:
        accepted = [json.loads(line) for line in f if line.strip()]
    decisions = read_decisions(decisions_path, run_id=report["run_id"], known_ids={r["id"] for r in accepted})
    final, dropped, open_ids = [], [], []
    for rec in accepted:
        d = decisions.get(rec["id"])
        if d == "reject" or (d is None and undecided == "drop"):
            dropped.append(rec["id"])
            continue
        if d is None:
            open_ids.append(rec["id"])
        final.append({**rec, "review": d or "undecided"})
    write_jsonl(out_dir / "final.jsonl", final)
    summary = {"run_id": report["run_id"], "n_accepted_auto": len(accepted), "n_final": len(final),
               "manual_rejects": [i for i in dropped if decisions.get(i) == "reject"],
               "undecided": open_ids if undecided == "keep" else [], "undecided_policy": undecided,
               "n_undecided": sum(1 for r in accepted if r["id"] not in decisions)}
    write_json(out_dir / "final_report.json", summary)
    return summary
