"""Flow-matching noise levels: the shifted sigma grid a sampler walks from pure noise to data.

Convention (DESIGN.md): x_t = sigma * eps + (1 - sigma) * x0, the model predicts v = eps - x0
and sees the timestep t = sigma * 1000.
"""
from __future__ import annotations

import math

import torch

from ..errors import InputError

TIMESTEP_SCALE = 1000.0


def shift_sigma(sigma, shift: float):
    """Apply the resolution shift sigma' = s*sigma / (1 + (s-1)*sigma) (floats or tensors).

    A shift above 1 keeps more of the steps at high noise, where large layouts form; Wan2.1
    and Phantom sample 480p/720p video with s = 5.0.
    """
    check_shift(shift)
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def check_shift(shift: float) -> float:
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift) or shift <= 0:
        raise InputError(
            f"shift must be a finite number above 0 (got {shift!r}); Wan2.1 uses 5.0 for video, 1.0 disables it."
        )
    return float(shift)


def check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be a whole number of at least 1 (got {steps!r}); 20 to 50 is typical.")
    return steps


def flow_sigmas(steps: int, shift: float = 1.0, *, denoise: float = 1.0) -> torch.Tensor:
    """Return `steps + 1` float64 sigmas, falling from the (shifted) start to exactly 0.

    The unshifted grid is linear from `denoise` (1.0 = start from pure noise) to 0; the shift is
    applied point by point, so the first value is shift(denoise) and the last is 0.
    """
    check_steps(steps)
    check_shift(shift)
    if isinstance(denoise, bool) or not isinstance(denoise, (int, float)) or not 0.0 < denoise <= 1.0:
        raise InputError(f"denoise must be in (0, 1] (got {denoise!r}); 1.0 starts from pure noise.")
    grid = torch.linspace(float(denoise), 0.0, steps + 1, dtype=torch.float64)
    sigmas = shift_sigma(grid, float(shift))
    sigmas[-1] = 0.0
    return sigmas


def sigma_to_timestep(sigma):
    """The model's timestep input for a noise level."""
    return sigma * TIMESTEP_SCALE
