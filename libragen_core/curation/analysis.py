"""Measurements shared by several filters, computed once per clip from its decoded frames.

Nothing here reads labels or scene descriptions: only pixels. SpriteWorld-style clips are flat
colour art, so a per-clip background model works: frames are brought to one brightness (the
light may dim or brighten), the camera pan is estimated from the dominant optical flow, and the
per-pixel median of the pan-aligned frames is the background; what differs from it is
foreground (moving subjects).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

# a pixel counts as changed between frames / as foreground when its largest channel difference
# exceeds these levels; H.264 at CRF 18 leaves at most ~20 levels of ringing at sharp edges
CHANGED_LEVEL = 24
FOREGROUND_LEVEL = 40


@dataclass
class Clip:
    """One clip under review: its frames (uint8 [T, H, W, 3]) and caption."""

    frames: np.ndarray
    caption: str = ""

    @property
    def shape(self):
        return self.frames.shape

    @property
    def short(self) -> int:
        return int(min(self.frames.shape[1:3]))

    @cached_property
    def f32(self) -> np.ndarray:
        return self.frames.astype(np.float32)

    @cached_property
    def gray(self) -> np.ndarray:
        return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in self.frames]).astype(np.float32)

    @cached_property
    def pair_diff(self) -> np.ndarray:
        """[T-1, H, W] largest channel change between consecutive frames."""
        return np.abs(np.diff(self.f32, axis=0)).max(axis=-1)

    @cached_property
    def changed_pixels(self) -> np.ndarray:
        """[T-1] how many pixels changed visibly between consecutive frames."""
        return (self.pair_diff > CHANGED_LEVEL).sum(axis=(1, 2))

    @cached_property
    def flow(self) -> np.ndarray:
        """[T-1, H, W, 2] Farneback optical flow between consecutive frames (px per frame)."""
        g = self.gray.astype(np.uint8)
        return np.stack([
            cv2.calcOpticalFlowFarneback(g[t], g[t + 1], None, 0.5, 3, 9, 3, 5, 1.1, 0)
            for t in range(len(g) - 1)
        ]) if len(g) > 1 else np.zeros((0, *g.shape[1:], 2), np.float32)

    @cached_property
    def gain(self) -> np.ndarray:
        """[T] brightness of each frame relative to the brightest one (a light change scales every pixel)."""
        med = np.median(self.gray.reshape(len(self.gray), -1), axis=1) + 1.0
        return med / med.max()

    @cached_property
    def normalized(self) -> np.ndarray:
        """float32 frames divided by their gain: one brightness for the whole clip."""
        return self.f32 / self.gain[:, None, None, None]

    @cached_property
    def blocks(self) -> np.ndarray:
        """Normalised frames averaged over 2x2 blocks [T, H/2, W/2, 3].

        H.264's 4:2:0 chroma keeps one colour per 2x2 block, so a sprite's fine pattern mixes its
        two colours there; averaging luma over the same blocks makes every block such a mix.
        """
        f = self.normalized
        T, H, W, _ = f.shape
        f = f[:, : H // 2 * 2, : W // 2 * 2]
        return f.reshape(T, H // 2, 2, W // 2, 2, 3).mean(axis=(2, 4))

    @cached_property
    def camera(self) -> np.ndarray:
        """[T, 2] integer camera offset (x, y) per frame: screen = world - offset.

        The background covers most of the frame, so the median flow is its motion, which is
        minus the camera's. Flat backgrounds give no flow, and then no pan is needed either.
        """
        if len(self.frames) < 2:
            return np.zeros((1, 2), np.int64)
        med = np.median(self.flow.reshape(len(self.flow), -1, 2), axis=1)
        return np.vstack([[0, 0], np.rint(-np.cumsum(med, axis=0))]).astype(np.int64)

    @cached_property
    def _canvas(self):
        T, H, W, _ = self.frames.shape
        cam = self.camera
        lo = cam.min(axis=0)
        hi = cam.max(axis=0)
        ch, cw = H + int(hi[1] - lo[1]), W + int(hi[0] - lo[0])
        stack = np.full((T, ch, cw, 3), np.nan, np.float32)
        for t in range(T):
            x0, y0 = cam[t] - lo
            stack[t, y0 : y0 + H, x0 : x0 + W] = self.normalized[t]
        return stack, lo

    @cached_property
    def background(self) -> np.ndarray:
        """[T, H, W, 3] the background as each frame would show it (median of the aligned frames)."""
        stack, lo = self._canvas
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # canvas corners seen by no frame
            world = np.nanmedian(stack, axis=0)
        T, H, W, _ = self.frames.shape
        out = np.empty((T, H, W, 3), np.float32)
        for t in range(T):
            x0, y0 = self.camera[t] - lo
            out[t] = world[y0 : y0 + H, x0 : x0 + W]
        return out

    @cached_property
    def foreground(self) -> np.ndarray:
        """bool [T, H, W]: pixels that differ from the background model (moving things)."""
        diff = np.abs(self.normalized - self.background).max(axis=-1)
        fg = (diff > FOREGROUND_LEVEL).astype(np.uint8)
        kernel = np.ones((2, 2), np.uint8)
        return np.stack([cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel) for m in fg]).astype(bool)
