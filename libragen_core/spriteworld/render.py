"""Render a Scene into frames plus exact per-frame, per-subject ground truth.

How: each identity's sprite raster is drawn once (cached); per subject, every frame's sprite is
sampled by inverse affine mapping (nearest) over a small window around the subject, vectorised
over all frames at once, and scattered into the frame. Because sampling is nearest and alpha
is hard, the per-subject masks are exactly the pixels that subject painted.

Ground truth (RenderResult), K subjects, T frames, screen pixels (x right, y down, pixel (r, c)
has its centre at (c + 0.5, r + 0.5)):
  centers [K, T, 2]   sprite centre (x, y); may lie outside the frame
  scales  [K, T]      diameter as a fraction of the short side (SubjectSpec.scale units)
  angles  [K, T]      rotation in degrees, positive = clockwise on screen
  silhouettes [K, T, H, W] bool: pixels the sprite covers inside the frame, ignoring occlusion
  masks   [K, T, H, W] bool: pixels where that subject is what you see (not hidden by a subject
                      drawn later or by the occluder)
  visible [K, T]      masks pixel count / full sprite pixel count (the full count includes the
                      part outside the frame), so leaving the frame and occlusion both lower it
  bboxes  [K, T, 4]   int (x0, y0, x1, y1), end-exclusive, of the in-frame silhouette; -1 if none
  camera  [T, 2]      int camera offset: screen = world - camera
  occluder_mask [T, H, W] bool
Light changes scale the finished frame's brightness; they do not change any ground truth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .backgrounds import canvas_geometry, draw_background, draw_occluder
from .identity import Identity
from .scene import Scene, camera_offsets, frame_times, world_tracks
from .sprites import raster_resolution, sprite_raster

# sprites fit in the unit disc except square corners (radius 1.02); the window must hold them
_REACH = 1.03


@dataclass
class RenderResult:
    scene: Scene
    frames: np.ndarray
    centers: np.ndarray
    scales: np.ndarray
    angles: np.ndarray
    visible: np.ndarray
    masks: np.ndarray
    silhouettes: np.ndarray
    bboxes: np.ndarray
    camera: np.ndarray
    occluder_mask: np.ndarray
    light: np.ndarray  # [T] brightness factor applied to each frame

    def tracks(self) -> dict:
        """JSON-ready ground truth (without the masks)."""
        r = lambda a, d: np.round(a, d).tolist()  # noqa: E731
        return {
            "centers": r(self.centers, 3),
            "scales": r(self.scales, 5),
            "angles": r(self.angles, 3),
            "visible": r(self.visible, 4),
            "bboxes": self.bboxes.tolist(),
            "camera": self.camera.tolist(),
        }


def _sample_sprite(identity: Identity, centers, diameters, angles):
    """Sprite pixels of one subject in every frame, on the integer pixel lattice.

    Returns (t, y, x, rgb, full_count) where (t, y, x) index every covered pixel (also outside
    the frame), rgb [N, 3] its colour and full_count [T] the covered pixel count per frame.
    """
    T = len(centers)
    res = raster_resolution(float(diameters.max()))
    rgb, alpha = sprite_raster(identity, res)
    n = int(np.ceil(diameters.max() * _REACH)) + 2
    origin = np.floor(centers - n / 2).astype(np.int64)  # [T, 2]
    grid = np.arange(n, dtype=np.float32) + 0.5
    dx = (origin[:, 0:1] + grid[None] - centers[:, 0:1]).astype(np.float32)  # [T, n]
    dy = (origin[:, 1:2] + grid[None] - centers[:, 1:2]).astype(np.float32)
    th = np.deg2rad(angles).astype(np.float32)
    k = (res / diameters).astype(np.float32)  # raster pixels per screen pixel
    cos, sin = (np.cos(th) * k)[:, None, None], (np.sin(th) * k)[:, None, None]
    dxb, dyb = dx[:, None, :], dy[:, :, None]
    # inverse rotation maps the screen offset back into the upright sprite; + res/2 centres it
    iu = np.floor(cos * dxb + sin * dyb + res / 2).astype(np.int32)
    iv = np.floor(cos * dyb - sin * dxb + res / 2).astype(np.int32)
    inside = (iu >= 0) & (iu < res) & (iv >= 0) & (iv < res)
    t_idx, r_idx, c_idx = np.nonzero(inside)
    su, sv = iu[t_idx, r_idx, c_idx], iv[t_idx, r_idx, c_idx]
    hit = alpha[sv, su]
    t_idx, r_idx, c_idx, su, sv = t_idx[hit], r_idx[hit], c_idx[hit], su[hit], sv[hit]
    full = np.bincount(t_idx, minlength=T)
    return t_idx, origin[t_idx, 1] + r_idx, origin[t_idx, 0] + c_idx, rgb[sv, su], full


def render_scene(scene: Scene) -> RenderResult:
    h, w = scene.size
    T, K = scene.n_frames, len(scene.subjects)
    cam = camera_offsets(scene)
    ch, cw, origin = canvas_geometry(scene, cam)
    canvas = draw_background(scene, ch, cw, origin)
    rows = cam[:, 1] - origin[1]
    cols = cam[:, 0] - origin[0]
    frames = np.stack([canvas[r : r + h, c : c + w] for r, c in zip(rows, cols)])

    world, scales, angles = world_tracks(scene)
    centers = world - cam[None].astype(np.float64)
    silhouettes = np.zeros((K, T, h, w), dtype=bool)
    full = np.zeros((K, T), dtype=np.int64)
    for k, spec in enumerate(scene.subjects):
        t_idx, y, x, rgb, full[k] = _sample_sprite(spec.identity, centers[k], scales[k] * scene.short, angles[k])
        ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        t_idx, y, x = t_idx[ok], y[ok], x[ok]
        silhouettes[k, t_idx, y, x] = True
        frames[t_idx, y, x] = rgb[ok]  # later subjects overwrite earlier ones: list order = depth

    occ_mask = np.zeros((T, h, w), dtype=bool)
    if scene.occluder is not None:
        m, rgb = draw_occluder(scene.occluder, scene, ch, cw, origin)
        occ_mask = np.stack([m[r : r + h, c : c + w] for r, c in zip(rows, cols)])
        occ_rgb = np.stack([rgb[r : r + h, c : c + w] for r, c in zip(rows, cols)])
        frames[occ_mask] = occ_rgb[occ_mask]

    masks = silhouettes.copy()
    covered = occ_mask.copy()
    for k in range(K - 1, -1, -1):
        masks[k] &= ~covered
        covered |= silhouettes[k]
    counts = masks.sum(axis=(2, 3))
    visible = np.where(full > 0, counts / np.maximum(full, 1), 0.0)
    bboxes = _bboxes(silhouettes)

    light = np.ones(T, dtype=np.float32)
    if scene.light.change:
        t = frame_times(T).astype(np.float32)
        a = scene.light.amount
        light = 1.0 - a * t if scene.light.change == "dims" else 1.0 - a * (1.0 - t)
        frames = np.clip(frames * light[:, None, None, None] + 0.5, 0, 255).astype(np.uint8)
    return RenderResult(scene, frames, centers, scales, angles, visible, masks, silhouettes, bboxes, cam, occ_mask, light)


def _bboxes(sil: np.ndarray) -> np.ndarray:
    K, T, h, w = sil.shape
    out = np.full((K, T, 4), -1, dtype=np.int64)
    rows = sil.any(axis=3)
    cols = sil.any(axis=2)
    has = rows.any(axis=2)
    out[..., 0] = np.where(has, cols.argmax(axis=2), -1)
    out[..., 2] = np.where(has, w - cols[..., ::-1].argmax(axis=2), -1)
    out[..., 1] = np.where(has, rows.argmax(axis=2), -1)
    out[..., 3] = np.where(has, h - rows[..., ::-1].argmax(axis=2), -1)
    return out


def render_identity(
    identity: Identity,
    size: int | tuple[int, int] = 64,
    *,
    angle: float = 0.0,
    scale: float = 0.8,
    light: float = 1.0,
    center: tuple[float, float] = (0.5, 0.5),
    background="white",
) -> tuple[np.ndarray, np.ndarray]:
    """One image of an identity: (uint8 [H, W, 3], mask bool [H, W]).

    For cross-pair references and metric templates. scale = diameter / short side; angle in
    degrees (clockwise); light multiplies the sprite's colours (the background stays as given);
    center as fractions of (width, height); background "white", "black" or an (r, g, b) tuple.
    """
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 8 or w < 8:
        raise InputError(f"reference size must be at least 8x8; got {h}x{w}")
    if isinstance(background, str):
        named = {"white": (255, 255, 255), "black": (0, 0, 0)}
        if background not in named:
            raise InputError(f"background must be 'white', 'black' or an (r, g, b) tuple; got {background!r}")
        background = named[background]
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = np.asarray(background, dtype=np.uint8)
    c = np.array([[center[0] * w, center[1] * h]])
    _, y, x, rgb, _ = _sample_sprite(identity, c, np.array([scale * min(h, w)]), np.array([angle]))
    ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    if light != 1.0:
        rgb = np.clip(rgb.astype(np.float32) * light + 0.5, 0, 255).astype(np.uint8)
    img[y[ok], x[ok]] = rgb[ok]
    mask = np.zeros((h, w), dtype=bool)
    mask[y[ok], x[ok]] = True
    return img, mask
