"""Real subject-to-video data: a JSONL manifest of videos, captions and references.

One clip per line; paths are relative to the manifest's folder (docs/training-real-data.md):

    {"video": "clips/0001.mp4", "caption": "Ref 1: ... Video: Ref 1[the dog] ...",
     "references": [{"image": "refs/0001_a.png", "label": "the dog"}]}                 cross-pair
    {"video": "clips/0002.mp4", "caption": "...",
     "references": [{"frame": 12, "box": [x0, y0, x1, y1], "label": "the dog",
                     "mask": "masks/0002_a.png"}]}                                      in-pair

`frame` is a 0-based frame of the video file as stored; `box` is in that frame's pixels (x1, y1
exclusive); `mask` (optional) is an image of the frame's or the box's size whose white pixels are
the subject (everything else is painted white, as at inference). An entry whose references are
all cropped from its own clip is in-pair; one with any image file is cross-pair; one manifest may
hold both, and each stage takes its kind.

Videos may have any size, frame rate and length (training/common/buckets.py samples 4k+1 frames
and fits them into an aspect-ratio bucket). A bad entry (unreadable line, missing or corrupt
video or image, box outside the frame, frame past the end, too few frames, empty caption, no
references) is reported with its manifest line and file under the bad-entry rule of
training/common/data.py (skip and count, or stop).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from libragen_core.conditioning.references import MAX_REFERENCES
from libragen_core.errors import ConfigError, InputError
from libragen_core.io.video import read_frames

from .buckets import bucket_sizes, needed_frames, pick_bucket, resize_crop, sample_indices
from .data import BadEntries
from .schema import DataConfig
from .sources import KINDS, Planned, Triplet, content_id


@dataclass(frozen=True)
class Reference:
    label: str = ""
    image: str = ""  # a reference image file (cross-pair)
    frame: int = -1  # or a crop of this frame of the clip (in-pair) ...
    box: tuple[float, float, float, float] | None = None  # ... inside this box (x0, y0, x1, y1)
    mask: str = ""

    @property
    def cropped(self) -> bool:
        return not self.image

    def to_dict(self) -> dict:
        d: dict = {"image": self.image} if self.image else {"frame": self.frame, "box": list(self.box)}
        if self.mask:
            d["mask"] = self.mask
        d["label"] = self.label
        return d


@dataclass(frozen=True)
class Entry:
    line: int  # 1-based line of the manifest
    video: str
    caption: str
    references: tuple[Reference, ...]

    @property
    def kind(self) -> str:
        return "in_pair" if self.references and all(r.cropped for r in self.references) else "cross_pair"

    def to_dict(self) -> dict:
        return {"video": self.video, "caption": self.caption, "references": [r.to_dict() for r in self.references]}


def _reference(raw, n: int) -> Reference:
    if not isinstance(raw, dict):
        raise InputError(f"reference {n} is not an object")
    label = str(raw.get("label", ""))
    mask = raw.get("mask", "") or ""
    if "image" in raw:
        if "frame" in raw or "box" in raw:
            raise InputError(f"reference {n} has both an image and a frame/box; give one or the other")
        return Reference(label=label, image=str(raw["image"]), mask=str(mask))
    if "frame" not in raw or "box" not in raw:
        raise InputError(f"reference {n} needs either \"image\" or both \"frame\" and \"box\"")
    frame, box = raw["frame"], raw["box"]
    if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
        raise InputError(f"reference {n}: frame must be a frame number (0, 1, ...), got {frame!r}")
    if (not isinstance(box, list) or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
        raise InputError(f"reference {n}: box must be [x0, y0, x1, y1] in pixels, got {box!r}")
    return Reference(label=label, frame=frame, box=tuple(float(v) for v in box), mask=str(mask))


def parse_line(text: str, line: int) -> Entry:
    """One manifest line -> Entry; InputError says what is wrong with it."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"not JSON ({e})") from None
    if not isinstance(raw, dict):
        raise InputError("not a JSON object")
    if not isinstance(raw.get("video"), str) or not raw["video"]:
        raise InputError('no "video" path')
    refs = raw.get("references", [])
    if not isinstance(refs, list):
        raise InputError('"references" must be a list')
    return Entry(line=line, video=raw["video"], caption=str(raw.get("caption", "")),
                 references=tuple(_reference(r, k + 1) for k, r in enumerate(refs)))


