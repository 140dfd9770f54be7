"""Sprite rasters: one RGB image + hard alpha per identity, drawn once and cached.

A raster of resolution R covers the sprite's own square [-1, 1]^2 (x right, y down); the
renderer warps it into frames by inverse mapping with nearest sampling, so the alpha it reads is
exactly the set of pixels it paints: masks are ground truth, not estimates.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .identity import COLORS, Identity


def _grid(res: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(res, dtype=np.float32) + 0.5) / res * 2.0 - 1.0
    return np.meshgrid(c, c)  # u (x), v (y)


def polygon_mask(u: np.ndarray, v: np.ndarray, verts) -> np.ndarray:
    """Even-odd point-in-polygon test for every (u, v); verts is a list of (x, y)."""
    inside = np.zeros(u.shape, dtype=bool)
    n = len(verts)
    for i in range(n):
        x0, y0 = verts[i]
        x1, y1 = verts[(i + 1) % n]
        crosses = (y0 > v) != (y1 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x0 + (v - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (u < xc)
    return inside


def _regular(n: int, radius: float, rot: float = 0.0, inner: float | None = None):
    pts = []
    steps = 2 * n if inner else n
    for i in range(steps):
        a = rot + 2 * np.pi * i / steps - np.pi / 2
        r = inner if inner and i % 2 else radius
        pts.append((r * np.cos(a), r * np.sin(a)))
    return pts


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Silhouette of a shape on sprite coordinates (each fits inside the unit disc, centred)."""
    if shape == "circle":
        return u * u + v * v <= 0.92**2
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.72
    if shape == "triangle":
        return polygon_mask(u, v, [(0.0, -0.92), (0.92, 0.68), (-0.92, 0.68)])
    if shape == "star":
        return polygon_mask(u, v, _regular(5, 0.98, inner=0.45))
    if shape == "diamond":
        return np.abs(u) / 0.72 + np.abs(v) / 0.96 <= 1.0
    if shape == "heart":
        x, y = u * 1.22, -v * 1.22 + 0.22
        return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0
    if shape == "hexagon":
        return polygon_mask(u, v, _regular(6, 0.92, rot=np.pi / 6))
    if shape == "cross":
        a, b = np.abs(u), np.abs(v)
        return ((a <= 0.3) & (b <= 0.9)) | ((b <= 0.3) & (a <= 0.9))
    if shape == "moon":
        outer = u * u + v * v <= 0.92**2
        bite = (u - 0.48) ** 2 + (v + 0.22) ** 2 <= 0.72**2
        return outer & ~bite
    if shape == "flower":
        # a round heart with six round petals: broad enough to show a pattern inside
        m = u * u + v * v <= 0.5**2
        for i in range(6):
            a = np.pi / 2 + i * np.pi / 3
            m |= (u - 0.6 * np.cos(a)) ** 2 + (v - 0.6 * np.sin(a)) ** 2 <= 0.33**2
        return m
    raise ValueError(f"unknown shape {shape!r}")


def pattern_mask(pattern: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where the pattern colour (color2) shows inside the body."""
    if pattern == "plain":
        return np.zeros(u.shape, dtype=bool)
    if pattern == "striped":
        return (np.floor((v + 1.0) / 0.26) % 2) == 1
    if pattern == "spotted":
        fu = (u + 1.0) / 0.5 % 1.0 - 0.5
        fv = (v + 1.0) / 0.5 % 1.0 - 0.5
        return fu * fu + fv * fv <= 0.27**2
    if pattern == "checkered":
        return ((np.floor((u + 1.0) / 0.4) + np.floor((v + 1.0) / 0.4)) % 2) == 1
    if pattern == "two-tone":
        return v < -0.05
    if pattern == "ringed":
        return (np.floor(np.sqrt(u * u + v * v) / 0.24) % 2) == 1
    raise ValueError(f"unknown pattern {pattern!r}")


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        m = out.copy()
        m[1:] &= out[:-1]
        m[:-1] &= out[1:]
        m[:, 1:] &= out[:, :-1]
        m[:, :-1] &= out[:, 1:]
        out = m
    return out


@lru_cache(maxsize=4096)
def sprite_raster(identity: Identity, res: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 [res, res, 3], alpha bool [res, res]) of an identity; cached, treat as read-only."""
    u, v = _grid(res)
    body = shape_mask(identity.shape, u, v)
    inner = _erode(body, max(1, round(0.05 * res)))
    rgb = np.zeros((res, res, 3), dtype=np.uint8)
    c1 = np.array(COLORS[identity.color], dtype=np.uint8)
    c2 = np.array(COLORS[identity.color2], dtype=np.uint8)
    rgb[body] = c2  # the outline ring is what stays color2 after the inside is painted
    fill = np.where(pattern_mask(identity.pattern, u, v)[..., None], c2, c1)
    rgb[inner] = fill[inner]
    if identity.marking == "dot":
        dot = inner & ((u * u + v * v) <= 0.22**2)
        rgb[dot] = COLORS[identity.marking_color]
    elif identity.marking == "eyes":
        for ex in (-0.3, 0.3):
            d2 = (u - ex) ** 2 + (v + 0.18) ** 2
            rgb[inner & (d2 <= 0.2**2)] = (255, 255, 255)
            rgb[inner & (d2 <= 0.1**2)] = (0, 0, 0)
    rgb.flags.writeable = False
    body.flags.writeable = False
    return rgb, body


def raster_resolution(max_diameter_px: float) -> int:
    """Smallest power-of-two raster (>= 64) that is not magnified when drawn at this diameter."""
    res = 64
    while res < max_diameter_px:
        res *= 2
    return res
