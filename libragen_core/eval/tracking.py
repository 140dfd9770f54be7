"""Find a known SpriteWorld subject in generated frames, from pixels only.

A generated video comes without masks, so every metric that needs "where is subject k" asks this
tracker. It knows what the subject should look like (its Identity: the renderer draws the exact
template at any pose) and searches each frame for the pose (centre, diameter, angle) whose
rendered template best explains the pixels:

1. Proposals (rotation-free): a per-pixel "identity colour" map (closeness to the body colour or
   to the outline/pattern colour), correlated with a disc and a surrounding ring at a grid of
   diameters. Peaks of (disc mean - ring mean) are blobs of the identity's colours of the right
   size; the best few per frame are kept, so a same-coloured neighbour cannot hide the subject.
2. Pose: around each proposal, masked template matching with a per-frame gain (light changes)
   over positions, diameters and 8 angles; then 36 angles at the winner. Similarity per pose is
   exp(-mse / 2 sigma^2) times (1 - colour leak in a band just outside the silhouette), so a
   template smaller than the blob, or of the wrong shape, loses.
3. Angles over time: a Viterbi pass over the 36 angles per frame, with a small cost per degree
   turned, unwraps the rotation (shapes with 2..6-fold symmetry repeat, and the smallest turn
   between equivalent angles wins). Subjects that look the same at every angle (a plain or
   ringed circle with a dot) report `angle_observable=False`: their spin cannot be seen.
4. A final sub-pixel/scale/angle polish of each frame's pose, and the identity match at it
   (see `frame_identity_scores`).

Coordinates: screen pixels, x right, y down, pixel (r, c) centred at (c + 0.5, r + 0.5), angles
in degrees clockwise; the same conventions as spriteworld.render's ground truth.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import ConfigError, InputError
from ..spriteworld.identity import COLORS, Identity
from ..spriteworld.render import render_identity
from ..spriteworld.scene import Scene, frame_times, world_tracks

# Colour tolerances (0-255 RGB distance): _SIGMA_COLOR for "this pixel has the identity's colour",
# _SIGMA_POSE for the template fit. Rendered sprites use saturated colours at least ~60 apart.
_SIGMA_COLOR = 28.0
_SIGMA_POSE = 80.0
_SIGMA_MATCH = 32.0
ANGLES = np.arange(0.0, 360.0, 10.0)
_SCALE_STEP = 1.06
_TURN_COST = 0.0015  # Viterbi cost per degree turned between frames (a spin turns ~22 deg/frame)
_GAIN_SLACK = (0.8, 1.2)
_WEAK_MATCH = 0.85  # frames below this identity match get a second search around their neighbours' poses
_JUMP_COST = 150.0  # evidence units (about one good detection at 64 px) per short side jumped  # per-frame gain allowed around the expected light factor


def single_thread_blas():
    """Context: one BLAS thread. The tracker does thousands of tiny matrix products, which a
    multi-threaded BLAS runs 10-20x slower than one thread on a busy machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional speed-up
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - opencv is a declared dependency of eval
        raise ConfigError("the eval metrics need OpenCV: pip install opencv-python-headless") from e
    return cv2


@dataclass
class Track:
    """One subject's pose in every frame (screen pixels), and how well it matched there."""

    centers: np.ndarray  # [T, 2] float (x, y)
    diameters: np.ndarray  # [T] px
    angles: np.ndarray  # [T] degrees, unwrapped over time
    gains: np.ndarray  # [T] fitted brightness factor
    match: np.ndarray  # [T] identity score in 0..1 (colour match inside x (1 - leak) outside)
    color_match: np.ndarray  # [T] mean per-pixel colour agreement inside the silhouette
    leak: np.ndarray  # [T] identity colour found just outside the silhouette (wrong shape/size)
    angle_observable: bool
    short: int

    @property
    def scales(self) -> np.ndarray:
        """Diameters as a fraction of the short side (SubjectSpec.scale units)."""
        return self.diameters / self.short


def expected_light(scene: Scene, n_frames: int | None = None) -> np.ndarray:
    """Brightness factor per frame that the scene's light change asks for (as render.py applies it)."""
    T = n_frames or scene.n_frames
    t = frame_times(T)
    a = scene.light.amount
    if scene.light.change == "dims":
        return 1.0 - a * t
    if scene.light.change == "brightens":
        return 1.0 - a * (1.0 - t)
    return np.ones(T)


