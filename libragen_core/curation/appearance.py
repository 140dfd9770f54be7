"""Does the subject a caption describes appear in the clip? Template matching of the described look.

A "Ref k:" line ("a large blue star with orange stripes and a white dot") fixes a SpriteWorld
identity completely, so the described subject is rendered with the world's own sprite renderer
(our stand-in for an open-vocabulary image-text matcher) at the claimed size class, upright, and
searched for in the first frames (where every subject still has its starting size and angle) by
masked template matching. The result is the best mean colour distance of the sprite's pixels; a
subject of another shape or colour cannot get close. Nothing here reads the scene description.
"""
from __future__ import annotations

import re

import cv2
import numpy as np

from ..errors import InputError
from ..spriteworld.identity import COLORS, MARKINGS, PATTERN_NOUNS, SHAPES, SIZES, Identity
from ..spriteworld.render import render_identity
from .analysis import Clip

BLUR = 1.0
QUANTILE = 0.4  # of the sprite pixels' colour differences: up to ~half may be hidden by an occluder
PHASES = ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5))
_NOUN_TO_PATTERN = {v: k for k, v in PATTERN_NOUNS.items()}
_DESC = re.compile(
    r"^an? (?P<size>" + "|".join(SIZES) + r") (?P<color>" + "|".join(COLORS) + r") (?P<shape>" + "|".join(SHAPES)
    + r") with (?:an? )?(?P<color2>" + "|".join(COLORS) + r") (?P<noun>" + "|".join(_NOUN_TO_PATTERN)
    + r")(?: and (?P<marking>a (?:white|black) dot|two eyes))?\.?$"
)
assert set(MARKINGS) == {"none", "dot", "eyes"}


def identity_from_description(desc: str) -> Identity:
    m = _DESC.match(desc.strip())
    if not m:
        raise InputError(f"cannot read a subject description {desc!r}; expected e.g. 'a large blue star with orange stripes'")
    marking = m.group("marking")
    mark = "none" if not marking else ("eyes" if marking == "two eyes" else "dot")
    return Identity(m.group("shape"), m.group("color"), m.group("color2"), _NOUN_TO_PATTERN[m.group("noun")], mark, m.group("size"))


def templates(identity: Identity, short: int, jitters=(0.9, 1.0, 1.1), phases=None, angles=(0.0,)):  # angles in degrees
    """(rgb float32 [h, w, 3], mask uint8 [h, w]) crops of the identity at its size class times
    each jitter, at each angle, and at sub-pixel phases (a sprite's pixel pattern depends on where
    its centre falls inside a pixel)."""
    phases = PHASES if phases is None else phases
    out = []
    for j in jitters:
        for angle in angles:
            for dx, dy in phases:
                img, mask = render_identity(identity, short, scale=SIZES[identity.size] * j, angle=angle,
                                            center=(0.5 + dx / short, 0.5 + dy / short))
                ys, xs = np.nonzero(mask)
                if len(xs) == 0:
                    continue
                box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
                # blur both sides: nearest-neighbour sprites at another sub-pixel offset differ at every edge
                out.append((cv2.GaussianBlur(img.astype(np.float32), (0, 0), BLUR)[box], mask[box].astype(np.uint8)))
    return out


def appearance_distance(clip: Clip, identity: Identity, frames=(0, 1), candidates: int = 3) -> float:
    return appearance_match(clip, identity, frames, candidates)[0]


def appearance_match(clip: Clip, identity: Identity, frames=(0, 1), candidates: int = 3):
    """Best median colour difference (levels, largest channel) between the rendered identity and the clip.

    Masked squared-difference matching proposes a few positions per template and frame; each is
    scored by the median over the sprite's pixels, so a sliver hidden behind another subject or
    the occluder does not count against it. Returns (distance, (x, y) centre of the best match).
    """
    best, where = np.inf, (np.nan, np.nan)
    for tpl, mask in templates(identity, clip.short):
        m3 = np.repeat(mask[..., None], 3, axis=-1).astype(np.float32)
        inside = mask.astype(bool)
        th, tw = mask.shape
        for t in frames:
            if t >= len(clip.frames):
                continue
            img = cv2.GaussianBlur(np.clip(clip.normalized[t], 0, 255).astype(np.float32), (0, 0), BLUR)
            if img.shape[0] < th or img.shape[1] < tw:
                continue
            sq = cv2.matchTemplate(img, tpl, cv2.TM_SQDIFF, mask=m3)
            for _ in range(candidates):
                y, x = np.unravel_index(int(np.argmin(sq)), sq.shape)
                diff = np.abs(img[y : y + th, x : x + tw] - tpl).max(axis=-1)[inside]
                d = float(np.median(diff))
                if d < best:
                    best, where = d, (x + tw / 2.0, y + th / 2.0)
                sq[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3] = np.inf
    return best, where


