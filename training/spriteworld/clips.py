"""SpriteWorld clip sources for training: what a procedural clip draws (`ClipSpec`), the clips
themselves (`ProceduralClips`), and `libragen spriteworld dataset` folders (`ManifestClips`).

- `ProceduralClips`: renders clip i from `default_rng([seed, i])` with the scene sampler's
  curriculum knobs (subjects, motions, sizes, simple backgrounds). Rendering takes milliseconds,
  is lossless and needs no disk; the same (seed, i) always gives the same clip.
- `ManifestClips`: a folder written by `libragen spriteworld dataset` (manifest.jsonl + clips),
  with the bad-entry rule of training/common/data.py.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..common.data import BadEntries, Clip

SIMPLE_SCENE = {"background_kinds": ("plain", "gradient"), "p_camera": 0.0, "p_light": 0.0, "p_occluder": 0.0,
                "p_props": 0.0}



@dataclass(frozen=True)
class ClipSpec:
    """What a procedural clip source draws (the curriculum knobs of sample_scene)."""

    seed: int = 0
    size: tuple[int, int] = (64, 64)
    frames: int = 17
    split: str = "train"
    n_subjects: int = 1  # 0 = 1 to 3 at random (the sampler's default mix)
    motions: tuple[str, ...] = ()  # () = every single-subject motion
    sizes: tuple[str, ...] = ()  # identity size classes, () = all
    shapes: tuple[str, ...] = ()
    colors: tuple[str, ...] = ()
    interactions: bool = False
    simple: bool = True  # plain/gradient background, no props, pans, light changes or occluders
    user_prompt_fraction: float = 0.0  # share of items captioned with a (train) user prompt instead

    def scene_kwargs(self) -> dict:
        from libragen_core.spriteworld.scene import INTERACTIONS

        kw: dict = {"size": tuple(self.size), "n_frames": self.frames}
        if self.motions:
            kw["motions"] = tuple(self.motions)
        kw["interactions"] = INTERACTIONS if self.interactions else ()
        filt = {k: list(v) for k, v in (("sizes", self.sizes), ("shapes", self.shapes), ("colors", self.colors)) if v}
        if filt:
            kw["identity_filter"] = filt
        if self.simple:
            kw.update(SIMPLE_SCENE)
        return kw

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


class ProceduralClips:
    def __init__(self, spec: ClipSpec):
        self.spec = spec
        self._kw = spec.scene_kwargs()

    def scene(self, index: int):
        from libragen_core.spriteworld.scene import sample_scene

        rng = np.random.default_rng([self.spec.seed, index])
        return sample_scene(rng, self.spec.n_subjects or None, self.spec.split, **self._kw), rng

    def __getitem__(self, index: int) -> Clip:
        from libragen_core.spriteworld.captions import scene_caption, user_prompts
        from libragen_core.spriteworld.render import render_scene

        scene, rng = self.scene(index)
        caption = scene_caption(scene)
        if self.spec.user_prompt_fraction > 0 and rng.random() < self.spec.user_prompt_fraction:
            prompts = user_prompts(scene, "train")
            caption = prompts[int(rng.integers(len(prompts)))]
        result = render_scene(scene)
        return Clip(result.frames, caption, index, scene, result.masks.any(axis=0))

    def settings(self) -> dict:
        return {"source": "procedural", **asdict(self.spec)}


class ManifestClips:
    """Clips of a `libragen spriteworld dataset` folder, with the bad-entry rule of this module."""

    def __init__(self, folder: str | os.PathLike, on_bad: str = "skip", max_bad_fraction: float = 0.01,
                 size: Sequence[int] | None = None, frames: int | None = None):
        from libragen_core.spriteworld.dataset import read_manifest

        self.folder = Path(folder)
        self.records = read_manifest(self.folder)
        self.on_bad, self.max_bad_fraction = on_bad, max_bad_fraction
        self.size, self.frames = (tuple(size) if size else None), frames
        self._bad = BadEntries(self.folder, len(self.records), on_bad, max_bad_fraction, "Regenerate the dataset.")

    def __len__(self) -> int:
        return len(self.records)

    def _check(self, rec: dict, frames: np.ndarray) -> str | None:
        if frames.shape[0] == 0:
            return "the video has no frames"
        if self.frames is not None and frames.shape[0] != self.frames:
            return f"{frames.shape[0]} frames, expected {self.frames}"
        if self.size is not None and tuple(frames.shape[1:3]) != self.size:
            return f"frame size {tuple(frames.shape[1:3])}, expected {self.size}"
        if not str(rec.get("caption", "")).strip():
            return "the caption is empty"
        return None

    def load(self, i: int) -> Clip | None:
        """Clip i, or None when it is bad and on_bad='skip' (it is then recorded in self.bad)."""
        from libragen_core.io.video import read_video

        rec = self.records[i]
        path = self.folder / str(rec.get("video", ""))
        reason = None
        frames = None
        if not path.is_file():
            reason = "the file is missing"
        elif path.stat().st_size == 0:
            reason = "the file is empty (0 bytes)"
        else:
            try:
                frames, _ = read_video(path)
            except Exception as e:  # noqa: BLE001 - any decoder failure makes the entry bad
                reason = f"cannot be decoded ({type(e).__name__}: {e})"
        if reason is None:
            reason = self._check(rec, frames)
        if reason is None:
            return Clip(frames, rec["caption"], int(rec.get("index", i)))
        self.report(path, reason)
        return None

    def report(self, path: Path, reason: str) -> None:
        self._bad.report(path, reason, stacklevel=3)

    @property
    def bad(self) -> list[tuple[str, str]]:
        return self._bad.entries

    def settings(self) -> dict:
        manifest = self.folder / "manifest.jsonl"
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
        return {"source": "manifest", "folder": str(self.folder.resolve()), "manifest": digest}
