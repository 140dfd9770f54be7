"""Motion/text alignment: does each tracked subject move the way the prompt's scene says?

Every motion class of SpriteWorld is a small parametric model of the trajectory (centre, log
diameter, angle over normalised time t in [0, 1]), fitted to the track by weighted least squares
with the class's minimum amplitude enforced (a "move left" must move at least 0.18 short sides,
a "grow" must grow at least 1.4x, a "spin" must turn at least 180 degrees), so doing nothing never
fits a motion. Channels a class does not move must stay constant. The misfit is

    R = mean_w |P - P_hat|^2 / s_p^2 + mean_w (L - L_hat)^2 / s_l^2 + mean_w (A - A_hat)^2 / s_a^2

(positions P in short-side units in WORLD coordinates: the scene's known camera pan is added
back, so a pan is not mistaken for subject motion; L = log diameter; A = angle in degrees, left
out when the sprite looks the same at every angle; weights = the tracker's per-frame identity
match, so frames where the subject was not found count little), with s_p = 0.025, s_l = 0.06,
s_a = 20 deg, and each frame's term capped at 16 (a frame where the subject was lost costs at
most that much). The per-subject alignment score is exp(-R_true / 2) for the class the scene asks
for, in 0..1 (1 = the track is that motion, within tracking noise). The classifier view picks the
class with the smallest R; interactions (chase, swap, meet) are fitted against the partner's own
track. Amplitudes the prompt does not state (how far, how fast) are free within each class.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spriteworld.motions import DIRECTIONS, INTERACTIONS, MOTIONS, SINGLE_MOTIONS
from ..spriteworld.scene import Scene, camera_offsets
from .tracking import Track

SIGMA_POS = 0.025
SIGMA_LOGSCALE = 0.06
SIGMA_ANGLE = 20.0
MIN_MOVE = 0.18
MIN_RADIUS = 0.07
MIN_HOP = 0.15
MIN_ZIG = 0.05
MIN_LOG_GROWTH = float(np.log(1.4))
MIN_TURN = 180.0
RESIDUAL_CAP = 16.0


@dataclass
class TrackData:
    t: np.ndarray  # [T] in 0..1
    pos: np.ndarray  # [T, 2] world position / short side
    logd: np.ndarray  # [T]
    angle: np.ndarray  # [T] deg
    w: np.ndarray  # [T] weights, sum 1
    angle_ok: bool


def track_data(track: Track, scene: Scene) -> TrackData:
    T = len(track.centers)
    cam = camera_offsets(scene) if T == scene.n_frames else np.zeros((T, 2))
    pos = (track.centers + cam) / track.short
    w = np.clip(track.match, 0.05, 1.0)
    return TrackData(np.linspace(0.0, 1.0, T) if T > 1 else np.zeros(1), pos, np.log(np.maximum(track.diameters, 1e-3)),
                     track.angles.astype(np.float64), w / w.sum(), track.angle_observable)


def _wmean(w, x):
    return np.tensordot(w, x, axes=(0, 0))


def _lsq(w, X, y):
    sw = np.sqrt(w)[:, None]
    coef, *_ = np.linalg.lstsq(X * sw, y * sw[:, 0], rcond=None)
    return coef


def _line(w, t, y, slope_min: float | None = None, sign: float = 1.0):
    """Fit y = c + sign * k * t with k >= slope_min; returns the fitted curve."""
    k = float(_lsq(w, np.stack([np.ones_like(t), sign * t], 1), y)[1])
    if slope_min is not None:
        k = max(k, slope_min)
    c = _wmean(w, y - sign * k * t)
    return c + sign * k * t


def _static(d: TrackData):
    return np.broadcast_to(_wmean(d.w, d.pos), d.pos.shape), _wmean(d.w, d.logd), _wmean(d.w, d.angle)


def _misfit(d: TrackData, pos_hat, logd_hat, angle_hat) -> float:
    r = np.sum((d.pos - pos_hat) ** 2, axis=1) / SIGMA_POS**2
    r = r + (d.logd - logd_hat) ** 2 / SIGMA_LOGSCALE**2
    if d.angle_ok:
        r = r + (d.angle - angle_hat) ** 2 / SIGMA_ANGLE**2
    # a frame where the tracker lost the subject (occlusion, overlap) costs at most RESIDUAL_CAP
    return float(_wmean(d.w, np.minimum(r, RESIDUAL_CAP)))


def fit_single(d: TrackData, motion: str) -> float:
    """Misfit R of one single-subject motion class."""
    pos_hat, logd_hat, angle_hat = _static(d)
    t, w = d.t, d.w
    if motion.startswith("move_"):
        u = np.asarray(DIRECTIONS[motion[5:]], dtype=np.float64)
        u /= np.linalg.norm(u)
        along = _line(w, t, d.pos @ u, MIN_MOVE)
        perp = np.array([-u[1], u[0]])
        pos_hat = along[:, None] * u + _wmean(w, d.pos @ perp) * perp
    elif motion.startswith("circle_"):
        s = 1.0 if motion.endswith("_cw") else -1.0
        th = s * 2 * np.pi * t
        c, sn = np.cos(th), np.sin(th)
        one, zero = np.ones_like(t), np.zeros_like(t)
        X = np.concatenate([np.stack([one, zero, c, -sn], 1), np.stack([zero, one, sn, c], 1)])
        ww = np.concatenate([w, w])
        coef = _lsq(ww, X, np.concatenate([d.pos[:, 0], d.pos[:, 1]]))
        p = coef[2:]
        r = np.linalg.norm(p)
        if r < MIN_RADIUS:
            p = (p / r if r > 1e-9 else np.array([1.0, 0.0])) * MIN_RADIUS
        rot = np.stack([c * p[0] - sn * p[1], sn * p[0] + c * p[1]], 1)
        pos_hat = rot + _wmean(w, d.pos - rot)
    elif motion == "bounce":
        hop = np.abs(np.sin(2 * np.pi * t))
        y = -_line(w, hop, -d.pos[:, 1], MIN_HOP)  # y = y0 - h * hop, h >= MIN_HOP
        pos_hat = np.stack([np.full_like(t, _wmean(w, d.pos[:, 0])), y], 1)
    elif motion.startswith("zigzag_"):
        sign = -1.0 if motion.endswith("left") else 1.0
        x = _line(w, t, d.pos[:, 0], MIN_MOVE, sign)
        tri = (2 / np.pi) * np.arcsin(np.sin(2 * np.pi * 2 * t))
        y = -_line(w, tri, -d.pos[:, 1], MIN_ZIG)
        pos_hat = np.stack([x, y], 1)
    elif motion in ("grow", "shrink"):
        logd_hat = _line(w, t, d.logd, MIN_LOG_GROWTH, 1.0 if motion == "grow" else -1.0)
    elif motion.startswith("spin_"):
        angle_hat = _line(w, t, d.angle, MIN_TURN, 1.0 if motion.endswith("_cw") else -1.0)
        if not d.angle_ok:  # the spin cannot be seen: the class reduces to "stay"
            angle_hat = d.angle
    elif motion != "stay":
        raise ValueError(f"{motion!r} is not a single-subject motion")
    return _misfit(d, pos_hat, logd_hat, angle_hat)


def fit_interaction(d: TrackData, partner: TrackData, motion: str) -> float:
    """Misfit R of chase / swap / meet against the partner's track (scale and angle constant)."""
    t, w = d.t, d.w
    _, logd_hat, angle_hat = _static(d)
    q0 = partner.pos[0]
    if motion == "chase":
        lead = partner.pos[-1] - partner.pos[0]
        u = lead / max(np.linalg.norm(lead), 1e-6)
        # P = p (1 - t) + t (lead_end - g u): linear in p (2) and g
        one_t = 1 - t
        X = np.concatenate([np.stack([one_t, 0 * t, -t * u[0]], 1), np.stack([0 * t, one_t, -t * u[1]], 1)])
        y = np.concatenate([d.pos[:, 0] - t * partner.pos[-1, 0], d.pos[:, 1] - t * partner.pos[-1, 1]])
        p0, p1, g = _lsq(np.concatenate([w, w]), X, y)
        g = max(g, 0.0)
        pos_hat = np.stack([p0 * (1 - t) + t * (partner.pos[-1, 0] - g * u[0]), p1 * (1 - t) + t * (partner.pos[-1, 1] - g * u[1])], 1)
    elif motion == "swap":
        p = d.pos[0]
        dv = q0 - p
        n = np.array([-dv[1], dv[0]]) / max(np.linalg.norm(dv), 1e-6)
        base = p + t[:, None] * dv
        arc = float(_lsq(np.concatenate([w, w]), np.concatenate([np.sin(np.pi * t) * n[0], np.sin(np.pi * t) * n[1]])[:, None],
                         np.concatenate([d.pos[:, 0] - base[:, 0], d.pos[:, 1] - base[:, 1]]))[0])
        pos_hat = base + np.sin(np.pi * t)[:, None] * arc * n
    elif motion == "meet":
        p = d.pos[0]
        u = (q0 - p) / max(np.linalg.norm(q0 - p), 1e-6)
        mid = (p + q0) / 2
        # end = mid - g/2 u with 0 <= g <= |q0 - p|: they must close in
        span = t[:, None] * -0.5 * u
        base = p + t[:, None] * (mid - p)
        g = float(_lsq(np.concatenate([w, w]), np.concatenate([span[:, 0], span[:, 1]])[:, None],
                       np.concatenate([d.pos[:, 0] - base[:, 0], d.pos[:, 1] - base[:, 1]]))[0])
        g = float(np.clip(g, 0.0, 0.8 * np.linalg.norm(q0 - p)))
        pos_hat = base + span * g
    else:
        raise ValueError(f"{motion!r} is not an interaction")
    return _misfit(d, pos_hat, logd_hat, angle_hat)


