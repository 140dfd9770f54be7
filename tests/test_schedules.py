import math

import pytest
import torch

from libragen_core.errors import InputError
from libragen_core.sampling.schedules import flow_sigmas, shift_sigma, sigma_to_timestep, step_progress


def test_unshifted_grid_is_linear_from_one_to_zero():
    sigmas = flow_sigmas(4, shift=1.0)
    assert sigmas.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_shift_formula_and_endpoints():
    steps, s = 10, 5.0
    sigmas = flow_sigmas(steps, shift=s)
    assert sigmas.shape == (steps + 1,)
    assert sigmas[0].item() == 1.0 and sigmas[-1].item() == 0.0
    for i, u in enumerate(torch.linspace(1, 0, steps + 1, dtype=torch.float64).tolist()):
        assert math.isclose(sigmas[i].item(), s * u / (1 + (s - 1) * u), rel_tol=1e-12, abs_tol=1e-15)
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    # A shift above 1 keeps more of the steps at high noise.
    assert sigmas[steps // 2].item() > 0.8


def test_shift_is_invertible_by_its_reciprocal():
    u = torch.linspace(0, 1, 33, dtype=torch.float64)
    assert torch.allclose(shift_sigma(shift_sigma(u, 3.0), 1 / 3.0), u, atol=1e-12)


def test_denoise_starts_lower_and_timesteps_scale_by_1000():
    sigmas = flow_sigmas(5, shift=1.0, denoise=0.5)
    assert sigmas[0].item() == 0.5
    assert sigma_to_timestep(sigmas)[0].item() == 500.0


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_bad_steps_are_named(steps):
    with pytest.raises(InputError, match="steps must be a whole number of at least 1"):
        flow_sigmas(steps, shift=1.0)


@pytest.mark.parametrize("shift", [-1.0, 0.0, float("nan"), float("inf")])
def test_bad_shift_is_named(shift):
    with pytest.raises(InputError, match="shift must be a finite number above 0"):
        flow_sigmas(10, shift=shift)


def test_bad_denoise_is_named():
    with pytest.raises(InputError, match="denoise must be in"):
        flow_sigmas(10, shift=1.0, denoise=1.5)


def test_custom_sigma_schedules_are_checked():
    from libragen_core.sampling.schedules import check_sigmas

    assert check_sigmas(torch.tensor([1.0, 0.5, 0.0])) == [1.0, 0.5, 0.0]
    assert check_sigmas([0.6, 0.6, 0.0]) == [0.6, 0.6, 0.0]
    for bad, message in [
        ([1.0], "at least 2 values"),
        ([1.0, 0.5, 0.7, 0.0], "must not increase"),
        ([1.0, 0.5], "last sigma must be 0"),
        ([1.5, 0.0], "numbers in \\[0, 1\\]"),
        ([0.0, 0.0], "first sigma must be above 0"),
    ]:
        with pytest.raises(InputError, match=message):
            check_sigmas(bad)


def test_step_progress_places_a_sigma_in_its_step():
    sigmas = flow_sigmas(4, shift=5.0)
    # the grid's own points, as float32 (ComfyUI's SIGMAS) and float64 (ours)
    for grid in (sigmas, sigmas.float()):
        assert [step_progress(float(s), grid) for s in grid[:-1]] == [0.0, 0.25, 0.5, 0.75]
    # a second-order solver's evaluation between sigma_1 and sigma_2 belongs to step 1
    between = 0.5 * float(sigmas[1] + sigmas[2])
    assert step_progress(between, sigmas) == 0.25
    assert step_progress(0.0, sigmas) == 0.75  # the end of the last step
    with pytest.raises(InputError, match="at least 2 values"):
        step_progress(0.5, [1.0])
