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

from . import memory
from .conditioning.references import MAX_REFERENCES, prepare_references
from .conditioning.subjects import Subjects
from .errors import InputError
from .models.bundle import ModelBundle
from .sampling.guidance import CFGSchedule
from .sampling.sampler import resolve_cfg, sample
from .sampling.schedules import check_steps, flow_sigmas


def check_video_size(bundle: ModelBundle, frames: int, height: int, width: int) -> None:
    """Frame count 4k+1, and sizes that both the VAE and the DiT's patches divide."""
    for name, n in (("frames", frames), ("height", height), ("width", width)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"{name} must be a whole number of at least 1; got {n!r}")
    # the VAE's own check on a shape-only tensor gives its messages ("18 frames: use 17 or 21")
    bundle.vae.check_video(torch.empty(1, 3, frames, height, width, device="meta"))
    step = size_step(bundle)
    for name, n in (("height", height), ("width", width)):
        if n % step:
            lower = max(step, n - n % step)
            raise InputError(f"{name} {n} is not a multiple of {step} (VAE x DiT patch): use {lower} or {lower + step}")


def size_step(bundle: ModelBundle) -> int:
    """What frame heights and widths must be multiples of."""
    return bundle.vae.config.space_factor * bundle.dit.config.patch_size[1]


# ---------------------------------------------------------------- memory, before allocating

def _vae_device(bundle: ModelBundle) -> torch.device:
    return next(bundle.vae.parameters()).device


def _vae_act_bytes(bundle: ModelBundle) -> int:
    return memory.activation_bytes(next(bundle.vae.parameters()).dtype)


def references_estimate(bundle: ModelBundle, count: int, height: int, width: int) -> memory.Estimate:
    return memory.reference_encoding(bundle.vae.config, count, height, width, _vae_act_bytes(bundle))


def sampling_estimate(bundle: ModelBundle, frames: int, height: int, width: int, refs: int,
                      cfg: str | CFGSchedule, steps: int, shift: float, batch: int = 1) -> memory.Estimate:
    """Peak of sampling at this size: the DiT call with every guidance pass the schedule batches."""
    dit = bundle.dit
    shape = (batch, dit.config.in_dim, *bundle.vae.latent_shape(frames, height, width))
    passes = memory.max_passes(resolve_cfg(cfg), flow_sigmas(steps, shift).tolist(), refs > 0)
    return memory.sampling(
        dit.config, shape, refs, passes, context_tokens=bundle.text.max_length + 1,
        act_bytes=memory.activation_bytes(dit.patch_embedding.weight.dtype),
        fp32_time_weights=dit.time_projection[1].weight.dtype != torch.float32,
        math_attention=memory.math_attention_only())


def decoding_estimate(bundle: ModelBundle, batch: int, frames: int, height: int, width: int) -> memory.Estimate:
    latent_frames = bundle.vae.latent_shape(frames, height, width)[0]
    return memory.decoding(bundle.vae.config, batch, latent_frames, height, width, _vae_act_bytes(bundle))


def _check(estimate_for, device, frames: int | None, height: int, width: int, step: int, what: str) -> None:
    """Refuse (OutOfMemory) a request whose estimate does not fit the device, saying what would."""
    request = (f"{frames} frames at " if frames is not None else "") + f"{width}x{height}" + what
    memory.check_fits(estimate_for(frames or 1, height, width), device, request,
                      lambda budget: memory.largest_fit(estimate_for, frames, height, width, budget, step))


def check_references_memory(bundle: ModelBundle, count: int, height: int, width: int) -> None:
    _check(lambda f, h, w: references_estimate(bundle, count, h, w), _vae_device(bundle), None, height, width,
           size_step(bundle), "")


def check_sampling_memory(bundle: ModelBundle, frames: int, height: int, width: int, refs: int,
                          cfg: str | CFGSchedule, steps: int, shift: float, batch: int = 1) -> None:
    _check(lambda f, h, w: sampling_estimate(bundle, f, h, w, refs, cfg, steps, shift, batch), bundle.device,
           frames, height, width, size_step(bundle),
           f" with {refs} reference{'s' if refs != 1 else ''}" if refs else " without references")


