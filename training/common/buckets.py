"""Clips of any length, frame rate, size and aspect ratio -> training clips of a few fixed shapes.

Frame sampling: a clip becomes `frames` = 4k+1 frames (what the Wan VAE takes), either resampled
to a frame rate (`fps` > 0: output frame j is the source frame nearest to time j / fps) or every
`stride`-th source frame (`fps` = 0), from the first frame (`start = "head"`) or centred in the
clip (`"center"`). A clip too short for that is a bad entry, not a shorter sample.

Aspect-ratio buckets: every (h, w) multiple of `step` whose area is at most the target area, for
h (or w) stepping through all multiples, with the other side as large as the area allows and the
aspect ratio within [1 / max_aspect, max_aspect], plus the largest square. A clip goes to the bucket whose aspect ratio is
closest to its own (in log space), is resized so that it covers the bucket (aspect kept) and is
centre-cropped to it. A batch holds clips of one bucket only (`BucketSampler`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from libragen_core.errors import CheckpointError, ConfigError, InputError


def sample_indices(n_source: int, source_fps: float, frames: int, fps: float = 0.0, stride: int = 1,
                   start: str = "head") -> list[int] | None:
    """Source frame indices of a training clip, or None when the clip is too short."""
    if frames < 1 or (frames - 1) % 4:
        raise ConfigError(f"data.frames must be 4k+1 (5, 9, ..., 81), got {frames}")
    if fps > 0:
        if source_fps <= 0:
            raise InputError(f"the video reports a frame rate of {source_fps}; cannot resample it to {fps} fps")
        step = source_fps / fps
        offsets = [int(math.floor(j * step + 0.5)) for j in range(frames)]
    else:
        if stride < 1:
            raise ConfigError(f"data.stride must be at least 1, got {stride}")
        offsets = [j * stride for j in range(frames)]
    span = offsets[-1] + 1
    if span > n_source:
        return None
    first = 0 if start == "head" else (n_source - span) // 2
    return [first + o for o in offsets]


def needed_frames(frames: int, fps: float, stride: int, source_fps: float) -> int:
    """How many source frames a clip needs (for the 'too few frames' message)."""
    if fps > 0:
        return int(math.floor((frames - 1) * source_fps / fps + 0.5)) + 1
    return (frames - 1) * stride + 1


def bucket_sizes(resolution: Sequence[int], step: int = 16, max_aspect: float = 2.5) -> list[tuple[int, int]]:
    """All (h, w) buckets of at most resolution[0] * resolution[1] pixels (see the module docstring)."""
    h0, w0 = (int(v) for v in resolution)
    if step < 1 or h0 % step or w0 % step:
        raise ConfigError(f"data.resolution {h0}x{w0} must be multiples of data.bucket_step ({step}); the VAE "
                          "needs multiples of 8 and the DiT's 2x2 patches multiples of 16")
    if max_aspect < 1:
        raise ConfigError(f"data.max_aspect must be at least 1, got {max_aspect}")
    area = h0 * w0
    found = set()
    for side in range(step, area // step + 1, step):
        other = (area // side) // step * step
        if other < step:
            break
        for h, w in ((side, other), (other, side)):
            if 1 / max_aspect <= w / h <= max_aspect:
                found.add((h, w))
    square = math.isqrt(area) // step * step  # square clips are common; the loop above finds a square only by luck
    found |= {(h0, w0), (square, square)}
    return sorted(found)


def pick_bucket(height: int, width: int, buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest to height x width (ties: the larger bucket, then the first)."""
    if height < 1 or width < 1:
        raise InputError(f"a frame of {width}x{height} pixels has no area")
    a = math.log(width / height)
    return min(buckets, key=lambda b: (round(abs(math.log(b[1] / b[0]) - a), 9), -b[0] * b[1], b))


def resize_crop(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [T, H, W, 3] -> [T, h, w, 3]: resized to cover (h, w), aspect kept, centre-cropped."""
    h, w = size
    t, hh, ww, _ = frames.shape
    scale = max(h / hh, w / ww)
    rh, rw = max(h, round(hh * scale)), max(w, round(ww * scale))
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if (rh, rw) != (hh, ww):
        # antialiased when shrinking, so fine textures do not alias into the latents
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (rh - h) // 2, (rw - w) // 2
    x = x[:, :, top:top + h, left:left + w]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


class BucketSampler:
    """Batches of item indices, all from one group (bucket), in an order fixed by (seed, epoch).

    Per epoch every group's items are shuffled and cut into whole batches (a group's last partial
    batch waits for the next epoch's shuffle), and the batches of all groups are shuffled together.
    The state (epoch, position) goes into checkpoints, so a resumed run draws exactly the batches
    of an uninterrupted one.
    """

    def __init__(self, groups: Mapping[str, Sequence[int]], batch: int, seed: int = 0):
        self.groups = {k: [int(i) for i in v] for k, v in sorted(groups.items())}
        self.batch, self.seed = int(batch), int(seed)
        usable = {k: len(v) for k, v in self.groups.items() if len(v) >= self.batch}
        if not usable:
            sizes = ", ".join(f"{k}: {len(v)}" for k, v in self.groups.items()) or "none"
            raise InputError(f"no bucket holds a whole batch of {self.batch} clips (clips per bucket: {sizes}); "
                             "lower the batch, add clips, or use fewer buckets (a larger data.bucket_step or "
                             "a smaller data.max_aspect)")
        self.epoch, self.position = 0, 0
        self._batches: list[list[int]] | None = None

    def _epoch_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = []
        for _, items in self.groups.items():
            order = rng.permutation(len(items))
            for lo in range(0, len(items) - self.batch + 1, self.batch):
                batches.append([items[j] for j in order[lo:lo + self.batch]])
        return [batches[j] for j in rng.permutation(len(batches))]

    def next(self) -> list[int]:
        if self._batches is None:
            self._batches = self._epoch_batches()
        if self.position >= len(self._batches):
            self.epoch, self.position = self.epoch + 1, 0
            self._batches = self._epoch_batches()
        out = self._batches[self.position]
        self.position += 1
        return out

    def signature(self) -> dict:
        return {"batch": self.batch, "seed": self.seed, "groups": {k: len(v) for k, v in self.groups.items()}}

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, **self.signature()}

    def load_state_dict(self, sd: dict) -> None:
        mine = self.signature()
        theirs = {k: sd.get(k) for k in mine}
        if theirs != mine:
            raise CheckpointError(f"the checkpoint's data order was for {theirs}; this run has {mine} (the data, "
                                  "its buckets or the batch changed since the checkpoint was written)")
        self.epoch, self.position = int(sd["epoch"]), int(sd["position"])
        self._batches = None
