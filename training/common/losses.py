"""Flow-matching objective (docs/sampling.md, Conventions): x_t = sigma * eps + (1 - sigma) * x0, target v = eps - x0.

The model is called with t = sigma * 1000, like the sampler does. Timesteps for training come
from `sample_sigmas`: logit-normal (SD3's default: most weight on the middle of the path, where
the velocity is hardest to predict) or uniform squashed through the sampler's shift.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from libragen_core.conditioning.subjects import append_references, frame_positions, trim_to_video
from libragen_core.errors import InputError
from libragen_core.sampling.schedules import shift_sigma

SIGMA_KINDS = ("logit_normal", "shifted", "uniform")


def sample_sigmas(n: int, kind: str = "logit_normal", *, mean: float = 0.0, std: float = 1.0, shift: float = 1.0,
                  generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """n training noise levels in (0, 1). kind: logit_normal (mean, std) | shifted (shift) | uniform."""
    if kind == "logit_normal":
        u = torch.randn(n, generator=generator) * std + mean
        s = torch.sigmoid(u)
    elif kind in ("shifted", "uniform"):
        s = torch.rand(n, generator=generator)
        if kind == "shifted":
            s = shift_sigma(s, shift)
    else:
        raise ValueError(f"unknown sigma sampling {kind!r}; use one of {SIGMA_KINDS}")
    # keep away from the exact ends, where the target is degenerate (pure data / pure noise)
    return s.clamp(1e-4, 1 - 1e-4).to(device)


def noisy_input(x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    s = sigma.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return s * noise + (1 - s) * x0


def flow_matching_loss(model: Callable, x0: torch.Tensor, context: torch.Tensor, sigma: torch.Tensor,
                       noise: torch.Tensor, *, refs: torch.Tensor | None = None, frame_pos: torch.Tensor | None = None,
                       reduce: bool = True) -> torch.Tensor:
    """MSE between the model's velocity and eps - x0 on the video frames.

    x0, noise: [B, C, F, h, w]; sigma: [B]; context: [B, L, D]; refs: [B or 1, C, R, h, w] clean
    subject reference latents (zeros = the null condition), appended after the video on the time
    axis un-noised and left out of the loss (docs/method.md section 1); frame_pos: [F + R] RoPE positions
    (default 0..F+R-1, the sampler's with zero offsets). reduce=False gives one loss per item
    (DPO compares items).
    """
    v, target = flow_velocity(model, x0, context, sigma, noise, refs=refs, frame_pos=frame_pos)
    per_item = (v - target).square().flatten(1).mean(1)
    return per_item.mean() if reduce else per_item


def flow_velocity(model: Callable, x0: torch.Tensor, context: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                  *, refs: torch.Tensor | None = None, frame_pos: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(the model's velocity on the video frames, the target eps - x0), both fp32; arguments as
    for flow_matching_loss."""
    if x0.shape != noise.shape:
        raise InputError(f"x0 {tuple(x0.shape)} and the noise {tuple(noise.shape)} must have the same shape")
    if sigma.shape != (x0.shape[0],):
        raise InputError(f"sigma must hold one value per sample ({x0.shape[0]}); got shape {tuple(sigma.shape)}")
    frames = x0.shape[2]
    xt = noisy_input(x0, sigma, noise)
    num_refs = 0 if refs is None else refs.shape[2]
    if num_refs:
        xt = append_references(xt, refs)
    if frame_pos is None:
        frame_pos = frame_positions(frames, num_refs, device=x0.device)
    v = trim_to_video(model(xt, sigma.to(x0.device, torch.float32) * 1000.0, context, frame_pos=frame_pos), frames)
    return v.float(), (noise - x0).float()
