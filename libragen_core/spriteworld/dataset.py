"""Write SpriteWorld datasets to disk: real video files, reference PNGs and a JSONL manifest.

Kinds:
  t2v         clips + captions, for the text-to-video base model
  in_pair     clips + one reference per subject cropped from the clip's own frames (with background)
  cross_pair  clips + one reference per subject rendered elsewhere: another rotation, scale and
              light, on white (the same identity, not the same pixels)
  defects     clips carrying one labelled defect each (defects.py), cycling through "none" and
              every defect kind so the classes are balanced

Layout of a dataset folder:
  dataset.json      the settings (written first; an interrupted run resumes only with the same settings)
  clips/NNNNNN.mp4  one clip per item (the suffix follows video_format)
  refs/NNNNNN_refK.png
  manifest.jsonl    one JSON object per item (written last, atomically: its presence means the
                    dataset is complete). Fields: index, id, kind, split, video, fps, size,
                    n_frames, caption, user_prompts (training templates), heldout_user_prompts
                    (never train on these), scene (Scene.to_dict()), tracks (ground truth, see
                    RenderResult), refs [{path, subject, ...}], defect (label or null).

Item i draws everything from np.random.default_rng([seed, i]), so a rerun with the same seed
writes identical files, and a dataset of n items is the prefix of one with more items.
"""
from __future__ import annotations

import contextlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_path
from ..io.video import SUPPORTED_SUFFIXES, write_video
from .captions import scene_caption, user_prompts
from .defects import DEFECT_KINDS, make_defect
from .identity import Identity
from .render import RenderResult, render_identity, render_scene
from .scene import sample_scene

DATASET_KINDS = ("t2v", "in_pair", "cross_pair", "defects")
FORMAT_VERSION = 1
_DEFECT_CYCLE = ("none",) + DEFECT_KINDS


def dataset_settings(kind: str, n: int, seed: int, split: str, size, n_frames: int, video_format: str, scene_options: dict | None) -> dict:
    if kind not in DATASET_KINDS:
        raise InputError(f"unknown dataset kind {kind!r}; choose one of {', '.join(DATASET_KINDS)}")
    if n < 1:
        raise InputError(f"a dataset needs at least one item; got n={n}")
    if split not in ("train", "heldout"):
        raise InputError(f"split must be 'train' or 'heldout'; got {split!r}")
    suffix = "." + video_format.lstrip(".").lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(f"unsupported video format {video_format!r}; use one of {', '.join(s[1:] for s in SUPPORTED_SUFFIXES)}")
    size = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "n": int(n),
        "seed": int(seed),
        "split": split,
        "size": list(size),
        "n_frames": int(n_frames),
        "video_format": suffix[1:],
        "scene_options": dict(scene_options or {}),
    }


def write_dataset(
    out_dir: str | os.PathLike,
    kind: str,
    n: int,
    seed: int = 0,
    *,
    split: str = "train",
    size: int | tuple[int, int] = 64,
    n_frames: int = 17,
    video_format: str = "mp4",
    scene_options: dict | None = None,
    overwrite: bool = False,
    workers: int = 1,
    progress=None,
) -> Path:
    """Write a dataset folder; returns the manifest path.

    scene_options are passed to sample_scene (e.g. {"n_subjects": 1, "motions": [...],
    "identity_filter": {"sizes": ["large"]}, "p_camera": 0.0}); they must be JSON-serialisable,
    so an identity pool is given as keys: {"identities": ["star|blue|orange|plain|none|large", ...]}.
    A complete dataset (manifest.jsonl present) is never replaced unless overwrite=True.
    progress(done, total) is called after each item.
    """
    out = Path(out_dir)
    settings = dataset_settings(kind, n, seed, split, size, n_frames, video_format, scene_options)
    _prepare_folder(out, settings, overwrite)

    manifest = out / "manifest.jsonl"
    keep: set[str] = set()
    # records stream into the temporary manifest, so memory stays flat for any n; the rename at
    # the end is what marks the dataset complete
    with atomic_path(manifest) as tmp, open(tmp, "w", encoding="utf-8") as f:
        with ProcessPoolExecutor(max_workers=workers) if workers > 1 else contextlib.nullcontext() as pool:
            args = (repeat(str(out), n), repeat(settings, n), range(n))
            records = pool.map(_write_item, *args, chunksize=4) if pool else map(_write_item, *args)
            for i, rec in enumerate(records):
                f.write(json.dumps(rec, sort_keys=True) + "\n")
                keep.add(rec["video"])
                keep.update(ref["path"] for ref in rec["refs"])
                if progress:
                    progress(i + 1, n)
        _remove_stale(out, keep)
    return manifest


def _prepare_folder(out: Path, settings: dict, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"dataset path {out} is a file; choose a folder")
    if not out.parent.is_dir():
        raise InputError(f"cannot create {out}: its parent folder {out.parent} does not exist")
    meta = out / "dataset.json"
    if out.is_dir():
        if (out / "manifest.jsonl").exists() and not overwrite:
            raise InputError(
                f"{out} already holds a complete dataset (manifest.jsonl); pass overwrite=True "
                "(--overwrite) to replace it, or choose another folder"
            )
        if meta.exists():
            old = json.loads(meta.read_text(encoding="utf-8"))
            if old != settings and not overwrite:
                raise InputError(
                    f"{out} holds an unfinished dataset written with other settings ({_diff(old, settings)}); "
                    "pass overwrite=True (--overwrite) or choose another folder"
                )
        elif any(out.iterdir()) and not overwrite:
            raise InputError(f"{out} is not empty and is not a SpriteWorld dataset; choose an empty or new folder")
    out.mkdir(exist_ok=True)
    (out / "clips").mkdir(exist_ok=True)
    (out / "refs").mkdir(exist_ok=True)
    if overwrite and (out / "manifest.jsonl").exists():
        (out / "manifest.jsonl").unlink()
    with atomic_path(meta) as tmp:
        tmp.write_text(json.dumps(settings, sort_keys=True, indent=1) + "\n", encoding="utf-8")


