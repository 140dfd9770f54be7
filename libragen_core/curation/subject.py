"""Subject size and framing: is the subject big enough to learn from, and does it stay in view?

Foreground blobs come from the clip's background model (analysis.Clip.foreground). Subjects
that never move are part of that background, so when almost nothing moves the size is measured
on the background model itself: regions that stand out from a wide median filter of it.
"""
from __future__ import annotations

import cv2
import numpy as np

from .analysis import Clip
from .filters import FilterResult

_CLOSE = np.ones((3, 3), np.uint8)


def _blobs(mask: np.ndarray, min_area: int = 4):
    m8 = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, _CLOSE)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m8, connectivity=8)
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    return labels, stats, keep


def moving_extent(clip: Clip) -> np.ndarray:
    """[T] the largest foreground blob's bounding-box side per frame (px)."""
    out = []
    for m in clip.foreground:
        _, st, keep = _blobs(m)
        out.append(max((max(st[i, 2], st[i, 3]) for i in keep), default=0))
    return np.asarray(out, np.float32)


def static_extent(clip: Clip, level: float = 50.0) -> float:
    """Largest standout region of the background model (px): sprites that never move, and props."""
    bg = np.clip(np.median(clip.background, axis=0), 0, 255).astype(np.uint8)
    k = max(5, (clip.short // 3) | 1)
    smooth = cv2.medianBlur(bg, k).astype(np.float32)
    salient = np.abs(bg.astype(np.float32) - smooth).max(axis=-1) > level
    _, st, keep = _blobs(salient, min_area=6)
    return float(max((max(st[i, 2], st[i, 3]) for i in keep), default=0))


def subject_size(clip: Clip, min_moving_px: float = 3.0) -> tuple[float, str]:
    """(typical diameter of the biggest subject as a fraction of the short side, how it was measured)."""
    ext = moving_extent(clip)
    # the upper quartile: a shrinking or spinning sprite shows its full size only in some frames
    moving = float(np.percentile(ext, 75))
    if clip.foreground.sum(axis=(1, 2)).mean() >= min_moving_px and moving > 0:
        return moving / clip.short, "moving"
    return max(moving, static_extent(clip)) / clip.short, "static"


def _box_area(stat) -> int:
    # fragmented foreground (slow movers half hidden in the median) keeps a stable box, not a stable pixel count
    return int(stat[cv2.CC_STAT_WIDTH]) * int(stat[cv2.CC_STAT_HEIGHT])


def leaving_score(clip: Clip, lookback: int = 4) -> float:
    """The largest fraction of a subject lost at the frame edge (0 when nothing is cut).

    Each blob that touches the border is followed back a few frames through the blobs it
    overlaps most: a subject that walks out shrinks against the edge, one that only touches it
    (or merges with and splits from a neighbour) keeps its area.
    """
    labels_t, stats_t = [], []
    for m in clip.foreground:
        labels, st, keep = _blobs(m)
        mask = np.isin(labels, keep)
        labels_t.append(np.where(mask, labels, 0))
        stats_t.append(st)
    best = 0.0
    for t in range(1, len(labels_t)):
        lab = labels_t[t]
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        for i in border[border > 0]:
            blob = lab == i
            if int(blob[0].sum() + blob[-1].sum() + blob[:, 0].sum() + blob[:, -1].sum()) < 3:
                continue
            area = _box_area(stats_t[t][i])
            largest, cur = area, blob
            for s in range(t - 1, max(-1, t - 1 - lookback), -1):
                prev = labels_t[s][cur]
                prev = prev[prev > 0]
                if not len(prev):
                    break
                j = int(np.bincount(prev).argmax())
                cur = labels_t[s] == j
                largest = max(largest, _box_area(stats_t[s][j]))
            if largest >= 16:
                best = max(best, 1.0 - area / largest)
    return best


def _claimed(clip: Clip):
    from ..errors import LibraGenError
    from .tracks import claimed_subjects

    try:
        return claimed_subjects(clip.caption)[0]
    except LibraGenError:
        return []


def color_size(clip: Clip) -> float | None:
    """Largest median blob side of the subjects' claimed body colours (fraction of the short side)."""
    from .tracks import color_track

    sizes = [float(np.median(color_track(clip, s.color, s.color2).extent)) for s in _claimed(clip)]
    return max(sizes) / clip.short if sizes else None


def measured_size(clip: Clip) -> tuple[float, str]:
    size, how = subject_size(clip)
    if how == "static":
        by_color = color_size(clip)
        if by_color is not None:
            return by_color, "colour"
    return size, how


def described_looks(clip: Clip) -> list:
    from ..errors import LibraGenError
    from ..spriteworld.captions import parse_caption
    from .appearance import identity_from_description

    try:
        return [identity_from_description(d) for _, d in sorted(parse_caption(clip.caption).refs.items())]
    except LibraGenError:
        return []


def check_too_small(clip: Clip, th: dict) -> FilterResult:
    """Too small when the moving subjects are tiny, or when they are smaller than 0.6 of every
    described size class and no described subject is found at its class size (appearance.py)."""
    from ..spriteworld.identity import SIZES
    from .appearance import best_jitter

    size, how = measured_size(clip)
    bad = size < th["too_small"]
    if not bad:
        # a wrong caption changes one subject; when none of several described subjects appears at
        # its size class, or the only one is missing and what moves is much smaller, they shrank
        looks = described_looks(clip)
        small = looks and (len(looks) >= 2 or size < 0.6 * max(SIZES[lk.size] for lk in looks))
        if small and all(best_jitter(clip, lk)[0] > th["caption_appearance"] for lk in looks):
            bad, how = True, f"{how} pixels; no described subject appears at its size class"
    reason = (f"subject too small: the biggest one spans {size:.2f} of the frame's short side "
              f"(measured on {how}; minimum {th['too_small']:.2f})") if bad else ""
    return FilterResult("too_small", not bad, size, th["too_small"], reason)


def color_leaving(clip: Clip) -> float:
    """Largest share of a claimed subject's colour that is gone at the end, lost next to the frame edge."""
    from .tracks import color_track

    subs = _claimed(clip)
    colors = [s.color for s in subs]
    H, W = clip.frames.shape[1:3]
    best = 0.0
    for s in subs:
        if colors.count(s.color) > 1 or s.motion == "shrink":
            continue
        tr = color_track(clip, s.color, s.color2)
        peak = float(tr.count.max())
        if peak < 8 or int(tr.count.argmax()) >= len(tr.count) - 2:
            continue
        last = np.nonzero(tr.count >= 0.2 * peak)[0][-1]
        x, y = tr.screen[last]
        if min(x, y, W - x, H - y) / clip.short < 0.2:
            best = max(best, 1.0 - float(tr.count[-2:].mean()) / peak)
    return best


def check_leaves_frame(clip: Clip, th: dict) -> FilterResult:
    """Two independent signs must agree: a described subject followed by its look is lost at the
    edge (template_leaving), and a subject's pixels shrink against the edge (colour or blobs)."""
    followed, who = template_leaving(clip, th["caption_appearance"])
    shrink = max(color_leaving(clip), leaving_score(clip)) if followed else 0.0
    bad = shrink >= th["leaves_frame"]
    reason = f"subject leaves the frame: {who} is lost at the edge with {shrink:.0%} of it gone" if bad else ""
    return FilterResult("leaves_frame", not bad, shrink, th["leaves_frame"], reason)


def template_leaving(clip: Clip, max_distance: float = 40.0) -> tuple[float, str]:
    """(1.0 when a described subject is followed to the frame edge and then lost, else 0.0; which one).

    The subject is found by its rendered look (appearance.py) and followed frame by frame; a
    template only matches where it fits wholly inside the frame, so a subject that is cut by
    the edge is lost there, while one that merely touches the edge is still found.
    """
    from ..errors import LibraGenError
    from ..spriteworld.captions import parse_caption
    from ..spriteworld.identity import SIZES
    from .appearance import best_jitter, identity_from_description, template_track

    try:
        refs = parse_caption(clip.caption).refs
        looks = [identity_from_description(d) for _, d in sorted(refs.items())]
    except LibraGenError:
        return 0.0, ""
    facts_motions = _claimed_motions(clip.caption)
    H, W = clip.frames.shape[1:3]
    for k, look in enumerate(looks):
        if facts_motions.get(k) in ("grow", "shrink", "spin_cw", "spin_ccw"):
            continue  # its look changes, so losing the template says nothing
        dist, jitter, where = best_jitter(clip, look)
        if dist > max_distance:
            continue
        diameter = SIZES[look.size] * jitter * clip.short
        track = template_track(clip, look, jitter, where, (0.12 + 0.1 * SIZES[look.size]) * clip.short, max_distance)
        seen = ~np.isnan(track[:, 0])
        if seen[:3].sum() < 2 or seen[-2:].any():
            continue
        x, y = track[np.nonzero(seen)[0][-1]]
        if min(x, y, W - x, H - y) <= 0.75 * diameter:
            return 1.0, look.name
    return 0.0, ""


def _claimed_motions(caption: str) -> dict:
    from ..errors import LibraGenError
    from ..spriteworld.captions import caption_facts

    try:
        return caption_facts(caption)["motions"]
    except LibraGenError:
        return {}
