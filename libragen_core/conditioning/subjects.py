"""Phantom-style subject injection on the latent time axis (docs/method.md section 1).

Layout: a `Subjects` value holds the reference latents as `[R, C, 1, h, w]`, i.e. what the VAE
returns for a batch of R single images, each encoded as its own one-frame "video", in the same
normalised latent space as the video latents. R is 0..4 (0 = plain text-to-video).

Inside the model the references are R extra latent frames AFTER the F video frames:

    x_model = [video frame 0 .. F-1 | ref 0 .. R-1]        [B, C, F + R, h, w]
    frame_pos = [0 .. F-1 | F + 0 + offset_0, .., F + R-1 + offset_{R-1}]

The reference slots always hold the clean reference latents (they are overwritten before every
model call, never denoised), and the model output is trimmed back to the F video frames. The
"null" guidance condition puts zeros in the reference slots, as Phantom-Wan and HuMo do
(`torch.zeros_like` of the latents, in the normalised latent space), with the same positions.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError
from .references import MAX_REFERENCES


@dataclass(frozen=True, eq=False)
class Subjects:
    """Reference latents [R, C, 1, h, w] (or None for none), labels and RoPE offsets.

    labels: one short name per reference ("Ref k" when not given); they are for prompts and
        display, the model does not see them.
    rope_offsets: per-reference shift added to the temporal RoPE index F + k. Zero by default;
        Consis-DPO makes its "loser" videos by sampling with shifted offsets.
    """

    latents: torch.Tensor | None = None
    labels: tuple[str, ...] = ()
    rope_offsets: tuple[float, ...] | None = None

    def __post_init__(self):
        latents = self.latents
        if latents is not None:
            if not isinstance(latents, torch.Tensor):
                raise InputError(
                    f"reference latents must be a torch tensor [R, C, 1, h, w] (got {type(latents).__name__})."
                )
            if latents.ndim == 4:
                # [R, C, h, w]: one frame each, the frame axis left out.
                latents = latents.unsqueeze(2)
            if latents.ndim != 5 or latents.shape[2] != 1:
                raise InputError(
                    f"reference latents must have shape [R, C, 1, h, w] (one latent frame per reference, "
                    f"as the VAE encodes a single image); got {tuple(self.latents.shape)}."
                )
            if latents.shape[0] > MAX_REFERENCES:
                raise InputError(
                    f"{latents.shape[0]} references were given; at most {MAX_REFERENCES} are supported. "
                    "Drop or combine some references."
                )
            if latents.shape[0] == 0:
                latents = None
            object.__setattr__(self, "latents", latents)
        count = self.count
        labels = tuple(self.labels)
        if labels and len(labels) != count:
            raise InputError(f"{len(labels)} labels were given for {count} references; give one label per reference.")
        if not all(isinstance(label, str) for label in labels):
            raise InputError(f"reference labels must be strings (got {labels!r}).")
        object.__setattr__(self, "labels", labels or tuple(f"Ref {k + 1}" for k in range(count)))
        if self.rope_offsets is not None:
            offsets = tuple(self.rope_offsets)
            if len(offsets) != count:
                raise InputError(
                    f"{len(offsets)} RoPE offsets were given for {count} references; give one per reference."
                )
            for k, o in enumerate(offsets):
                if isinstance(o, bool) or not isinstance(o, (int, float)) or not math.isfinite(o):
                    raise InputError(f"rope_offsets[{k}] must be a finite number (got {o!r}).")
            object.__setattr__(self, "rope_offsets", tuple(float(o) for o in offsets))

    @classmethod
    def none(cls) -> Subjects:
        return cls()

    @property
    def count(self) -> int:
        return 0 if self.latents is None else int(self.latents.shape[0])

    def with_rope_offsets(self, offsets: Sequence[float] | None) -> Subjects:
        return Subjects(self.latents, self.labels, None if offsets is None else tuple(offsets))

    def check_video(self, video_shape: Sequence[int]) -> None:
        """Raise InputError unless the references fit video latents of shape [B, C, F, h, w]."""
        if len(video_shape) != 5:
            raise InputError(f"video latents must have shape [B, C, F, h, w]; got {tuple(video_shape)}.")
        if self.latents is None:
            return
        _, c, _, h, w = video_shape
        rc, rh, rw = self.latents.shape[1], self.latents.shape[3], self.latents.shape[4]
        if rc != c:
            raise InputError(
                f"reference latents have {rc} channels but the video latents have {c}; encode the references "
                "with the same VAE as the video."
            )
        if (rh, rw) != (h, w):
            raise InputError(
                f"reference latents are {rh}x{rw} (h x w) but the video latents are {h}x{w}; prepare the "
                "references at the video size (fit and pad with white) before encoding."
            )

    def frames(self, batch: int, *, device=None, dtype=None) -> torch.Tensor:
        """The references as latent frames to append: [batch, C, R, h, w]."""
        if self.latents is None:
            raise InputError("there are no references to append; use Subjects with latents, or skip injection.")
        frames = self.latents.to(device=device, dtype=dtype).squeeze(2).transpose(0, 1)  # [C, R, h, w]
        return frames.unsqueeze(0).expand(batch, -1, -1, -1, -1)

    def frame_pos(self, num_video_frames: int, *, device=None) -> torch.Tensor:
        """Temporal RoPE positions for the F video frames followed by the R reference frames."""
        return frame_positions(num_video_frames, self.count, self.rope_offsets, device=device)


def frame_positions(num_video_frames: int, num_refs: int, offsets: Sequence[float] | None = None,
                    *, device=None) -> torch.Tensor:
    """[F + R] float32 positions: video 0..F-1, reference k at F + k + offsets[k]."""
    pos = torch.arange(num_video_frames + num_refs, dtype=torch.float32, device=device)
    if offsets is not None and num_refs:
        pos[num_video_frames:] += torch.tensor(list(offsets), dtype=torch.float32, device=device)
    return pos


def append_references(video: torch.Tensor, ref_frames: torch.Tensor) -> torch.Tensor:
    """[B, C, F, h, w] + [B or 1, C, R, h, w] -> [B, C, F + R, h, w]."""
    if ref_frames.shape[0] == 1 and video.shape[0] > 1:
        ref_frames = ref_frames.expand(video.shape[0], -1, -1, -1, -1)
    return torch.cat([video, ref_frames.to(device=video.device, dtype=video.dtype)], dim=2)


def overwrite_references(sequence: torch.Tensor, ref_frames: torch.Tensor) -> torch.Tensor:
    """Replace the last R frames of [B, C, F + R, h, w] with the clean references (a new tensor)."""
    num_refs = ref_frames.shape[2]
    if num_refs == 0:
        return sequence
    return append_references(sequence[:, :, : sequence.shape[2] - num_refs], ref_frames)


def trim_to_video(sequence: torch.Tensor, num_video_frames: int) -> torch.Tensor:
    """Drop the reference frames from a model input or output."""
    return sequence[:, :, :num_video_frames]
