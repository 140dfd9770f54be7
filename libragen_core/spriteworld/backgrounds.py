"""Background, props and occluder, drawn once per clip on a world canvas that the camera crops.

The canvas covers every position the camera visits, so a pan is a per-frame crop offset and the
texture, props and occluder move with the world exactly.
"""
from __future__ import annotations

import numpy as np

from .scene import BG_COLORS, Occluder, Prop, Scene

PROP_COLORS = {
    "sun": (250, 222, 120),
    "cloud": (246, 246, 250),
    "trunk": (115, 80, 50),
    "crown": (75, 140, 75),
    "rock": (128, 126, 122),
    "house": (196, 110, 90),
    "roof": (120, 60, 50),
}
OCCLUDER_COLORS = {"pillar": (140, 140, 150), "bush": (45, 110, 50)}


def _shade(rgb, factor: float) -> np.ndarray:
    return np.clip(np.asarray(rgb, dtype=np.float32) * factor, 0, 255)


def canvas_geometry(scene: Scene, offsets: np.ndarray):
    """(canvas height, canvas width, origin (x, y) in world pixels) for the given camera offsets."""
    h, w = scene.size
    ox0, oy0 = offsets.min(axis=0)
    ox1, oy1 = offsets.max(axis=0)
    return h + int(oy1 - oy0), w + int(ox1 - ox0), (int(ox0), int(oy0))


def world_grid(ch: int, cw: int, origin) -> tuple[np.ndarray, np.ndarray]:
    """World pixel-centre coordinates (x [1, cw], y [ch, 1]) of the canvas."""
    x = (np.arange(cw, dtype=np.float32) + origin[0] + 0.5)[None, :]
    y = (np.arange(ch, dtype=np.float32) + origin[1] + 0.5)[:, None]
    return x, y


def draw_background(scene: Scene, ch: int, cw: int, origin) -> np.ndarray:
    """uint8 [ch, cw, 3] background with props, in world coordinates."""
    h, w = scene.size
    unit = scene.short / 64.0  # texture sizes scale with the frame so 64 and 256 px look alike
    bg = scene.background
    base = np.asarray(BG_COLORS[bg.color], dtype=np.float32)
    x, y = world_grid(ch, cw, origin)
    if bg.kind == "plain":
        img = np.broadcast_to(base, (ch, cw, 3)).copy()
    elif bg.kind == "gradient":
        f = 1.12 - 0.4 * np.clip(y / h, -0.2, 1.2)  # lighter sky at the top, darker ground
        img = np.broadcast_to(base * f[..., None], (ch, cw, 3)).copy()
    elif bg.kind == "checkered":
        tile = 8 * unit
        odd = ((np.floor(x / tile) + np.floor(y / tile)) % 2)[..., None]
        img = np.where(odd > 0, _shade(base, 0.84), base)
    elif bg.kind == "striped":
        period = 10 * unit
        odd = ((np.floor((x + y) / period)) % 2)[..., None]
        img = np.where(odd > 0, _shade(base, 0.86), base)
    elif bg.kind == "speckled":
        rng = np.random.default_rng(scene.seed)
        block = max(1, round(2 * unit))
        # noise is indexed by world block, so it stays glued to the world during a pan
        gx = np.floor(x / block).astype(np.int64) - int(np.floor(origin[0] / block)) + 1
        gy = np.floor(y / block).astype(np.int64) - int(np.floor(origin[1] / block)) + 1
        noise = rng.uniform(-22, 22, size=(int(gy.max()) + 2, int(gx.max()) + 2)).astype(np.float32)
        img = base + noise[gy, gx][..., None]
    else:
        raise ValueError(bg.kind)
    img = np.broadcast_to(img, (ch, cw, 3)).astype(np.float32)
    for prop in bg.props:
        _draw_prop(img, prop, x, y, w, h, scene.short)
    return np.clip(img, 0, 255).astype(np.uint8)


def _disc(x, y, cx, cy, r):
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def _draw_prop(img: np.ndarray, prop: Prop, x, y, w, h, short):
    cx, cy, s = prop.x * w, prop.y * h, prop.size * short
    paint = []
    if prop.kind == "sun":
        paint.append((_disc(x, y, cx, cy, 0.42 * s), PROP_COLORS["sun"]))
    elif prop.kind == "cloud":
        m = _disc(x, y, cx, cy, 0.25 * s) | _disc(x, y, cx - 0.28 * s, cy + 0.08 * s, 0.18 * s) | _disc(x, y, cx + 0.28 * s, cy + 0.08 * s, 0.2 * s)
        paint.append((m, PROP_COLORS["cloud"]))
    elif prop.kind == "tree":
        trunk = (np.abs(x - cx) <= 0.08 * s) & (y >= cy) & (y <= cy + 0.5 * s)
        paint += [(trunk, PROP_COLORS["trunk"]), (_disc(x, y, cx, cy - 0.05 * s, 0.3 * s), PROP_COLORS["crown"])]
    elif prop.kind == "rock":
        paint.append((((x - cx) / (0.45 * s)) ** 2 + ((y - cy) / (0.28 * s)) ** 2 <= 1, PROP_COLORS["rock"]))
    elif prop.kind == "house":
        body = (np.abs(x - cx) <= 0.3 * s) & (y >= cy - 0.1 * s) & (y <= cy + 0.4 * s)
        roof = (y < cy - 0.1 * s) & (y >= cy - 0.45 * s) & (np.abs(x - cx) <= 0.38 * s * (y - (cy - 0.45 * s)) / (0.35 * s))
        paint += [(body, PROP_COLORS["house"]), (roof, PROP_COLORS["roof"])]
    for mask, color in paint:
        mask = np.broadcast_to(mask, img.shape[:2])
        img[mask] = color


def draw_occluder(occ: Occluder, scene: Scene, ch: int, cw: int, origin) -> tuple[np.ndarray, np.ndarray]:
    """(mask bool [ch, cw], rgb uint8 [ch, cw, 3]) of the foreground occluder on the canvas."""
    h, w = scene.size
    x, y = world_grid(ch, cw, origin)
    cx, half = occ.x * w, occ.width * w / 2
    color = np.asarray(OCCLUDER_COLORS[occ.kind], dtype=np.float32)
    if occ.kind == "pillar":
        mask = np.broadcast_to(np.abs(x - cx) <= half, (ch, cw))
        shade = 1.0 - 0.25 * np.abs((x - cx) / max(half, 1e-6))  # rounded look
        rgb = np.broadcast_to(color * shade[..., None], (ch, cw, 3))
    else:
        ry = 0.32 * h
        mask = ((x - cx) / half) ** 2 + ((y - h) / ry) ** 2 <= 1.0
        rgb = np.broadcast_to(color * (0.9 + 0.2 * ((y / h) < 0.85))[..., None], (ch, cw, 3))
    return np.ascontiguousarray(mask), np.clip(rgb, 0, 255).astype(np.uint8)