def check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"frames must be uint8 [T, H, W, 3]; got {frames.dtype} {tuple(frames.shape)}")
    if frames.shape[0] < 1 or min(frames.shape[1:3]) < 16:
        raise InputError(f"frames must hold at least one frame of at least 16x16 pixels; got {tuple(frames.shape)}")
    return frames


# ----------------------------------------------------------------------------------------------
# templates


# bounded caches: a template is up to ~60x60x3 float32 (43 kB)
@lru_cache(maxsize=4096)
def template(identity: Identity, diameter: float, angle: float, fx: float = 0.0, fy: float = 0.0):
    """(rgb float32 [n, n, 3] zero outside, mask bool [n, n], centre (cx, cy) in the window).

    The sprite is drawn by the renderer's own sampler with its centre at (n/2 + fx, n/2 + fy), so
    a template at the true pose reproduces the rendered pixels exactly.
    """
    n = int(np.ceil(diameter * 1.05)) + 6
    n += n % 2
    cx, cy = n / 2 + fx, n / 2 + fy
    img, mask = render_identity(identity, n, angle=angle, scale=diameter / n, center=(cx / n, cy / n), background="black")
    rgb = img.astype(np.float32) * mask[..., None]
    rgb.flags.writeable = False
    mask.flags.writeable = False
    return rgb, mask, (cx, cy)


@lru_cache(maxsize=4096)
def _band(identity: Identity, diameter: float, angle: float, width: int = 2) -> np.ndarray:
    """Ring of pixels just outside the silhouette, as float32 weights."""
    cv2 = _cv2()
    _, mask, _ = template(identity, diameter, angle)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    grown = cv2.dilate(mask.astype(np.uint8), k).astype(bool)
    band = (grown & ~mask).astype(np.float32)
    band.flags.writeable = False
    return band


def palette(identity: Identity) -> np.ndarray:
    """The two colours that cover most of a sprite: body and outline/pattern."""
    return np.array([COLORS[identity.color], COLORS[identity.color2]], dtype=np.float32)


@lru_cache(maxsize=4096)
def angle_observable(identity: Identity) -> bool:
    """False when the sprite looks the same at every rotation (its spin is invisible)."""
    d = 40.0
    base, m0, _ = template(identity, d, 0.0)
    for a in (20.0, 45.0, 70.0, 100.0, 135.0, 160.0):
        rgb, m, _ = template(identity, d, a)
        both = m0 | m
        diff = np.abs(rgb - base).sum(-1)[both]
        if np.mean(diff > 60) > 0.06:
            return True
    return False


def color_map(frames_f: np.ndarray, identity: Identity, gains: np.ndarray) -> np.ndarray:
    """[T, H, W] in 0..1: how close each pixel is to one of the identity's two main colours."""
    pal = palette(identity)
    out = np.zeros(frames_f.shape[:3], dtype=np.float32)
    for c in pal:
        d2 = np.sum((frames_f - gains[:, None, None, None].astype(np.float32) * c) ** 2, axis=-1)
        np.maximum(out, np.exp(-d2 / (2 * _SIGMA_COLOR**2)), out=out)
    # A dark identity on a dark background (black on night blue) gives the whole background a
    # weak response; the median pixel is background, so measure colour above that floor.
    floor = np.median(out.reshape(len(out), -1), axis=1)[:, None, None]
    return np.clip((out - floor) / np.maximum(1.0 - floor, 1e-3), 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# stage 1: proposals


_PROPOSAL_ANGLES = np.arange(0.0, 360.0, 30.0)


@lru_cache(maxsize=4096)
def _blob_kernels(shape: str, d: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """(silhouette kernel, band kernel) for proposals, each summing to 1.

    The silhouette of the shape itself (not a disc) at a coarse angle: thin and off-centre
    shapes (a crescent moon's centre lies in its bite) then peak at their true centre and size.
    """
    cv2 = _cv2()
    probe = Identity(shape, "red", "blue", "plain", "none", "large")
    _, mask, _ = template(probe, d, angle)
    pad = max(2, int(round(0.12 * d)))
    m = np.pad(mask, pad).astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pad + 1, 2 * pad + 1))
    band = (cv2.dilate(m, k) - cv2.dilate(m, np.ones((3, 3), np.uint8))).astype(np.float32)
    inner = m.astype(np.float32)
    return inner / max(inner.sum(), 1.0), band / max(band.sum(), 1.0)


