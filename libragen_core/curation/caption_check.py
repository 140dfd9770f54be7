"""Caption mismatch: do the frames show what the caption claims?

caption_facts() gives the motion the caption claims for each subject; the "Ref k:" lines give
each subject's colour. Each subject is followed by its body colour (tracks.py) and every claim is
checked against what the track shows:
- the claimed colour must be there (and as many separate blobs of it as subjects claim it);
- move / zig-zag: the world-space displacement must go the claimed way;
- circle: the path must loop, turning the claimed way (sign of the enclosed area);
- bounce: the subject must rise and come back; grow / shrink: its area must change that way;
- spin: the optical flow inside it must turn the claimed way; stay: nothing of the above.
Only confident contradictions count: a claim that cannot be checked (shared colours, a subject
hidden most of the time) is left alone. Interactions are only checked for presence.
"""
from __future__ import annotations

import numpy as np

from ..errors import LibraGenError
from .analysis import Clip
from .filters import FilterResult
from .tracks import DIRECTIONS_UNIT, ClaimedSubject, Track, claimed_subjects, color_mask, color_track


def _ends(track: Track, present: np.ndarray):
    idx = np.nonzero(present)[0]
    a = np.nanmean(track.center[idx[:2]], axis=0)
    b = np.nanmean(track.center[idx[-2:]], axis=0)
    return a, b


