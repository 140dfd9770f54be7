"""Flow-matching objective (DESIGN.md): x_t = sigma * eps + (1 - sigma) * x0, target v = eps - x0.

The model is called with t = sigma * 1000, like the sampler does. Timesteps for training come
from `sample_sigmas`: logit-normal (SD3's default: most weight on the middle of the path, where
the velocity is hardest to predict) or uniform squashed through the sampler's shift.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

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
                       noise: torch.Tensor, *, frame_pos=None, reduce: bool = True,
                       extra_clean: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between the model's velocity and eps - x0.

    extra_clean: clean latent frames appended after the video on the time axis (subject
    references, METHOD.md 1); they go in un-noised and their outputs are not in the loss.
    reduce=False gives one loss per batch item (for DPO, which compares items).
    """
    xt = noisy_input(x0, sigma, noise)
    if extra_clean is not None:
        xt = torch.cat([xt, extra_clean.to(xt.dtype)], dim=2)
    kw = {} if frame_pos is None else {"frame_pos": frame_pos}
    v = model(xt, sigma * 1000.0, context, **kw)[:, :, : x0.shape[2]]
    err = (v.float() - (noise - x0).float()).pow(2)
    per_item = err.flatten(1).mean(1)
    return per_item.mean() if reduce else per_item