def diameter_grid(short: int, lo: float = 0.1, hi: float = 0.85) -> np.ndarray:
    """Proposal diameters in px, 1.12 apart, from lo to hi short sides."""
    n = int(np.floor(np.log(hi / lo) / np.log(1.12))) + 1
    return short * lo * 1.12 ** np.arange(max(n, 1))


def proposals(cmap: np.ndarray, short: int, shape: str = "circle", k: int = 3,
              scale_range: tuple[float, float] = (0.1, 0.85)) -> list[list[tuple[float, float, float]]]:
    """Per frame, up to k (x, y, diameter) blobs of identity colour shaped like the subject, best first.

    Score = mean colour map inside the silhouette - mean in a band around it, over a grid of
    diameters and 12 angles; all frames are filtered at once, stacked with zero gaps.
    """
    cv2 = _cv2()
    diam = diameter_grid(short, *scale_range)
    T, H, W = cmap.shape
    gap = int(np.ceil(0.85 * short * 0.8)) + 4
    tall = np.zeros((T * (H + gap), W), np.float32)
    for t in range(T):
        tall[t * (H + gap) : t * (H + gap) + H] = cmap[t]
    best = np.full((T, len(diam), H, W), -np.inf, dtype=np.float32)
    for i, d in enumerate(diam):
        for a in _PROPOSAL_ANGLES:
            inner, band = _blob_kernels(shape, round(float(d), 3), float(a))
            r = cv2.filter2D(tall, -1, inner - band, borderType=cv2.BORDER_CONSTANT)
            r = r.reshape(T, H + gap, W)[:, :H]
            np.maximum(best[:, i], r, out=best[:, i])
    out = []
    yy, xx = np.mgrid[:H, :W]
    for t in range(T):
        v = best[t].copy()
        found = []
        for _ in range(k):
            i, y, x = np.unravel_index(int(np.argmax(v)), v.shape)
            if v[i, y, x] <= 0.05 and found:
                break
            d = float(diam[i])
            found.append((x + 0.5, y + 0.5, d))
            v[:, np.hypot(xx - x, yy - y) < 0.6 * d] = -np.inf
        out.append(found)
    return out


# ----------------------------------------------------------------------------------------------
# stage 2: pose search


class _Frame:
    """One frame padded for windows near the borders, with cached derived planes."""

    def __init__(self, frame_f: np.ndarray, cmap: np.ndarray, pad: int):
        self.pad = pad
        self.img = np.pad(frame_f, ((pad, pad), (pad, pad), (0, 0)))
        self.sq = np.pad(np.sum(frame_f**2, axis=-1), pad)
        self.cmap = np.pad(cmap, pad)

    def windows(self, plane: np.ndarray, x0: int, y0: int, n: int, radius: int) -> np.ndarray:
        """[(2r+1)^2, n, n, ...] windows whose top-left corners are (x0 + dx, y0 + dy), |d| <= r."""
        p = self.pad
        size = n + 2 * radius
        ys, xs = y0 - radius + p, x0 - radius + p
        if ys < 0 or xs < 0 or ys + size > plane.shape[0] or xs + size > plane.shape[1]:
            return None
        crop = plane[ys : ys + size, xs : xs + size]
        v = np.lib.stride_tricks.sliding_window_view(crop, (n, n), axis=(0, 1))
        # sliding_window_view puts the window axes last: [sy, sx, (C,) n, n]
        if crop.ndim == 3:
            v = np.moveaxis(v, 2, -1)
        return v.reshape((2 * radius + 1) ** 2, *v.shape[2:])


@lru_cache(maxsize=96)
def _stack(identity: Identity, diameter: float):
    """Templates at every angle of ANGLES for one diameter: rgb [A, n, n, 3], mask, band, centre."""
    rgbs, masks, bands = [], [], []
    for a in ANGLES:
        rgb, mask, centre = template(identity, diameter, float(a))
        rgbs.append(rgb)
        masks.append(mask)
        bands.append(_band(identity, diameter, float(a)))
    rgb = np.stack(rgbs)
    m = np.stack(masks).astype(np.float32)
    b = np.stack(bands)
    return rgb, m, b, np.sum(rgb**2, axis=(1, 2, 3)), m.sum(axis=(1, 2)), np.maximum(b.sum(axis=(1, 2)), 1.0), centre