def _scores(img: np.ndarray, tpl: np.ndarray, mask: np.ndarray, candidates: int, window=None, quantile: float = QUANTILE,
            exclude=()):
    """[(median difference, (cx, cy))] of the best few positions of one template in one image
    (none with its centre within r px of a point (x, y) of `exclude`: [((x, y), r), ...])."""
    m3 = np.repeat(mask[..., None], 3, axis=-1).astype(np.float32)
    inside = mask.astype(bool)
    th, tw = mask.shape
    if img.shape[0] < th or img.shape[1] < tw:
        return []
    sq = cv2.matchTemplate(img, tpl, cv2.TM_SQDIFF, mask=m3)
    if window is not None:  # keep positions whose centre lies within `reach` of a point
        (px, py), reach = window
        yy, xx = np.mgrid[0 : sq.shape[0], 0 : sq.shape[1]]
        sq[np.hypot(xx + tw / 2.0 - px, yy + th / 2.0 - py) > reach] = np.inf
    for (px, py), r in exclude:
        yy, xx = np.mgrid[0 : sq.shape[0], 0 : sq.shape[1]]
        sq[np.hypot(xx + tw / 2.0 - px, yy + th / 2.0 - py) < r] = np.inf
    out = []
    for _ in range(candidates):
        flat = int(np.argmin(sq))
        y, x = np.unravel_index(flat, sq.shape)
        if not np.isfinite(sq[y, x]):
            break
        diff = np.abs(img[y : y + th, x : x + tw] - tpl).max(axis=-1)[inside]
        out.append((float(np.quantile(diff, quantile)), (x + tw / 2.0, y + th / 2.0)))
        sq[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3] = np.inf
    return out


def _blurred(clip: Clip, t: int) -> np.ndarray:
    return cv2.GaussianBlur(np.clip(clip.normalized[t], 0, 255).astype(np.float32), (0, 0), BLUR)


def best_jitter(clip: Clip, identity: Identity, jitters=(0.9, 1.0, 1.1), frames=(0, 1),
                angles=(0.0,), quantile: float = QUANTILE, exclude=()) -> tuple[float, float, tuple]:
    """(distance, jitter, centre) of the best-matching size in the given frames (default 0 and 1),
    away from the places in `exclude` ([((x, y), r), ...])."""
    best = (np.inf, 1.0, (np.nan, np.nan))
    for j in jitters:
        for tpl, mask in templates(identity, clip.short, (j,), angles=angles):
            for t in frames:
                if t < len(clip.frames):
                    for d, c in _scores(_blurred(clip, t), tpl, mask, 3, quantile=quantile, exclude=exclude):
                        if d < best[0]:
                            best = (d, j, c)
    return best


def template_track(clip: Clip, identity: Identity, jitter: float, start, reach: float, max_distance: float):
    """Screen centres [T, 2] of the subject, matched frame by frame near its last position (nan when lost)."""
    ((tpl, mask),) = templates(identity, clip.short, (jitter,), phases=((0.0, 0.0),))
    T = len(clip.frames)
    centres = np.full((T, 2), np.nan)
    prev = start
    for t in range(T):
        found = _scores(_blurred(clip, t), tpl, mask, 1, window=(prev, reach))
        if found and found[0][0] <= max_distance:
            centres[t] = found[0][1]
            prev = found[0][1]
    return centres


def scale_evidence(clip: Clip, identity: Identity, jitter: float, factor: float = 1.6, frames=(-1, -2)) -> dict:
    """Best distance at the end of the clip for the start size, the size x factor and / factor."""
    out = {}
    for name, j in (("same", jitter), ("bigger", jitter * factor), ("smaller", jitter / factor)):
        ((tpl, mask),) = templates(identity, clip.short, (j,), phases=((0.0, 0.0),))
        best = np.inf
        for t in frames:
            for d, _ in _scores(_blurred(clip, t % len(clip.frames)), tpl, mask, 3):
                best = min(best, d)
        out[name] = best
    return out