def read_entries(path: str | os.PathLike, bad: BadEntries | None = None) -> list[Entry]:
    """Every readable entry of a manifest; unreadable lines go to `bad` (or raise without it)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest not found: {path}; set data.manifest to a JSONL file "
                         "(docs/training-real-data.md), e.g. one written by `libragen curate VIDEO_FOLDER`")
    out = []
    with open(path, encoding="utf-8") as f:
        for n, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                out.append(parse_line(text, n))
            except InputError as e:
                if bad is None:
                    raise InputError(f"{path}:{n}: {e}") from None
                bad.report(f"{path}:{n}", str(e))
    return out


def _load_image(path: Path) -> np.ndarray:
    from libragen_core.io.images import load_image

    img = load_image(path)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        from PIL import Image

        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.array(img.convert("RGB"))


def _apply_mask(crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = crop.copy()
    out[mask < 128] = 255
    return out


class S2VManifest:
    """The entries of one kind (in_pair / cross_pair) of a manifest, as a TripletSource.

    part: "train", "heldout" (the `data.heldout` entries chosen by a seeded hash of their video
    paths, the same for any order of the manifest) or "all"."""

    def __init__(self, path: str | os.PathLike, kind: str, data: DataConfig, facts, part: str = "all"):
        if kind not in KINDS:
            raise ConfigError(f"triplet kind must be one of {KINDS}; got {kind!r}")
        if part not in ("all", "train", "heldout"):
            raise ConfigError(f"part must be all, train or heldout; got {part!r}")
        self.path, self.kind, self.data, self.facts = Path(path), kind, data, facts
        self.root = self.path.parent
        self.buckets = bucket_sizes(data.resolution, data.bucket_step, data.max_aspect)
        # unreadable lines count against the whole manifest; the entries of this kind against theirs
        lines = BadEntries(self.path, max(1, _count_lines(self.path)), data.on_bad, data.max_bad_fraction)
        mine = [e for e in read_entries(self.path, lines) if e.kind == kind]
        held = set(heldout_lines(mine, data.heldout, data.seed))
        if part == "train":
            mine = [e for e in mine if e.line not in held]
        elif part == "heldout":
            mine = [e for e in mine if e.line in held]
        self.entries = mine
        self.bad = BadEntries(self.path, len(mine), data.on_bad, data.max_bad_fraction,
                              "Fix the manifest (or curate it again with `libragen curate`).")
        self._plans: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def _file(self, rel: str) -> Path:
        return (self.root / rel) if not os.path.isabs(rel) else Path(rel)

    def _report(self, e: Entry, file: Path | str, reason: str) -> None:
        self.bad.report(f"{self.path}:{e.line} {file}", reason, stacklevel=3)

    # ---------------------------------------------------------------- plan
    def _check_image(self, e: Entry, rel: str, what: str) -> tuple[Path, str] | None:
        p = self._file(rel)
        if not p.is_file():
            self._report(e, p, f"the {what} is missing")
            return None
        try:
            from PIL import Image

            with Image.open(p) as im:
                im.verify()
        except Exception as err:  # noqa: BLE001 - any decoder failure makes the entry bad
            self._report(e, p, f"the {what} cannot be read ({type(err).__name__}: {err})")
            return None
        return p, self.facts.digest(p)

    def plan(self, i: int) -> Planned | None:
        e = self.entries[i]
        video = self._file(e.video)
        if not e.caption.strip():
            self._report(e, video, "the caption is empty")
            return None
        if not e.references:
            self._report(e, video, "it has no references (a subject-to-video entry needs at least one)")
            return None
        if len(e.references) > MAX_REFERENCES:
            self._report(e, video, f"{len(e.references)} references; at most {MAX_REFERENCES} are supported")
            return None
        if not video.is_file():
            self._report(e, video, "the video file is missing")
            return None
        if video.stat().st_size == 0:
            self._report(e, video, "the video file is empty (0 bytes)")
            return None
        try:
            info = self.facts.video(video)
        except InputError as err:
            self._report(e, video, str(err))
            return None
        d = self.data
        idx = sample_indices(info["frames"], info["fps"], d.frames, d.fps, d.stride, d.start)
        if idx is None:
            need = needed_frames(d.frames, d.fps, d.stride, info["fps"])
            rate = f" at {d.fps:g} fps" if d.fps > 0 else (f" every {d.stride}" if d.stride > 1 else "")
            self._report(e, video, f"too few frames: {info['frames']} at {info['fps']:.3g} fps, and {d.frames} "
                                   f"frames{rate} need {need}")
            return None
        bh, bw = pick_bucket(info["height"], info["width"], self.buckets)
        ref_ids = []
        for k, r in enumerate(e.references, 1):
            mask_digest = None
            if r.mask:
                checked = self._check_image(e, r.mask, f"mask of reference {k}")
                if checked is None:
                    return None
                mask_digest = checked[1]
            if r.cropped:
                x0, y0, x1, y1 = r.box
                if r.frame >= info["frames"]:
                    self._report(e, video, f"reference {k}: frame {r.frame} is past the last frame "
                                           f"({info['frames'] - 1})")
                    return None
                if not (0 <= x0 < x1 <= info["width"] and 0 <= y0 < y1 <= info["height"]):
                    self._report(e, video, f"reference {k}: box {list(r.box)} is outside the "
                                           f"{info['width']}x{info['height']} frame (or empty)")
                    return None
                ref_ids.append(content_id(video=info["digest"], frame=r.frame, box=list(r.box), mask=mask_digest,
                                          size=[bh, bw]))
            else:
                checked = self._check_image(e, r.image, f"image of reference {k}")
                if checked is None:
                    return None
                ref_ids.append(content_id(image=checked[1], mask=mask_digest, size=[bh, bw]))
        from libragen_core.conditioning.captions import anonymous_caption, caption_lines

        try:
            anonymous = anonymous_caption(caption_lines(e.caption))
        except InputError:
            anonymous = None  # not in LibraGen's format: trained with its caption as written
        clip_id = content_id(video=info["digest"], frames=idx, size=[bh, bw])
        self._plans[i] = (idx, (bh, bw))
        return Planned(index=i, name=f"{e.video} (line {e.line})", clip_id=clip_id, ref_ids=tuple(ref_ids),
                       caption=e.caption, anonymous=anonymous, shape=(len(idx), bh, bw),
                       labels=tuple(r.label for r in e.references))

    # ---------------------------------------------------------------- load
    def load(self, i: int, clip: bool = True) -> Triplet | None:
        e = self.entries[i]
        if i not in self._plans and self.plan(i) is None:
            return None
        idx, size = self._plans[i]
        video = self._file(e.video)
        crop_frames = [r.frame for r in e.references if r.cropped]
        wanted = (list(idx) if clip else []) + crop_frames
        try:
            decoded = read_frames(video, wanted) if wanted else {}
        except InputError as err:
            self._report(e, video, str(err))
            return None
        refs = []
        for r in e.references:
            mask = _load_image(self._file(r.mask))[..., 0] if r.mask else None
            if r.cropped:
                x0, y0, x1, y1 = (int(math.floor(r.box[0])), int(math.floor(r.box[1])),
                                  int(math.ceil(r.box[2])), int(math.ceil(r.box[3])))
                frame = decoded[r.frame]
                crop = frame[y0:y1, x0:x1]
                if mask is not None:
                    if mask.shape == frame.shape[:2]:
                        mask = mask[y0:y1, x0:x1]
                    if mask.shape != crop.shape[:2]:
                        self._report(e, self._file(r.mask), f"the mask is {mask.shape[1]}x{mask.shape[0]}; it must "
                                                            "be the size of the frame or of the box")
                        return None
                    crop = _apply_mask(crop, mask)
                refs.append(np.ascontiguousarray(crop))
            else:
                img = _load_image(self._file(r.image))
                if mask is not None:
                    if mask.shape != img.shape[:2]:
                        self._report(e, self._file(r.mask), "the mask is not the size of its reference image")
                        return None
                    img = _apply_mask(img, mask)
                refs.append(img)
        frames = resize_crop(np.stack([decoded[j] for j in idx]), size) if clip else None
        return Triplet(frames=frames, refs=refs, caption=e.caption)

    def settings(self) -> dict:
        return {"source": "s2v-manifest", "kind": self.kind, "manifest": str(self.path.resolve())}


def heldout_lines(entries: list[Entry], n: int, seed: int) -> list[int]:
    """Manifest lines of the n entries held out: the smallest seeded hashes of their video paths."""
    if n <= 0:
        return []
    ranked = sorted(entries, key=lambda e: (content_id(seed=seed, video=e.video), e.line))
    return [e.line for e in ranked[:n]]


def _count_lines(path: Path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())