def _quantise_diameter(d: float, short: int) -> float:
    """Snap to a global geometric grid so templates are shared between frames (and cached)."""
    base = 0.06 * short
    i = max(0, int(round(np.log(d / base) / np.log(_SCALE_STEP))))
    return round(float(base * _SCALE_STEP**i), 3)


@lru_cache(maxsize=64)
def _centroid_offset(shape: str) -> float:
    """Distance from the sprite centre to its silhouette's centroid, as a fraction of the diameter.

    Proposals find the centroid of colour; a crescent moon's centre lies in its bite, 0.16 d away.
    """
    from ..spriteworld.sprites import sprite_raster

    _, alpha = sprite_raster(Identity(shape, "red", "blue", "plain", "none", "large"), 64)
    yy, xx = np.nonzero(alpha)
    return float(np.hypot(xx.mean() + 0.5 - 32, yy.mean() + 0.5 - 32) / 64)


def _search(fr: _Frame, identity: Identity, x: float, y: float, d0: float, gain_range, short: int,
            d_range: tuple[float, float] = (0.0, np.inf)):
    """Pose search around one proposal: integer shifts, 7 diameters, all ANGLES at once.

    Returns (best similarity per angle [A], pose per angle [(x, y, d)]).
    """
    radius = 2 + int(np.ceil(_centroid_offset(identity.shape) * d0 * 1.26))
    prof = np.full(len(ANGLES), -1.0)
    where: list = [None] * len(ANGLES)
    by_step: dict[int, float] = {}

    def run(k: int) -> None:
        d = _quantise_diameter(float(np.clip(d0 * _SCALE_STEP**k, *d_range)), short)
        if k in by_step or d in by_step.values():
            return
        by_step[k] = d
        rgb, m, band, c, count, nband, (tcx, tcy) = _stack(identity, d)
        n = m.shape[1]
        x0, y0 = int(round(x - tcx)), int(round(y - tcy))
        win = fr.windows(fr.img, x0, y0, n, radius)
        if win is None:
            best_by_k[k] = -1.0
            return
        sq = fr.windows(fr.sq, x0, y0, n, radius)
        cm = fr.windows(fr.cmap, x0, y0, n, radius)
        S, A = sq.shape[0], m.shape[0]
        # flattened matrix products: BLAS beats einsum over strided window views by ~100x here
        a = sq.reshape(S, -1) @ m.reshape(A, -1).T
        b = win.reshape(S, -1) @ rgb.reshape(A, -1).T
        g = np.clip(b / np.maximum(c, 1e-6), *gain_range)
        mse = np.maximum(a - 2 * g * b + g * g * c, 0.0) / (3 * count)
        leak = (cm.reshape(S, -1) @ band.reshape(A, -1).T) / nband
        sim = np.exp(-mse / (2 * _SIGMA_POSE**2)) * (1 - leak)  # [S, A]
        best_s = np.argmax(sim, axis=0)
        best = sim[best_s, np.arange(A)]
        best_by_k[k] = float(best.max())
        side = 2 * radius + 1
        for j in np.nonzero(best > prof)[0]:
            dy, dx = divmod(int(best_s[j]), side)
            prof[j] = best[j]
            where[j] = (x0 - radius + dx + tcx, y0 - radius + dy + tcy, d)

    # proposals come from a 1.12-step disc grid and undershoot thin shapes (triangles, stars):
    # scan 0.79x..1.26x coarsely, then the neighbours of the best step
    best_by_k: dict[int, float] = {}
    for k in (-4, -2, 0, 2, 4):
        run(k)
    if best_by_k:
        k0 = max(best_by_k, key=best_by_k.get)
        run(k0 - 1)
        run(k0 + 1)
    return prof, where


def _evidence(frame_f, cmap, identity, pose, gain_range) -> float:
    """Size-aware support for a pose: agreeing pixels beyond chance minus leaked colour.

    Normalised scores favour tiny templates that fit any patch of the right colours; summing
    (agreement - 0.5) over the silhouette makes the whole subject outweigh a fragment of it.
    """
    x, y, d, a = pose
    m, colour, leak, _ = frame_identity_scores(frame_f, cmap, identity, x, y, d, a, gain_range)
    _, mask, _ = template(identity, round(d * 4) / 4, round(a) % 360)
    area = float(mask.sum())
    return (colour - 0.5) * area - leak * area


