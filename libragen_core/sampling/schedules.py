"""Flow-matching noise levels: the shifted sigma grid a sampler walks from pure noise to data.

Convention (docs/sampling.md, Conventions): x_t = sigma * eps + (1 - sigma) * x0, the model predicts v = eps - x0
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


def check_sigmas(sigmas) -> list[float]:
    """Validate a custom schedule: at least 2 values in [0, 1], non-increasing, ending at 0.

    A schedule that starts below 1 continues from a partly noised input (the caller mixes
    x = sigma_0 * noise + (1 - sigma_0) * x0 first).
    """
    values = sigmas.tolist() if isinstance(sigmas, torch.Tensor) else list(sigmas)
    if len(values) < 2:
        raise InputError(f"a sigma schedule needs at least 2 values (one step); got {len(values)}.")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0 for v in values):
        raise InputError(f"sigmas must be numbers in [0, 1] for flow models; got {values[:8]}...")
    if any(b > a for a, b in zip(values, values[1:])):
        raise InputError("sigmas must not increase: sampling runs from noise (1) down to data (0).")
    if values[-1] != 0.0:
        raise InputError(f"the last sigma must be 0 so the result is clean latents; got {values[-1]}.")
    if values[0] <= 0.0:
        raise InputError("the first sigma must be above 0; a schedule of zeros has nothing to denoise.")
    return [float(v) for v in values]


def sigma_to_timestep(sigma):
    """The model's timestep input for a noise level."""
    return sigma * TIMESTEP_SCALE


def step_progress(sigma: float, sigmas) -> float:
    """The progress (step / steps) of the step that evaluates the model at `sigma`.

    For samplers that only see a sigma (ComfyUI's guiders) and want what our loop passes as
    `progress`. Step i covers sigmas[i] >= sigma > sigmas[i + 1], so the intermediate
    evaluations of a second-order solver count as their step, as in `sample`. A small
    relative tolerance absorbs the float32 / float64 round trip of the grid.
    """
    values = sigmas.tolist() if isinstance(sigmas, torch.Tensor) else list(sigmas)
    steps = len(values) - 1
    if steps < 1:
        raise InputError(f"a sigma schedule needs at least 2 values (one step); got {len(values)}.")
    floor = float(sigma) * (1.0 - 1e-5)
    index = sum(1 for v in values[1:steps] if float(v) >= floor)
    return index / steps
