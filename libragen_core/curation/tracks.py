"""Per-subject colour tracks: where each subject the caption names is, frame by frame.

The caption's "Ref k:" line names the subject's body colour ("a large blue star with orange
stripes"); the colour names map to the SpriteWorld palette, which is what a colour word means in
this world (a real pipeline would use an open-vocabulary detector here). Pixels of the frame,
brought to one brightness, that match the body colour form the subject's mask; its centre is
taken in world coordinates (the estimated camera pan added back).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InputError
from ..spriteworld.captions import caption_facts, parse_caption
from ..spriteworld.identity import COLORS, SHAPES, SIZES
from ..spriteworld.motions import DIRECTIONS
from .analysis import Clip

COLOR_TOLERANCE = 40  # largest channel difference from the palette colour (H.264 + light changes)
DIRECTIONS_UNIT = {k: np.asarray(v) / np.hypot(*v) for k, v in DIRECTIONS.items()}
_COLOR_WORD = re.compile(r"\b(" + "|".join(COLORS) + r")\b")
_SHAPE_WORD = re.compile(r"\b(" + "|".join(SHAPES) + r")\b")


@dataclass
class ClaimedSubject:
    index: int  # Ref k is index k-1
    color: str  # body colour
    color2: str | None
    shape: str | None
    motion: str | None  # from caption_facts
    size: float | None = None  # claimed diameter / short side (size class)


def claimed_subjects(caption: str) -> tuple[list[ClaimedSubject], dict]:
    """The subjects a caption describes and its facts; InputError when the caption is outside the grammar."""
    parsed = parse_caption(caption)
    facts = caption_facts(caption)
    out = []
    for k in sorted(parsed.refs):
        desc = parsed.refs[k]
        colors = _COLOR_WORD.findall(desc)
        shape = _SHAPE_WORD.search(desc)
        if not colors:
            raise InputError(f"Ref {k} names no colour: {desc!r}")
        size = next((SIZES[w] for w in desc.split()[:3] if w in SIZES), None)
        out.append(ClaimedSubject(k - 1, colors[0], colors[1] if len(colors) > 1 else None,
                                  shape.group(1) if shape else None, facts["motions"].get(k - 1), size))
    return out, facts


def color_mask(clip: Clip, color: str, color2: str | None = None) -> np.ndarray:
    """bool [T, H, W]: pixels whose 2x2 block is the body colour, or a mix of it with the second colour."""
    blocks = clip.blocks
    c1 = np.asarray(COLORS[color], np.float32)
    if color2 is None:
        dist = np.abs(blocks - c1).max(axis=-1)
    else:
        c2 = np.asarray(COLORS[color2], np.float32)
        d = c2 - c1
        # mixes of more than half the second colour belong to that colour, not this subject's body
        a = np.clip(((blocks - c1) @ d) / max(float(d @ d), 1.0), 0.0, 0.5)
        dist = np.abs(blocks - (c1 + a[..., None] * d)).max(axis=-1)
    near = (dist <= COLOR_TOLERANCE).astype(np.uint8)
    T, H, W = clip.frames.shape[:3]
    full = np.zeros((T, H, W), np.uint8)
    full[:, : H // 2 * 2, : W // 2 * 2] = near.repeat(2, axis=1).repeat(2, axis=2)
    return full.astype(bool)


@dataclass
class Track:
    count: np.ndarray  # [T] matching pixels
    center: np.ndarray  # [T, 2] world (x, y), nan where absent
    screen: np.ndarray  # [T, 2] screen (x, y), nan where absent
    extent: np.ndarray  # [T] bounding-box side of the largest blob (px)
    n_blobs: np.ndarray  # [T] separate blobs of at least min_blob pixels


def color_track(clip: Clip, color: str, color2: str | None = None, min_blob: int = 6, mask: np.ndarray | None = None) -> Track:
    mask = color_mask(clip, color, color2) if mask is None else mask
    T = len(mask)
    count = mask.sum(axis=(1, 2)).astype(np.float32)
    center = np.full((T, 2), np.nan)
    extent = np.zeros(T, np.float32)
    n_blobs = np.zeros(T, np.int32)
    close = np.ones((3, 3), np.uint8)
    for t in range(T):
        if count[t] == 0:
            continue
        ys, xs = np.nonzero(mask[t])
        center[t] = xs.mean(), ys.mean()
        m8 = cv2.morphologyEx(mask[t].astype(np.uint8), cv2.MORPH_CLOSE, close)
        n, _, st, _ = cv2.connectedComponentsWithStats(m8, connectivity=8)
        big = [i for i in range(1, n) if st[i, cv2.CC_STAT_AREA] >= min_blob]
        n_blobs[t] = len(big)
        extent[t] = max((max(st[i, 2], st[i, 3]) for i in big), default=0)
    screen = center.copy()
    return Track(count, center + clip.camera, screen, extent, n_blobs)