def _viterbi_candidates(cands, short: int) -> list[int]:
    """Pick one proposal per frame: maximise evidence minus a cost per pixel jumped.

    Stops the track hopping to a look-alike (shared colours) in the odd frame; a real subject
    moves a few pixels per frame, a hop across the frame costs as much as a good detection.
    """
    jump = _JUMP_COST * (short / 64.0) ** 2 / short
    pos = [np.array([[w[int(np.argmax(p))][0], w[int(np.argmax(p))][1]] for _, p, w in c]) for c in cands]
    ev = [np.array([e for e, _, _ in c]) for c in cands]
    acc = ev[0].copy()
    back = []
    for t in range(1, len(cands)):
        dist = np.linalg.norm(pos[t - 1][:, None] - pos[t][None], axis=-1)
        total = acc[:, None] - jump * dist
        b = np.argmax(total, axis=0)
        back.append(b)
        acc = total[b, np.arange(len(cands[t]))] + ev[t]
    out = [int(np.argmax(acc))]
    for b in reversed(back):
        out.append(int(b[out[-1]]))
    return out[::-1]


def _viterbi_angles(profiles: np.ndarray) -> np.ndarray:
    """Indices into ANGLES maximising sum(score) - cost * |turn| (turn = shortest wrapped step)."""
    T, A = profiles.shape
    diff = np.abs(ANGLES[:, None] - ANGLES[None, :])
    turn = np.minimum(diff, 360.0 - diff) * _TURN_COST
    acc = profiles[0].copy()
    back = np.zeros((T, A), dtype=np.int64)
    for t in range(1, T):
        cand = acc[:, None] - turn  # [from, to]
        back[t] = np.argmax(cand, axis=0)
        acc = cand[back[t], np.arange(A)] + profiles[t]
    idx = np.zeros(T, dtype=np.int64)
    idx[-1] = int(np.argmax(acc))
    for t in range(T - 1, 0, -1):
        idx[t - 1] = back[t, idx[t]]
    return idx


def _unwrap(angles: np.ndarray) -> np.ndarray:
    out = angles.astype(np.float64).copy()
    for t in range(1, len(out)):
        step = (angles[t] - angles[t - 1] + 180.0) % 360.0 - 180.0
        out[t] = out[t - 1] + step
    return out


# ----------------------------------------------------------------------------------------------
# identity score at a pose


