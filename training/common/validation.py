"""In-training checks: a cheap motion / colour check and contact sheets of sampled clips.

The motion check needs no tracker: SpriteWorld subjects are drawn in saturated colours that the
backgrounds never use, so the pixels close to the captioned body colour locate the subject. Its
centroid's displacement from the first to the last frame is compared with the captioned
direction. On real clips it scores ~1.0 (a test checks that), so a generated score near chance
means the model did not learn motion (or colour) from text. The full metrics live in
libragen_core/eval; this check is for curves during training, where speed matters.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

STRAIGHT_MOVES = {
    "move_left": (-1.0, 0.0), "move_right": (1.0, 0.0), "move_up": (0.0, -1.0), "move_down": (0.0, 1.0),
    "move_up_left": (-0.7071, -0.7071), "move_up_right": (0.7071, -0.7071),
    "move_down_left": (-0.7071, 0.7071), "move_down_right": (0.7071, 0.7071),
}


def color_centers(frames: np.ndarray, rgb, tol: float = 60.0, min_pixels: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: centroid (x, y) of pixels within `tol` (RGB distance) of `rgb` (NaN if too few), and their count."""
    f = frames.astype(np.float32)
    d = np.sqrt(((f - np.asarray(rgb, np.float32)) ** 2).sum(-1))
    mask = d < tol
    counts = mask.reshape(mask.shape[0], -1).sum(1)
    ys, xs = np.mgrid[0:frames.shape[1], 0:frames.shape[2]]
    centers = np.full((frames.shape[0], 2), np.nan, np.float32)
    for t in range(frames.shape[0]):
        if counts[t] >= min_pixels:
            m = mask[t]
            centers[t] = (xs[m].mean() + 0.5, ys[m].mean() + 0.5)
    return centers, counts


@dataclass
class MotionResult:
    color_ok: bool  # the captioned body colour is present (a subject-sized blob) in most frames
    direction_ok: bool  # the blob moved the captioned way (cosine > 0.85: within ~30 degrees; at least min_shift px)
    displacement: tuple[float, float]
    cosine: float


def motion_check(frames: np.ndarray, rgb, motion: str, min_shift: float = 4.0, tol: float = 60.0) -> MotionResult:
    """frames uint8 [T, H, W, 3]; rgb the subject's body colour; motion one of STRAIGHT_MOVES."""
    centers, counts = color_centers(frames, rgb, tol)
    area = frames.shape[1] * frames.shape[2]
    present = (counts >= 12) & (counts < 0.4 * area)
    color_ok = bool(present.mean() >= 0.8)
    valid = np.flatnonzero(~np.isnan(centers[:, 0]) & present)
    if len(valid) < 2:
        return MotionResult(color_ok, False, (0.0, 0.0), 0.0)
    # average a few frames at each end: single-frame centroids of generated clips are noisy
    k = max(1, len(valid) // 4)
    disp = centers[valid[-k:]].mean(0) - centers[valid[:k]].mean(0)
    want = np.asarray(STRAIGHT_MOVES[motion], np.float32)
    norm = float(np.linalg.norm(disp))
    cos = float(disp @ want / norm) if norm > 0 else 0.0
    return MotionResult(color_ok, bool(norm >= min_shift and cos > 0.85), (float(disp[0]), float(disp[1])), cos)


def summarize(results: list[MotionResult]) -> dict[str, float]:
    if not results:
        return {}
    return {
        "color_ok": float(np.mean([r.color_ok for r in results])),
        "direction_ok": float(np.mean([r.direction_ok for r in results])),
        "cosine": float(np.mean([r.cosine for r in results])),
    }


def save_contact_sheet(path: str | os.PathLike, rows: list[tuple[np.ndarray, str]], step: int = 2, zoom: int = 2) -> np.ndarray:
    """rows of (frames uint8 [T, H, W, 3], label) -> a PNG (atomic); returns the image."""
    from libragen_core.spriteworld.preview import contact_sheet, save_png

    image = contact_sheet(rows, step=step, zoom=zoom)
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    save_png(path, image)
    return image


def blank_figure(size: tuple[int, int], font_size: int = 12):
    """(image, its ImageDraw, a font) for a figure drawn with PIL (there is no matplotlib here)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", size, (255, 255, 255))
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        font = ImageFont.load_default()
    return img, ImageDraw.Draw(img), font
