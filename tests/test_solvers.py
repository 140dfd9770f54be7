"""Solvers against analytic flow-matching velocity fields (no model, exact answers).

For data x0 ~ N(mu, s^2) per element the probability-flow ODE keeps each sample's quantile,
so the exact end point of noise z is mu + s * z. For a two-component Gaussian mixture the
velocity E[eps - x0 | x_t] is still closed-form; its end points come from a fine reference run.
"""
import math

import pytest
import torch

from libragen_core.errors import InputError
from libragen_core.sampling.schedules import flow_sigmas
from libragen_core.sampling.solvers import DPMPP2M, SOLVERS, Euler, Heun, UniPC, get_solver, log_snr


def gaussian_velocity(mu, s):
    def v(x, sigma):
        a = 1.0 - sigma
        var = sigma**2 + (a * s) ** 2
        centred = x - a * mu
        e_x0 = mu + a * s**2 / var * centred
        e_eps = sigma / var * centred
        return e_eps - e_x0

    return v


def mixture_velocity(means, s, weights):
    means = torch.tensor(means, dtype=torch.float64)
    logw = torch.log(torch.tensor(weights, dtype=torch.float64))

    def v(x, sigma):
        a = 1.0 - sigma
        var = sigma**2 + (a * s) ** 2
        centred = x.unsqueeze(-1) - a * means  # [..., K]
        logp = logw - 0.5 * centred**2 / var
        post = torch.softmax(logp, dim=-1)
        e_x0 = means + a * s**2 / var * centred
        e_eps = sigma / var * centred
        return (post * (e_eps - e_x0)).sum(-1)

    return v


def run(solver, velocity, z, steps, shift=1.0):
    sigmas = flow_sigmas(steps, shift=shift).tolist()
    solver = get_solver(solver)
    x = z.clone()
    calls = 0

    def counted(x, sigma):
        nonlocal calls
        calls += 1
        return velocity(x, sigma)

    for i in range(steps):
        x, _ = solver.step(counted, x, sigmas, i)
    return x, calls


@pytest.fixture
def noise():
    return torch.randn(4096, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_every_solver_converges_to_the_exact_gaussian_flow(name, shift, noise):
    mu, s = 1.5, 0.4
    exact = mu + s * noise
    err = [(run(name, gaussian_velocity(mu, s), noise, n, shift)[0] - exact).abs().mean().item() for n in (8, 32, 256)]
    assert err[2] < err[1] < err[0]
    assert err[2] < 0.01


def test_second_order_solvers_beat_euler_at_equal_model_calls(noise):
    mu, s = 1.5, 0.4
    exact = mu + s * noise
    v = gaussian_velocity(mu, s)
    steps = 20
    errors, calls = {}, {}
    for name in ("euler", "dpmpp_2m", "unipc"):
        x, calls[name] = run(name, v, noise, steps, shift=3.0)
        errors[name] = (x - exact).abs().mean().item()
    assert calls == {"euler": steps, "dpmpp_2m": steps, "unipc": steps}
    assert errors["dpmpp_2m"] < 0.5 * errors["euler"]
    assert errors["unipc"] < 0.5 * errors["euler"]


def test_observed_order_of_convergence(noise):
    mu, s = 0.8, 0.5
    exact = mu + s * noise
    v = gaussian_velocity(mu, s)

    def order(name, n):
        e1 = (run(name, v, noise, n)[0] - exact).abs().mean().item()
        e2 = (run(name, v, noise, 2 * n)[0] - exact).abs().mean().item()
        return math.log2(e1 / e2)

    # Exponential integrators on a uniform sigma grid take log-SNR steps that do not shrink
    # near sigma = 0, so their asymptotic order shows only from about 64 steps on.
    assert 0.7 < order("euler", 32) < 1.3
    assert order("heun", 32) > 1.8
    assert order("dpmpp_2m", 64) > 1.5
    assert order("unipc", 64) > 1.8
    assert order(UniPC(order=3), 64) > 1.8


def test_mixture_distribution_and_reference_solution(noise):
    means, s, w = (-2.0, 2.0), 0.35, (0.3, 0.7)
    v = mixture_velocity(means, s, w)
    reference, _ = run("heun", v, noise, 200, shift=3.0)
    # The ODE maps N(0, 1) onto the mixture: component shares and spreads come out right.
    right = reference > 0
    assert abs(right.double().mean().item() - 0.7) < 0.03
    assert abs(reference[right].mean().item() - 2.0) < 0.05
    assert abs(reference[right].std().item() - s) < 0.05
    assert abs(reference[~right].mean().item() + 2.0) < 0.05
    errs = {}
    for name in ("euler", "dpmpp_2m", "unipc"):
        x, _ = run(name, v, noise, 20, shift=3.0)
        errs[name] = (x - reference).abs().mean().item()
    assert errs["dpmpp_2m"] < errs["euler"]
    assert errs["unipc"] < errs["euler"]
    assert errs["unipc"] < 0.05


def test_step_returns_the_x0_prediction_and_one_step_to_zero_is_x0():
    z = torch.randn(16, dtype=torch.float64)
    v = gaussian_velocity(0.3, 0.7)
    sigmas = [0.6, 0.0]
    for name in sorted(SOLVERS):
        x_next, x0 = get_solver(name).step(v, z, sigmas, 0)
        assert torch.allclose(x0, z - 0.6 * v(z, 0.6))
        assert torch.allclose(x_next, x0)


def test_start_at_sigma_one_stays_finite():
    z = torch.randn(64, dtype=torch.float64)
    for name in sorted(SOLVERS):
        x, _ = run(name, gaussian_velocity(0.2, 0.1), z, 3, shift=5.0)
        assert torch.isfinite(x).all(), name
    assert math.isfinite(log_snr(1.0)) and log_snr(0.5) == 0.0


def test_solver_state_resets_between_runs(noise):
    v = gaussian_velocity(1.0, 0.5)
    solver = DPMPP2M()
    first, _ = run(solver, v, noise, 6)
    second, _ = run(solver, v, noise, 6)
    assert torch.equal(first, second)
    uni = UniPC()
    assert torch.equal(run(uni, v, noise, 6)[0], run(uni, v, noise, 6)[0])


def test_heun_uses_two_calls_except_the_last_step(noise):
    _, calls = run(Heun(), gaussian_velocity(0.0, 0.5), noise, 5)
    assert calls == 9
    _, calls = run(Euler(), gaussian_velocity(0.0, 0.5), noise, 5)
    assert calls == 5


def test_unknown_solver_is_named():
    with pytest.raises(InputError, match="unknown solver 'rk45'; choose one of"):
        get_solver("rk45")
    with pytest.raises(InputError, match="UniPC order must be 1, 2 or 3"):
        UniPC(order=5)