def _inner(mask: np.ndarray) -> np.ndarray:
    cv2 = _cv2()
    return cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def _tolerant_d2(win: np.ndarray, rgb: np.ndarray, mask: np.ndarray, offset) -> np.ndarray:
    """Squared colour distance of each window pixel to the nearest agreeing template pixel within 1 px.

    Half-pixel pose errors (and a decoder's soft edges) move sprite edges and pattern borders by
    a pixel; comparing each pixel with its 3x3 template neighbourhood keeps those from reading
    as identity errors, while wrong colours, patterns and silhouettes still disagree.
    """
    r0, c0 = offset
    h, w = win.shape[:2]
    big = np.pad(rgb, ((1, 1), (1, 1), (0, 0)))
    bigm = np.pad(mask, 1)
    best = np.full((h, w), np.inf, dtype=np.float32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            t = big[r0 + 1 + dy : r0 + 1 + dy + h, c0 + 1 + dx : c0 + 1 + dx + w]
            m = bigm[r0 + 1 + dy : r0 + 1 + dy + h, c0 + 1 + dx : c0 + 1 + dx + w]
            d2 = np.sum((win - t) ** 2, axis=-1)
            np.minimum(best, np.where(m, d2, np.inf), out=best)
    return best


def frame_identity_scores(frame_f: np.ndarray, cmap: np.ndarray, identity: Identity, x: float, y: float,
                          d: float, angle: float, gain_range) -> tuple[float, float, float, float]:
    """(match, colour agreement, leak, gain) of the identity drawn at this exact pose.

    colour agreement: mean over the silhouette of exp(-|pixel - gain * template|^2 / 2 sigma^2),
    so a wrong colour, pattern, marking region or a misplaced outline lowers it in proportion to
    its area. leak: mean identity-colour map over a 2-px band outside the silhouette, which is
    what a wrong shape or a larger sprite of the same colours leaves. match = agreement x (1 - leak).
    Pixels of the silhouette outside the frame count as disagreeing.
    """
    cv2 = _cv2()
    H, W = frame_f.shape[:2]
    # whole pixels go into the window origin, the quarter-pixel remainder into the template
    qx, qy = np.floor(x * 4) / 4, np.floor(y * 4) / 4
    fx, fy = qx - np.floor(qx), qy - np.floor(qy)
    rgb, mask, (tcx, tcy) = template(identity, round(d * 4) / 4, round(angle) % 360, fx, fy)
    n = mask.shape[0]
    ox, oy = int(np.floor(qx)) - n // 2, int(np.floor(qy)) - n // 2
    x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + n, W), min(oy + n, H)
    if x1 <= x0 or y1 <= y0:
        return 0.0, 0.0, 0.0, 1.0
    sub_m = mask[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    sub_t = rgb[y0 - oy : y1 - oy, x0 - ox : x1 - ox][sub_m]
    sub_p = frame_f[y0:y1, x0:x1][sub_m]
    g = float(np.clip(np.sum(sub_p * sub_t) / max(float(np.sum(sub_t**2)), 1e-6), *gain_range))
    # the silhouette's own edge is uncertain by a pixel (sub-pixel pose, soft decoders): it counts half
    # Interior pixels must match exactly (fine stripes are 1-2 px wide, a tolerance would hide a
    # wrong pattern); silhouette-edge pixels may match any template pixel within 1 px and count half.
    inner = _inner(mask)
    weight = np.where(inner, 1.0, 0.5).astype(np.float32) * mask
    win = frame_f[y0:y1, x0:x1]
    sl = (slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox))
    exact = np.sum((win - g * rgb[sl]) ** 2, axis=-1)
    d2 = np.where(inner[sl], exact, _tolerant_d2(win, g * rgb, mask, (y0 - oy, x0 - ox)))
    agree = np.exp(-d2 / (2 * _SIGMA_MATCH**2))
    colour = float(np.sum(agree * weight[sl]) / max(float(weight.sum()), 1e-6))
    band = _band(identity, round(d * 4) / 4, round(angle) % 360)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    # the sub-pixel template may sit half a pixel off the integer one the band was built for
    band = band * (1 - cv2.dilate(mask.astype(np.uint8), k))
    bsub = band[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    leak = float(np.sum(bsub * cmap[y0:y1, x0:x1]) / max(float(band.sum()), 1.0))
    return colour * (1 - leak), colour, leak, g


def _polish(frame_f, cmap, identity, pose, gain_range, d_range=(0.0, np.inf)):
    """Coordinate ascent on sub-pixel offset, angle and diameter of the identity score."""
    x, y, d, a = pose
    best = frame_identity_scores(frame_f, cmap, identity, x, y, d, a, gain_range)
    for _ in range(2):
        for dx, dy in ((-0.5, 0), (0.5, 0), (0, -0.5), (0, 0.5), (-0.25, 0), (0.25, 0), (0, -0.25), (0, 0.25)):
            s = frame_identity_scores(frame_f, cmap, identity, x + dx, y + dy, d, a, gain_range)
            if s[0] > best[0]:
                best, x, y = s, x + dx, y + dy
        for da in (-5.0, 5.0, -2.5, 2.5):
            s = frame_identity_scores(frame_f, cmap, identity, x, y, d, a + da, gain_range)
            if s[0] > best[0]:
                best, a = s, a + da
        for f in (1 / 1.03, 1.03):
            if not d_range[0] <= d * f <= d_range[1]:
                continue
            s = frame_identity_scores(frame_f, cmap, identity, x, y, d * f, a, gain_range)
            if s[0] > best[0]:
                best, d = s, d * f
    return (x, y, d, a), best


# ----------------------------------------------------------------------------------------------
# public


def track_subject(frames, identity: Identity, light: np.ndarray | None = None, n_proposals: int = 3,
                  scale_range: tuple[float, float] = (0.1, 0.85)) -> Track:
    """Pose and identity match of one subject in every frame.

    light: expected brightness factor per frame; scale_range: diameters searched, in short sides
    (a prompt names the size class, so track_scene searches 0.6x..1.6x the sizes the scene asks for;
    that keeps a fragment of a look-alike from passing for a hidden subject).
    """
    frames = check_frames(frames)
    T, H, W, _ = frames.shape
    short = min(H, W)
    light = np.ones(T) if light is None else np.asarray(light, dtype=np.float64)
    if light.shape != (T,):
        raise InputError(f"light must hold one factor per frame ({T}); got shape {light.shape}")
    frames_f = frames.astype(np.float32)
    cmap = color_map(frames_f, identity, light)
    lo, hi = float(scale_range[0]), float(max(scale_range[1], scale_range[0] * 1.13))
    props = proposals(cmap, short, identity.shape, n_proposals, (lo, hi))
    d_range = (lo * short, hi * short)
    pad = int(np.ceil(0.85 * short * 1.1)) + 16
    observable = angle_observable(identity)
    gains = [(light[t] * _GAIN_SLACK[0], light[t] * _GAIN_SLACK[1]) for t in range(T)]

    def candidates(t: int, props_t) -> list[tuple[float, np.ndarray, list]]:
        fr = _Frame(frames_f[t], cmap[t], pad)
        found = []
        for x, y, d0 in props_t:
            prof, where = _search(fr, identity, x, y, d0, gains[t], short, d_range)
            # size-aware evidence ranks the proposals, at the few best angles of each
            ev = -np.inf
            for j in np.argsort(-prof)[:3]:
                if where[j] is not None:
                    ev = max(ev, _evidence(frames_f[t], cmap[t], identity, (*where[j], float(ANGLES[j])), gains[t]))
            if np.isfinite(ev):
                found.append((ev, np.maximum(prof, 0.0), where))
        return found

    def solve(cands) -> dict:
        chosen = _viterbi_candidates(cands, short)
        profiles = np.stack([cands[t][chosen[t]][1] for t in range(T)])
        idx = _viterbi_angles(profiles) if observable else np.argmax(profiles, axis=1)
        out = {k: np.zeros(T) for k in ("x", "y", "d", "a", "g", "m", "c", "l")}
        for t in range(T):
            w = cands[t][chosen[t]][2][idx[t]]
            (x, y, d, a), (m, c, leak, g) = _polish(frames_f[t], cmap[t], identity, (w[0], w[1], w[2], float(ANGLES[idx[t]])),
                                                     gains[t], d_range)
            for key, v in zip("xydagmcl", (x, y, d, a, g, m, c, leak)):
                out[key][t] = v
        return out

    fallback = (0.0, np.zeros(len(ANGLES)), [(W / 2, H / 2, 0.3 * short)] * len(ANGLES))
    cands = [candidates(t, props[t]) or [fallback] for t in range(T)]
    out = solve(cands)
    # Second pass: a frame that matched poorly also tries its well-matched neighbours' poses
    # (a proposal can latch onto part of the subject and suppress the whole one nearby).
    weak = [t for t in range(T) if out["m"][t] < _WEAK_MATCH]
    for t in weak:
        extra = [(out["x"][u], out["y"][u], out["d"][u]) for u in (t - 1, t + 1) if 0 <= u < T and out["m"][u] >= _WEAK_MATCH]
        cands[t] = [c for c in cands[t] if c is not fallback] + candidates(t, extra) or [fallback]
    if weak:
        out = solve(cands)
    angles = _unwrap(out["a"]) if observable else np.zeros(T)
    return Track(
        centers=np.stack([out["x"], out["y"]], axis=1),
        diameters=out["d"],
        angles=angles,
        gains=out["g"],
        match=out["m"],
        color_match=out["c"],
        leak=out["l"],
        angle_observable=observable,
        short=short,
    )


def track_scene(frames, scene: Scene) -> list[Track]:
    """Track every subject of the scene the video was asked to show (same order as scene.subjects)."""
    frames = check_frames(frames)
    light = expected_light(scene, frames.shape[0])
    _, scales, _ = world_tracks(scene)
    with single_thread_blas():
        return [track_subject(frames, s.identity, light, scale_range=(0.6 * float(scales[k].min()), 1.6 * float(scales[k].max())))
                for k, s in enumerate(scene.subjects)]