def _diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


def _remove_stale(out: Path, keep: set[str]) -> None:
    """After an overwrite, drop clips and refs that the new manifest does not name."""
    for sub in ("clips", "refs"):
        for p in (out / sub).iterdir():
            if f"{sub}/{p.name}" not in keep and not p.name.startswith("."):
                p.unlink()


def _write_item(out_dir: str, settings: dict, i: int) -> dict:
    out = Path(out_dir)
    rng = np.random.default_rng([settings["seed"], i])
    kind = settings["kind"]
    options = dict(settings["scene_options"])
    if "identities" in options:  # stored as keys so the settings stay JSON
        options["identities"] = [Identity.from_key(k) for k in options["identities"]]
    scene = sample_scene(rng, options.pop("n_subjects", None), settings["split"], size=tuple(settings["size"]),
                         n_frames=settings["n_frames"], **options)
    defect = None
    if kind == "defects":
        clip = make_defect(_DEFECT_CYCLE[i % len(_DEFECT_CYCLE)], scene, rng)
        scene, result, frames, caption, defect = clip.scene, clip.result, clip.frames, clip.caption, clip.label
    else:
        result = render_scene(scene)
        frames, caption = result.frames, scene_caption(scene)
    name = f"{i:06d}"
    video = f"clips/{name}.{settings['video_format']}"
    if not (out / video).exists():  # files are written atomically, so an existing one is complete
        write_video(out / video, frames, fps=scene.fps)
    refs = []
    if kind == "in_pair":
        refs = _in_pair_refs(out, name, result, rng)
    elif kind == "cross_pair":
        refs = _cross_pair_refs(out, name, result, rng)
    return {
        "index": i,
        "id": f"{kind}-{settings['seed']}-{name}",
        "kind": kind,
        "split": settings["split"],
        "video": video,
        "fps": scene.fps,
        "size": list(scene.size),
        "n_frames": scene.n_frames,
        "caption": caption,
        "user_prompts": user_prompts(scene, "train"),
        "heldout_user_prompts": user_prompts(scene, "heldout"),
        "scene": scene.to_dict(),
        "tracks": result.tracks(),
        "refs": refs,
        "defect": defect,
    }


def _save_png(path: Path, image: np.ndarray) -> None:
    from ..io.images import save_png

    if not path.exists():  # files are written atomically, so an existing one is complete
        save_png(path, image)


def crop_box(result: RenderResult, k: int, t: int, margin: float = 0.15) -> list[int]:
    """Square box (x0, y0, x1, y1) around subject k's silhouette at frame t, clipped to the frame."""
    h, w = result.scene.size
    x0, y0, x1, y1 = result.bboxes[k, t]
    side = int(np.ceil(max(x1 - x0, y1 - y0) * (1 + 2 * margin)))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bx0 = int(np.clip(round(cx - side / 2), 0, max(0, w - side)))
    by0 = int(np.clip(round(cy - side / 2), 0, max(0, h - side)))
    return [bx0, by0, min(w, bx0 + side), min(h, by0 + side)]


def _in_pair_refs(out: Path, name: str, result: RenderResult, rng: np.random.Generator) -> list[dict]:
    refs = []
    for k in range(len(result.scene.subjects)):
        vis = result.visible[k]
        good = np.nonzero(vis >= min(0.9, vis.max()))[0]
        t = int(rng.choice(good))
        box = crop_box(result, k, t)
        crop = result.frames[t, box[1] : box[3], box[0] : box[2]]
        path = f"refs/{name}_ref{k + 1}.png"
        _save_png(out / path, np.ascontiguousarray(crop))
        refs.append({"path": path, "subject": k, "kind": "in_pair", "frame": t, "box": box, "visible": round(float(vis[t]), 4)})
    return refs


def _cross_pair_refs(out: Path, name: str, result: RenderResult, rng: np.random.Generator) -> list[dict]:
    refs = []
    size = result.scene.short
    for k, spec in enumerate(result.scene.subjects):
        angle = round(float(rng.uniform(-60.0, 60.0)), 2)
        scale = round(float(rng.uniform(0.55, 0.85)), 4)
        light = round(float(rng.uniform(0.75, 1.15)), 4)
        image, _ = render_identity(spec.identity, size, angle=angle, scale=scale, light=light, background="white")
        path = f"refs/{name}_ref{k + 1}.png"
        _save_png(out / path, image)
        refs.append({"path": path, "subject": k, "kind": "cross_pair", "angle": angle, "scale": scale, "light": light, "background": "white"})
    return refs


def read_manifest(out_dir: str | os.PathLike) -> list[dict]:
    """The records of a complete dataset folder."""
    manifest = Path(out_dir) / "manifest.jsonl"
    if not manifest.is_file():
        raise InputError(f"{out_dir} has no manifest.jsonl: not a complete SpriteWorld dataset (was the run interrupted?)")
    with open(manifest, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
