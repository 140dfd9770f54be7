"""Image quality filters: sensor-like noise, blur, and overlaid text or watermarks.

SpriteWorld frames are flat colour art, so each measure is compared with what a clean clip of the
calibration seed shows rather than with an absolute standard.
- noise: clean frames repeat their background exactly between frames, so the least median change
  between consecutive frames is ~0 (a pan or light change still leaves some pairs unchanged);
  per-frame noise raises every pair.
- blur: the share of edge energy at the finest scale, (I - G1*I)^2 over (I - G3*I)^2 (Gaussian
  blurs of sigma 1 and 3): hard edges keep a large share, blurred ones lose it; it does not
  depend on how much edge there is or how strong.
- text: a watermark is static, achromatic (white or black blended over the scene), high
  contrast against its surroundings, and made of thin strokes; the filter counts such pixels of
  the temporal median in the densest horizontal band a text line would fill.
"""
from __future__ import annotations

import cv2
import numpy as np

from .analysis import Clip
from .filters import FilterResult


def noise_level(clip: Clip) -> float:
    if len(clip.frames) < 2:
        return 0.0
    d = np.abs(np.diff(clip.f32, axis=0)).mean(axis=-1).reshape(len(clip.frames) - 1, -1)
    return float(np.median(d, axis=1).min())


def check_noise(clip: Clip, th: dict) -> FilterResult:
    level = noise_level(clip)
    bad = level > th["noise"]
    reason = f"noisy: every frame differs from the next by {level:.1f} levels in the median pixel" if bad else ""
    return FilterResult("noise", not bad, level, th["noise"], reason)


def sharpness(clip: Clip) -> float:
    ratios = []
    for im in clip.gray:
        fine = ((im - cv2.GaussianBlur(im, (0, 0), 1.0)) ** 2).mean()
        coarse = ((im - cv2.GaussianBlur(im, (0, 0), 3.0)) ** 2).mean()
        if coarse > 1.0:  # a nearly uniform frame says nothing about blur
            ratios.append(fine / coarse)
    return float(np.median(ratios)) if ratios else 1.0


def check_blur(clip: Clip, th: dict) -> FilterResult:
    s = sharpness(clip)
    bad = s < th["blur"]
    reason = f"blurred: only {s:.2f} of the edge energy is at the finest scale (sharp clips: >= {th['blur']:.2f})" if bad else ""
    return FilterResult("blur", not bad, s, th["blur"], reason)


def text_pixels(clip: Clip) -> tuple[float, tuple[int, int]]:
    """(count of watermark-like pixels in the densest text-high band, (band top, band bottom))."""
    med = np.median(clip.frames, axis=0).astype(np.uint8)
    m = med.astype(np.float32)
    gray = m.mean(-1)
    chroma = m.max(-1) - m.min(-1)
    local = cv2.medianBlur(med, 9).astype(np.float32)
    contrast = np.abs(m - local).max(-1)
    still = clip.f32.std(axis=0).max(-1) < 25
    cand = ((chroma < 45) & (contrast > 50) & ((gray < 80) | (gray > 180)) & still).astype(np.uint8)
    opened = cv2.morphologyEx(cand, cv2.MORPH_OPEN, np.ones((4, 4), np.uint8))
    thin = (cand & (1 - opened)).astype(np.float32)
    rows = thin.sum(axis=1)
    band = max(3, round(0.22 * clip.frames.shape[1]))
    sums = np.convolve(rows, np.ones(band), "valid") if len(rows) >= band else np.array([rows.sum()])
    top = int(np.argmax(sums))
    return float(sums[top]) * (64.0 / clip.short) ** 2, (top, top + band)


def check_text_overlay(clip: Clip, th: dict) -> FilterResult:
    score, (y0, y1) = text_pixels(clip)
    bad = score >= th["text_overlay"]
    reason = f"overlaid text or watermark: {score:.0f} static thin high-contrast pixels in rows {y0}-{y1}" if bad else ""
    return FilterResult("text_overlay", not bad, score, th["text_overlay"], reason)
