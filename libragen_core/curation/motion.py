"""Motion filters: clips that stop moving (frozen) and clips with implausibly fast motion.

Frozen: the last frames repeat exactly (at most a couple of pixels change by more than codec
noise) while the caption says something moves. A clip whose caption says every subject stays
still, with no pan or light change, is allowed to be still.
Too much motion: the median optical-flow speed of the moving pixels (Farneback) beyond what any
clean calibration clip reached; a cut or a jittering camera trips it.
"""
from __future__ import annotations

import numpy as np

from ..errors import LibraGenError
from .analysis import Clip
from .filters import FilterResult

STILL_PIXELS = 2  # a frame pair is still when at most this many pixels change visibly


STILL_BRIGHTNESS = 0.3  # and the mean brightness changes less than this (a light change moves it ~1-3 levels)


def still_tail(clip: Clip) -> int:
    """How many frame pairs at the end of the clip are still."""
    brightness = np.abs(np.diff(clip.gray.mean(axis=(1, 2))))
    n = 0
    for changed, light in zip(clip.changed_pixels[::-1], brightness[::-1]):
        if changed > STILL_PIXELS or light >= STILL_BRIGHTNESS:
            break
        n += 1
    return n


def caption_claims_motion(caption: str) -> bool | None:
    """True when the caption says something moves (a subject, the camera or the light); None if unreadable."""
    from ..spriteworld.captions import caption_facts

    try:
        facts = caption_facts(caption)
    except LibraGenError:
        return None
    return bool(facts["camera"] or facts["light"] or any(m != "stay" for m in facts["motions"].values()))


def check_frozen(clip: Clip, th: dict) -> FilterResult:
    tail = still_tail(clip)
    n_pairs = len(clip.frames) - 1
    # the threshold is in pairs of a 17-frame clip; scale for other lengths
    need = max(2, round(th["frozen"] * n_pairs / 16))
    claims = caption_claims_motion(clip.caption)
    frozen = tail >= need and claims is not False
    reason = ""
    if frozen:
        start = n_pairs - tail
        reason = f"frozen from frame {start}: the last {tail} frame pairs are identical while the caption describes motion"
    return FilterResult("frozen", not frozen, tail * 16 / max(n_pairs, 1), th["frozen"], reason)


def motion_speed(clip: Clip) -> float:
    """Median flow speed (px per frame, scaled to a 64 px frame) of the pixels that move, worst frame pair."""
    if len(clip.flow) == 0:
        return 0.0
    speed = np.linalg.norm(clip.flow, axis=-1)
    moving = clip.pair_diff > 24
    worst = 0.0
    for s, m in zip(speed, moving):
        if m.sum() >= 8:
            worst = max(worst, float(np.median(s[m])))
    return worst * 64.0 / clip.short


def check_motion_extreme(clip: Clip, th: dict) -> FilterResult:
    speed = motion_speed(clip)
    bad = speed > th["motion_extreme"]
    reason = f"too much motion: moving pixels travel {speed:.1f} px per frame (limit {th['motion_extreme']:.1f})" if bad else ""
    return FilterResult("motion_extreme", not bad, speed, th["motion_extreme"], reason)
