"""Subject-to-video generation from start to end: references + prompt -> video frames.

Each stage is its own function so ComfyUI nodes can run them as separate graph nodes
(Subject Encode -> sampler -> decode) and the CLI and eval harness can chain them.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .conditioning.references import prepare_references
from .conditioning.subjects import Subjects
from .errors import InputError
from .models.bundle import ModelBundle
from .sampling.guidance import CFGSchedule
from .sampling.sampler import sample


def check_video_size(bundle: ModelBundle, frames: int, height: int, width: int) -> None:
    """Frame count 4k+1, and sizes that both the VAE and the DiT's patches divide."""
    # the VAE's own check on a shape-only tensor gives its messages ("18 frames: use 17 or 21")
    bundle.vae.check_video(torch.empty(1, 3, frames, height, width, device="meta"))
    step = bundle.vae.config.space_factor * bundle.dit.config.patch_size[1]
    for name, n in (("height", height), ("width", width)):
        if n % step:
            lower = max(step, n - n % step)
            raise InputError(f"{name} {n} is not a multiple of {step} (VAE x DiT patch): use {lower} or {lower + step}")


def encode_prompts(bundle: ModelBundle, prompts: Sequence[str]) -> torch.Tensor:
    with torch.no_grad():
        return bundle.text.encode(list(prompts), device=bundle.device)


def encode_subjects(bundle: ModelBundle, images, height: int, width: int, masks=None,
                    labels: Sequence[str] | None = None) -> Subjects:
    """1 to 4 reference images -> white-padded frames -> one latent frame each (METHOD.md 1)."""
    # prepared where the VAE lives: the DiT may sit on another device (ComfyUI offloading)
    pixels = prepare_references(images, height, width, masks=masks, device=next(bundle.vae.parameters()).device)
    labels = tuple(labels or ())
    if len(labels) > pixels.shape[0]:
        raise InputError(f"{len(labels)} labels were given for {pixels.shape[0]} reference images; "
                         "give at most one label per image, in the same order.")
    labels = labels + tuple(f"Ref {k + 1}" for k in range(len(labels), pixels.shape[0]))
    with torch.no_grad():
        # each reference is its own one-frame video: [R, 3, 1, H, W] -> [R, C, 1, h, w]
        latents = bundle.vae.encode(pixels.unsqueeze(2))
    return Subjects(latents=latents.float(), labels=labels)


def sample_latents(bundle: ModelBundle, subjects: Subjects | None, prompt: str, negative: str = "",
                   frames: int = 17, height: int = 64, width: int = 64, steps: int = 20, shift: float = 3.0,
                   solver: str = "unipc", cfg: str | CFGSchedule = "libragen", seed: int = 0,
                   callback: Callable | None = None, batch: int = 1) -> torch.Tensor:
    """Normalized video latents [batch, C, (frames-1)/4+1, height/8, width/8]."""
    check_video_size(bundle, frames, height, width)
    if not isinstance(prompt, str):
        raise InputError(f"the prompt must be text; got {type(prompt).__name__}")
    shape = (batch, bundle.dit.config.in_dim, *bundle.vae.latent_shape(frames, height, width))
    context = encode_prompts(bundle, [prompt])
    negative_context = encode_prompts(bundle, [negative or ""])
    return sample(bundle.dit, shape, context, negative_context, subjects=subjects, steps=steps, shift=shift,
                  solver=solver, cfg=cfg, seed=seed, callback=callback)


def decode_frames(bundle: ModelBundle, latents: torch.Tensor) -> torch.Tensor:
    """Normalized latents [B, C, f, h, w] -> float frames [B, F, H, W, 3] in [0, 1] (ComfyUI IMAGE layout)."""
    with torch.no_grad():
        pixels = bundle.vae.decode(latents.to(bundle.device))
    return ((pixels.float() + 1.0) * 0.5).clamp_(0, 1).permute(0, 2, 3, 4, 1).cpu()


@dataclass
class Generation:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    latents: torch.Tensor
    seconds: float
    prompt: str


def generate(bundle: ModelBundle, references, prompt: str, negative: str | None = None, frames: int | None = None,
             height: int | None = None, width: int | None = None, steps: int | None = None,
             shift: float | None = None, solver: str | None = None, cfg: str | CFGSchedule | None = None,
             seed: int = 0, labels: Sequence[str] | None = None, masks=None,
             callback: Callable | None = None) -> Generation:
    """Everything not given comes from the model card's defaults. references may be empty (T2V)."""
    d = bundle.card.defaults
    frames, height, width = frames or d.frames, height or d.height, width or d.width
    check_video_size(bundle, frames, height, width)
    start = time.perf_counter()
    refs = list(references or [])
    subjects = encode_subjects(bundle, refs, height, width, masks=masks, labels=labels) if refs else None
    if not refs and labels:
        raise InputError(f"{len(labels)} labels were given but no reference images; add --ref images or drop the labels")
    latents = sample_latents(bundle, subjects, prompt, d.negative if negative is None else negative, frames, height,
                             width, steps or d.steps, d.shift if shift is None else shift, solver or d.solver,
                             cfg or d.cfg, seed, callback)
    pixels = decode_frames(bundle, latents)[0]
    frames_u8 = (pixels.numpy() * 255.0 + 0.5).astype(np.uint8)
    return Generation(frames=frames_u8, latents=latents, seconds=time.perf_counter() - start, prompt=prompt)


class Generator:
    """The eval harness's view of a model: generate(refs, prompt, seed, frames, height, width)."""

    def __init__(self, bundle: ModelBundle, **overrides):
        self.bundle, self.overrides = bundle, overrides

    def generate(self, refs: list[np.ndarray], prompt: str, seed: int, frames: int, height: int,
                 width: int) -> np.ndarray:
        return generate(self.bundle, refs, prompt, seed=seed, frames=frames, height=height, width=width,
                        **self.overrides).frames