def _partner(scene: Scene, k: int) -> int | None:
    spec = scene.subjects[k]
    if MOTIONS[spec.motion].interaction:
        return spec.params.get("target", spec.params.get("partner"))
    if scene.interaction is not None and k in scene.interaction.subjects:
        a, b = scene.interaction.subjects
        return b if k == a else a
    return None


def equivalent(true: str, predicted: str, angle_ok: bool) -> bool:
    """Classes a video cannot tell apart count as the same (an invisible spin looks like staying)."""
    if true == predicted:
        return True
    invisible = {"stay", "spin_cw", "spin_ccw"}
    return not angle_ok and true in invisible and predicted in invisible


def motion_alignment(tracks: list[Track], scene: Scene) -> list[dict]:
    """Per subject: {motion, score (0..1), predicted, correct, misfit, misfits per class}."""
    data = [track_data(tr, scene) for tr in tracks]
    out = []
    for k, spec in enumerate(scene.subjects):
        d = data[k]
        misfits = {m: fit_single(d, m) for m in SINGLE_MOTIONS}
        j = _partner(scene, k)
        if j is not None and 0 <= j < len(data):
            for m in INTERACTIONS:
                misfits[m] = fit_interaction(d, data[j], m)
        true = spec.motion
        r_true = misfits.get(true, fit_single(d, true) if true in SINGLE_MOTIONS else np.inf)
        predicted = min(misfits, key=misfits.get)
        out.append({
            "motion": true,
            "score": float(np.exp(-r_true / 2)),
            "predicted": predicted,
            "correct": equivalent(true, predicted, d.angle_ok),
            "misfit": float(r_true),
            "misfits": {m: round(v, 4) for m, v in sorted(misfits.items(), key=lambda kv: kv[1])[:5]},
        })
    return out