def _off_line(pts: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Largest distance of the path from the straight line through its ends (px)."""
    d = b - a
    n = float(np.hypot(*d))
    if n < 1e-6:
        return float(np.linalg.norm(pts - a, axis=1).max())
    return float(np.abs((pts[:, 0] - a[0]) * d[1] - (pts[:, 1] - a[1]) * d[0]).max() / n)


def _rotation(clip: Clip, mask: np.ndarray, track: Track) -> float:
    """Total turning angle (radians, + = clockwise on screen) of the subject from optical flow."""
    total = 0.0
    for t in range(len(clip.flow)):
        m = mask[t]
        if m.sum() < 12 or np.isnan(track.screen[t]).any():
            continue
        ys, xs = np.nonzero(m)
        rx, ry = xs - track.screen[t, 0], ys - track.screen[t, 1]
        v = clip.flow[t][ys, xs]
        vx, vy = v[:, 0] - v[:, 0].mean(), v[:, 1] - v[:, 1].mean()
        r2 = (rx * rx + ry * ry).sum()
        if r2 > 0:
            total += float((rx * vy - ry * vx).sum() / r2)
    return total


def contradiction(clip: Clip, sub: ClaimedSubject, track: Track, mask: np.ndarray) -> str:
    """Why the frames contradict the subject's claimed motion, or '' when they do not (or cannot tell)."""
    motion = sub.motion
    if motion is None or motion in ("chase", "swap", "meet"):
        return ""
    peak = float(track.count.max())
    present = track.count >= max(6.0, 0.15 * peak)
    if present.mean() < 0.6:
        return ""
    S = clip.short
    a, b = _ends(track, present)
    D = b - a
    pts = track.center[present]
    spread = float(np.linalg.norm(pts - pts.mean(axis=0), axis=1).max())
    first = float(np.mean(track.count[np.nonzero(present)[0][:2]]))
    last = float(np.mean(track.count[np.nonzero(present)[0][-2:]]))
    ratio = last / max(first, 1.0)
    name = f"Ref {sub.index + 1} ({sub.color} {sub.shape or 'subject'})"
    if motion.startswith("move_"):
        u = DIRECTIONS_UNIT[motion[5:]]
        along = float(D @ u)
        if along < 0.05 * S or (np.linalg.norm(D) >= 0.12 * S and along < 0.5 * np.linalg.norm(D)):
            return f"{name} should move {motion[5:].replace('_', '-')} but moved ({D[0]:+.0f}, {D[1]:+.0f}) px"
        off = _off_line(pts, a, b)
        if off > 0.1 * S:
            return f"{name} should move in a straight line but strays {off:.0f} px from it"
    elif motion.startswith("zigzag_"):
        sign = -1.0 if motion.endswith("left") else 1.0
        if sign * D[0] < 0.05 * S:
            return f"{name} should zig-zag {motion[7:]} but moved {D[0]:+.0f} px sideways"
        if abs(D[1]) > 0.12 * S:
            return f"{name} should zig-zag sideways but ends {D[1]:+.0f} px higher or lower"
    elif motion.startswith("circle_"):
        if np.linalg.norm(D) > 0.2 * S or spread < 0.06 * S:
            return f"{name} should circle but its path does not loop (net {np.linalg.norm(D):.0f} px, spread {spread:.0f} px)"
        x, y = pts[:, 0], pts[:, 1]
        area = 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
        want = 1.0 if motion.endswith("_cw") else -1.0
        if want * area < -0.01 * S * S:
            return f"{name} should circle {'clockwise' if want > 0 else 'counterclockwise'} but turns the other way"
    elif motion == "bounce":
        rise = float(a[1] - np.nanmin(pts[:, 1]))
        if rise < 0.05 * S or np.linalg.norm(D) > 0.2 * S:
            return f"{name} should bounce but rises only {rise:.0f} px and ends {np.linalg.norm(D):.0f} px away"
    elif motion == "grow":
        if ratio < 1.2:
            return f"{name} should grow but its area changes x{ratio:.2f}"
    elif motion == "shrink":
        if ratio > 0.83:
            return f"{name} should shrink but its area changes x{ratio:.2f}"
    elif motion.startswith("spin_"):
        turn = _rotation(clip, mask, track)
        want = 1.0 if motion.endswith("_cw") else -1.0
        if np.linalg.norm(D) > 0.2 * S:
            return f"{name} should spin in place but travels {np.linalg.norm(D):.0f} px"
        if want * turn < -1.5:
            return f"{name} should spin {'clockwise' if want > 0 else 'counterclockwise'} but turns {np.degrees(turn):+.0f} deg"
    elif motion == "stay":
        if np.linalg.norm(D) > 0.15 * S or spread > 0.15 * S:
            return f"{name} should stay still but moves ({spread:.0f} px from its mean position)"
        if ratio > 1.5 or ratio < 0.67:
            return f"{name} should stay still but its area changes x{ratio:.2f}"
        if abs(_rotation(clip, mask, track)) > 3.0:
            return f"{name} should stay still but turns"
    return ""


def caption_contradictions(clip: Clip) -> list[str]:
    try:
        subs, _ = claimed_subjects(clip.caption)
    except LibraGenError as e:
        return [f"caption outside the training grammar: {e}"]
    colors = [s.color for s in subs]
    problems = []
    for sub in subs:
        mask = color_mask(clip, sub.color, sub.color2)
        track = color_track(clip, sub.color, sub.color2, mask=mask)
        # a subject of the claimed colours and roughly the claimed size must be seen in a few
        # frames; stray pixels of a similar mix (edges, props) stay far smaller
        if (track.extent >= 0.35 * (sub.size or 0.25) * clip.short).sum() < 3:
            problems.append(f"Ref {sub.index + 1}: no {sub.color} subject is visible")
            continue
        n_claims = colors.count(sub.color)
        if n_claims > 1:
            if track.n_blobs.max() < n_claims:
                problems.append(f"the caption names {n_claims} {sub.color} subjects; at most {track.n_blobs.max()} are visible")
            continue
        if sub.motion and sub.motion.startswith(("move_", "zigzag_", "circle_", "bounce")):
            # matches that never move (a prop or background of a similar colour) would pin the
            # track in place; a moving subject is what changes from frame to frame
            mask = mask & ~(mask.mean(axis=0) >= 0.9)[None]
            track = color_track(clip, sub.color, sub.color2, mask=mask)
        why = contradiction(clip, sub, track, mask)
        if why:
            problems.append(why)
    return list(dict.fromkeys(problems))


def check_caption(clip: Clip, th: dict) -> FilterResult:
    problems = caption_contradictions(clip)
    bad = len(problems) >= th["caption"]
    return FilterResult("caption", not bad, float(len(problems)), th["caption"], "; ".join(problems) if bad else "")
