"""Curation of a folder of real videos (no manifest, no ground truth) into a training manifest.

    curate_videos(folder, out_dir)   automatic filters -> accepted.jsonl (a subject-to-video
                                     manifest), incomplete.jsonl, rejected.jsonl, report.md /
                                     report.json, review/index.html
    apply_decisions(out_dir, ...)    (pipeline.py) the review page's decisions -> final.jsonl

Each video is measured from a sample of its frames (about `ANALYSIS_FPS` per second, at most
`ANALYSIS_FRAMES`): scaled to a `ANALYSIS_SIDE`-pixel short side for shot cuts, motion and overlaid
text, and a native-resolution centre crop for blur and noise, so a 4K clip costs about what a
small one does. Filters: resolution and duration (from the container, before decoding), shot cuts,
too little motion, too much motion, blur, noise, overlaid text. The measures are the SpriteWorld
filters' (docs/curation.md) on these views; their thresholds here were set on synthetic clips
only and are meant to be tuned per collection with --threshold.

Captions and references come from files beside each video: `<name>.json` holding
{"caption": ..., "references": [...]} in the manifest's reference format (paths relative to that
file), or `<name>.txt` holding the caption alone. An accepted clip without a caption or a usable
reference goes to incomplete.jsonl with the reason, not into the manifest.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.video import probe_video, read_frames
from .analysis import Clip
from .filters import THRESHOLDS, FilterResult

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
ANALYSIS_FPS = 8.0
ANALYSIS_FRAMES = 96
ANALYSIS_SIDE = 160
CROP = 256
FORMAT = "libragen-curation-videos"

# name -> default threshold (direction in each check)
VIDEO_THRESHOLDS: dict[str, float] = {
    "resolution": 256.0,  # shortest side in pixels, at least
    "duration": 5.0,  # seconds, at least (81 frames at 16 fps need 5 s)
    "shot_cut": THRESHOLDS["shot_cut"],  # largest content change / second largest ...
    "shot_cut_floor": 27.0,  # ... and at least PySceneDetect's default cut threshold
    "static": 0.05,  # mean optical-flow speed (px per frame at a 64-px short side), at least
    "motion_extreme": 1.5,  # the same speed, at most (a shaking or whipping camera moves every pixel)
    "blur": 0.08,  # fine / mid-scale edge energy of a native-resolution crop, at least
    "noise": THRESHOLDS["noise"],  # least median change between consecutive frames of that crop, at most
    "text_overlay": 15.0,  # static thin achromatic high-contrast pixels in the densest text band (at 64 px), below
}
FILTER_ORDER = ("resolution", "duration", "shot_cut", "static", "motion_extreme", "blur", "noise", "text_overlay")


def list_videos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _views(path: Path, info: dict) -> tuple[Clip, Clip]:
    """(small whole frames, native centre crops) of about ANALYSIS_FPS frames per second."""
    from PIL import Image

    step = max(1, round(info["fps"] / ANALYSIS_FPS)) if info["fps"] > 0 else 1
    idx = list(range(0, info["frames"], step))[:ANALYSIS_FRAMES]
    h, w = info["height"], info["width"]
    scale = ANALYSIS_SIDE / min(h, w)
    size = (max(2, round(w * scale)), max(2, round(h * scale)))
    ch, cw = min(CROP, h), min(CROP, w)
    y0, x0 = (h - ch) // 2, (w - cw) // 2

    def views(frame):  # each frame shrinks as it is decoded: a 4K clip never sits in memory whole
        small = np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR)) if scale < 1 else frame
        return small, np.ascontiguousarray(frame[y0:y0 + ch, x0:x0 + cw])

    frames = read_frames(path, idx, transform=views)
    return Clip(np.stack([frames[i][0] for i in idx])), Clip(np.stack([frames[i][1] for i in idx]))


def flow_speed(clip: Clip) -> float:
    """Mean optical-flow speed over every pixel and frame pair, in px per frame at a 64-px short side."""
    return float(np.linalg.norm(clip.flow, axis=-1).mean()) * 64.0 / clip.short if len(clip.flow) else 0.0


def check_static(clip: Clip, th: dict) -> FilterResult:
    speed = flow_speed(clip)
    bad = speed < th["static"]
    reason = f"too little motion: the picture moves {speed:.3f} px per frame on average (at least {th['static']})" \
        if bad else ""
    return FilterResult("static", not bad, speed, th["static"], reason)


def check_too_much_motion(clip: Clip, th: dict) -> FilterResult:
    """A shaking camera or a whip pan moves the whole picture; a subject crossing the frame does not."""
    speed = flow_speed(clip)
    bad = speed > th["motion_extreme"]
    reason = f"too much motion: the picture moves {speed:.2f} px per frame on average (at most " \
             f"{th['motion_extreme']})" if bad else ""
    return FilterResult("motion_extreme", not bad, speed, th["motion_extreme"], reason)


def evaluate_video(folder: str, rel: str, th: dict) -> dict:
    """Every filter on one video; {id, results, rejected_by, reasons, facts}."""
    from . import cuts, quality

    path = Path(folder) / rel
    out = {"id": rel, "results": [], "facts": {}}
    try:
        info = probe_video(path)
    except InputError as e:
        out.update(rejected_by="unreadable", reasons=[f"unreadable: {e}"])
        return out
    seconds = info["frames"] / info["fps"] if info["fps"] > 0 else 0.0
    out["facts"] = {**info, "seconds": round(seconds, 3)}
    short = min(info["width"], info["height"])
    results = [
        FilterResult("resolution", short >= th["resolution"], short, th["resolution"],
                     "" if short >= th["resolution"] else f"too small: {info['width']}x{info['height']} "
                                                          f"(short side {short} < {th['resolution']:g})"),
        FilterResult("duration", seconds >= th["duration"], seconds, th["duration"],
                     "" if seconds >= th["duration"] else f"too short: {seconds:.2f} s < {th['duration']:g} s"),
    ]
    try:
        small, crop = _views(path, info)
    except InputError as e:
        out.update(results=[r.to_dict() for r in results], rejected_by="unreadable", reasons=[f"unreadable: {e}"])
        return out
    results += [cuts.check_shot_cut(small, th), check_static(small, th), check_too_much_motion(small, th),
                quality.check_blur(crop, th), quality.check_noise(crop, th), quality.check_text_overlay(small, th)]
    failed = [r for r in results if not r.passed]
    out.update(results=[r.to_dict() for r in results], rejected_by=failed[0].name if failed else None,
               reasons=[f"{r.name}: {r.reason}" for r in failed])
    return out


def _evaluate_star(args):
    return evaluate_video(*args)


def sidecar_entry(folder: Path, rel: str, out_dir: Path) -> tuple[dict | None, str]:
    """(manifest entry with paths relative to out_dir, "") or (None, why it cannot be one)."""
    video = folder / rel
    side_json, side_txt = video.with_suffix(".json"), video.with_suffix(".txt")
    refs: list = []
    if side_json.is_file():
        try:
            data = json.loads(side_json.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            return None, f"{side_json.name} is not readable JSON ({e})"
        caption, refs = str(data.get("caption", "")), data.get("references", [])
        if not isinstance(refs, list):
            return None, f"{side_json.name}: \"references\" must be a list"
    elif side_txt.is_file():
        caption = side_txt.read_text(encoding="utf-8").strip()
    else:
        return None, f"no caption: write {side_json.name} (caption and references) or {side_txt.name} beside it"
    if not caption.strip():
        return None, "the caption is empty"
    if not refs:
        return None, f"no references: list them in {side_json.name} ({{\"image\": ...}} or {{\"frame\", \"box\"}})"
    moved = []
    for k, r in enumerate(refs, 1):
        if not isinstance(r, dict):
            return None, f"reference {k} is not an object"
        r = dict(r)
        for key in ("image", "mask"):
            if r.get(key):
                p = (video.parent / r[key]).resolve()
                if not p.is_file():
                    return None, f"reference {k}: {key} {p} is missing"
                r[key] = os.path.relpath(p, out_dir)
        moved.append(r)
    return {"video": os.path.relpath(video, out_dir), "caption": caption, "references": moved}, ""


def curate_videos(folder, out_dir, *, thresholds: dict | None = None, workers: int = 1, review: bool = True,
                  progress: bool = True, overwrite: bool = False) -> dict:
    """Filter a folder of videos into out_dir; returns the report (also report.json)."""
    from .pipeline import prepare_out_dir, run_jobs, write_outputs

    folder, out_dir = Path(folder).resolve(), Path(out_dir).resolve()
    unknown = set(thresholds or {}) - set(VIDEO_THRESHOLDS)
    if unknown:
        raise InputError(f"unknown filter thresholds {sorted(unknown)}; known for videos: {', '.join(VIDEO_THRESHOLDS)}")
    th = {**VIDEO_THRESHOLDS, **(thresholds or {})}
    videos = list_videos(folder)
    if not videos:
        raise InputError(f"{folder} holds no videos ({', '.join(VIDEO_SUFFIXES)}) and no manifest.jsonl")
    prepare_out_dir(out_dir, folder, overwrite)
    start = time.perf_counter()
    outcomes = run_jobs(_evaluate_star, [(str(folder), str(p.relative_to(folder)), th) for p in videos], workers,
                        progress, "video")
    accepted, incomplete, rejected = [], [], []
    for out in outcomes:
        info = {"scores": {r["name"]: r["score"] for r in out["results"]}, "facts": out["facts"]}
        if out["rejected_by"] is not None:
            rejected.append({"id": out["id"], "video": os.path.relpath(folder / out["id"], out_dir),
                             "curation": {**info, "rejected_by": out["rejected_by"], "reasons": out["reasons"]}})
            continue
        entry, why = sidecar_entry(folder, out["id"], out_dir)
        if entry is None:
            incomplete.append({"id": out["id"], "video": os.path.relpath(folder / out["id"], out_dir),
                               "curation": {**info, "incomplete": why}})
        else:
            accepted.append({"id": out["id"], **entry, "curation": info})
    names = list(FILTER_ORDER) + ["unreadable"]
    report = {
        "format": FORMAT, "run_id": f"{folder.name}-{int(time.time())}", "dataset": str(folder), "out": str(out_dir),
        "n_clips": len(outcomes), "n_accepted": len(accepted), "n_incomplete": len(incomplete),
        "n_rejected": len(rejected), "thresholds": th, "seconds": round(time.perf_counter() - start, 2),
        "filters": [{"name": n, "removed": sum(o["rejected_by"] == n for o in outcomes),
                     "examples": [{"id": o["id"], "reason": o["reasons"][0]} for o in outcomes
                                  if o["rejected_by"] == n][:5]} for n in names],
        "incomplete": [{"id": r["id"], "reason": r["curation"]["incomplete"]} for r in incomplete],
    }
    write_outputs(out_dir, {"accepted": accepted, "incomplete": incomplete, "rejected": rejected}, report,
                  report_markdown(report))
    if review:
        from .review_page import write_review_page

        def frames_of(rec):
            info = rec["curation"]["facts"]
            idx = np.linspace(0, info["frames"] - 1, min(12, info["frames"])).round().astype(int)
            got = read_frames(out_dir / rec["video"], idx)
            return np.stack([got[int(i)] for i in idx])

        write_review_page(out_dir, accepted, outcomes_by_id={o["id"]: o for o in outcomes}, run_id=report["run_id"],
                          frames_of=frames_of)
    return report


def report_markdown(report: dict) -> str:
    lines = [
        "# Curation report (videos)", "",
        f"Folder: `{report['dataset']}`  ",
        f"Videos: {report['n_clips']}; accepted: {report['n_accepted']} (accepted.jsonl, a training manifest); "
        f"without caption or references: {report['n_incomplete']} (incomplete.jsonl); rejected: "
        f"{report['n_rejected']} ({report['seconds']} s).", "",
        "A video is counted against the first filter it fails, in this order.", "",
        "| filter | removed | threshold |", "|---|---:|---:|",
    ]
    for f in report["filters"]:
        lines.append(f"| {f['name']} | {f['removed']} | {report['thresholds'].get(f['name'], '')} |")
    lines.append("")
    for f in report["filters"]:
        if f["examples"]:
            lines += [f"## {f['name']}"] + [f"- `{e['id']}`: {e['reason']}" for e in f["examples"]] + [""]
    if report["incomplete"]:
        lines += ["## incomplete"] + [f"- `{e['id']}`: {e['reason']}" for e in report["incomplete"]] + [""]
    lines.append("Next: open `review/index.html`, accept or reject each clip, save decisions.json, then run "
                 "`libragen curate --out <this folder> --decisions decisions.json`; final.jsonl is the manifest "
                 "to train on (`--set data.manifest=<this folder>/final.jsonl`).")
    return "\n".join(lines) + "\n"