def check_decoding_memory(bundle: ModelBundle, batch: int, frames: int, height: int, width: int) -> None:
    _check(lambda f, h, w: decoding_estimate(bundle, batch, f, h, w), _vae_device(bundle), frames, height, width,
           size_step(bundle), "")


# ---------------------------------------------------------------- the stages

def encode_prompts(bundle: ModelBundle, prompts: Sequence[str]) -> torch.Tensor:
    with torch.no_grad():
        return bundle.text.encode(list(prompts), device=bundle.device)


def _count_images(images) -> int:
    # a 4D array or tensor is a batch of images (ComfyUI IMAGE), each one reference
    items = images if isinstance(images, (list, tuple)) else [images]
    return sum(int(i.shape[0]) if getattr(i, "ndim", 0) == 4 else 1 for i in items)


def encode_subjects(bundle: ModelBundle, images, height: int, width: int, masks=None,
                    labels: Sequence[str] | None = None) -> Subjects:
    """1 to 4 reference images -> white-padded frames -> one latent frame each (docs/method.md section 1)."""
    count = _count_images(images)
    if 1 <= count <= MAX_REFERENCES:  # other counts get prepare_references' own message
        check_references_memory(bundle, count, height, width)
    # prepared where the VAE lives: the DiT may sit on another device (ComfyUI offloading)
    pixels = prepare_references(images, height, width, masks=masks, device=_vae_device(bundle))
    labels = tuple(labels or ())
    if len(labels) > pixels.shape[0]:
        raise InputError(f"{len(labels)} labels were given for {pixels.shape[0]} reference images; "
                         "give at most one label per image, in the same order.")
    labels = labels + tuple(f"Ref {k + 1}" for k in range(len(labels), pixels.shape[0]))
    with torch.no_grad():
        # each reference is its own one-frame video: [R, 3, 1, H, W] -> [R, C, 1, h, w]
        latents = bundle.vae.encode(pixels.unsqueeze(2))
    return Subjects(latents=latents.float(), labels=labels)


def _describe_cfg(cfg) -> str:
    if isinstance(cfg, str):
        return f"preset {cfg!r}"
    to_json = getattr(cfg, "to_json", None)
    return to_json() if callable(to_json) else type(cfg).__name__


class NonFiniteLatents(InputError):
    """Sampling produced NaN or infinite values; nothing is decoded or written."""


def _non_finite(cfg, schedule, step: int, steps: int, sigma: float) -> NonFiniteLatents:
    where = f"step {step} of {steps} (sigma {sigma:.3f})"
    scales = getattr(schedule, "scales", None)
    if callable(scales):
        s_img, s_txt = scales((step - 1) / steps, sigma)
        weights, large = f"s_img {s_img:g}, s_txt {s_txt:g}", max(abs(s_img), abs(s_txt)) > 100
    else:
        w = schedule.weights((step - 1) / steps, sigma)
        weights, large = f"coefficients {w.c_full:g} / {w.c_ref:g} / {w.c_null:g}", False
    cause = ("these weights are far outside the usual range (about 1 to 20) and overflow; lower them" if large else
             "with weights in the usual range this is the model's precision or the solver: try weights in fp32 or "
             "bf16, another solver, or fewer guidance")
    return NonFiniteLatents(f"sampling produced NaN or infinite latents at {where} with the CFG schedule "
                            f"{_describe_cfg(cfg)} ({weights} at that step): {cause}. The run was stopped; "
                            "nothing was decoded or written.")


def sample_latents(bundle: ModelBundle, subjects: Subjects | None, context: torch.Tensor,
                   negative_context: torch.Tensor, frames: int = 17, height: int = 64, width: int = 64,
                   steps: int = 20, shift: float = 3.0, solver: str = "unipc", cfg: str | CFGSchedule = "libragen",
                   seed: int = 0, callback: Callable | None = None, batch: int = 1) -> torch.Tensor:
    """Normalized video latents [batch, C, (frames-1)/4+1, height/8, width/8].

    context / negative_context: the prompts' text features (encode_prompts). The size is checked
    (shape rules, then memory against the DiT's device) before anything is allocated, and every
    step's latents are checked for NaN / infinity, which stops the run with the schedule named.
    """
    check_video_size(bundle, frames, height, width)
    refs = subjects.count if subjects is not None else 0
    check_sampling_memory(bundle, frames, height, width, refs, cfg, steps, shift, batch)
    shape = (batch, bundle.dit.config.in_dim, *bundle.vae.latent_shape(frames, height, width))
    if subjects is not None:
        subjects.check_video(shape)
    schedule = resolve_cfg(cfg)

    def checked(step, total, sigma, x0):
        if not bool(torch.isfinite(x0).all()):
            raise _non_finite(cfg, schedule, step, total, float(sigma))
        return callback(step, total, sigma, x0) if callback is not None else None

    latents = sample(bundle.dit, shape, context, negative_context, subjects=subjects, steps=steps, shift=shift,
                     solver=solver, cfg=schedule, seed=seed, callback=checked)
    if not bool(torch.isfinite(latents).all()):
        raise _non_finite(cfg, schedule, steps, steps, 0.0)
    return latents


def video_size(bundle: ModelBundle, latents: torch.Tensor) -> tuple[int, int, int, int]:
    """(batch, frames, height, width) of the video that latents [B, C, f, h, w] decode to."""
    bundle.vae.check_latents(latents)
    b, _, t, h, w = latents.shape
    c = bundle.vae.config
    return b, (t - 1) * c.time_factor + 1, h * c.space_factor, w * c.space_factor


def decode_frames(bundle: ModelBundle, latents: torch.Tensor) -> torch.Tensor:
    """Normalized latents [B, C, f, h, w] -> float frames [B, F, H, W, 3] in [0, 1] (ComfyUI IMAGE layout)."""
    check_decoding_memory(bundle, *video_size(bundle, latents))
    with torch.no_grad():
        pixels = bundle.vae.decode(latents.to(bundle.device))
    # in place: a full-size temporary here would be the largest allocation of a long decode
    return pixels.float().add_(1.0).mul_(0.5).clamp_(0, 1).permute(0, 2, 3, 4, 1).cpu()


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
    """Everything not given (None) comes from the model card's defaults. references may be empty (T2V).

    Every stage's memory is checked before the first one runs, so a size the machine cannot hold
    is refused at once rather than after the references were encoded or the video sampled.
    """
    d = bundle.card.defaults
    frames = d.frames if frames is None else frames
    height = d.height if height is None else height
    width = d.width if width is None else width
    steps = d.steps if steps is None else steps
    shift = d.shift if shift is None else shift
    solver, cfg = solver or d.solver, cfg or d.cfg
    check_video_size(bundle, frames, height, width)
    check_steps(steps)
    if not isinstance(prompt, str):
        raise InputError(f"the prompt must be text; got {type(prompt).__name__}")
    refs = list(references or [])
    if not refs and labels:
        raise InputError(f"{len(labels)} labels were given but no reference images; add --ref images or drop the labels")
    if 1 <= len(refs) <= MAX_REFERENCES:
        check_references_memory(bundle, len(refs), height, width)
    check_sampling_memory(bundle, frames, height, width, len(refs), cfg, steps, shift)
    check_decoding_memory(bundle, 1, frames, height, width)
    start = time.perf_counter()
    subjects = encode_subjects(bundle, refs, height, width, masks=masks, labels=labels) if refs else None
    context = encode_prompts(bundle, [prompt])
    negative_context = encode_prompts(bundle, [d.negative if negative is None else negative])
    latents = sample_latents(bundle, subjects, context, negative_context, frames, height, width, steps, shift,
                             solver, cfg, seed, callback)
    pixels = decode_frames(bundle, latents)[0]
    frames_u8 = pixels.mul_(255.0).add_(0.5).numpy().astype(np.uint8)  # in place, as in decode_frames
    return Generation(frames=frames_u8, latents=latents, seconds=time.perf_counter() - start, prompt=prompt)


class Generator:
    """The eval harness's view of a model: generate(refs, prompt, seed, frames, height, width)."""

    def __init__(self, bundle: ModelBundle, **overrides):
        self.bundle, self.overrides = bundle, overrides

    def generate(self, refs: list[np.ndarray], prompt: str, seed: int, frames: int, height: int,
                 width: int) -> np.ndarray:
        return generate(self.bundle, refs, prompt, seed=seed, frames=frames, height=height, width=width,
                        **self.overrides).frames
