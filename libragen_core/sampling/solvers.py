"""ODE solvers for flow matching: step x from sigma_i to sigma_{i+1} given the velocity.

All solvers see the model through `velocity(x, sigma) -> v` (v = eps - x0) and work on
x_t = sigma * eps + (1 - sigma) * x0, with x0 = x - sigma * v ("data prediction").

Multistep solvers (DPM-Solver++ 2M, UniPC) run in log-SNR time lambda = log((1 - sigma) / sigma),
the exponential-integrator form of DPM-Solver++ and UniPC written for alpha = 1 - sigma. Their
first-order part is the exact DDIM step, which for this path equals an Euler step:
    x_next = (sigma_next / sigma) * x + (1 - sigma_next / sigma) * x0.
At sigma = 1 the log-SNR is -inf; only the step-size ratios of the second-order terms need it,
so it is read at 1 - 1e-4 there (ComfyUI offsets its first sigma by the same amount for its
log-SNR solvers), while the first-order update stays exact. A step to sigma = 0 returns x0.

Each solver is stateful across one run: call `reset()` (the sampler does) before a new one.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..errors import InputError

VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]

_SIGMA_CAP = 1.0 - 1e-4


def log_snr(sigma: float) -> float:
    """lambda = log(alpha / sigma) with alpha = 1 - sigma; finite for sigma in (0, 1]."""
    sigma = min(float(sigma), _SIGMA_CAP)
    return math.log1p(-sigma) - math.log(sigma)


def _first_order(x: torch.Tensor, x0: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    ratio = sigma_next / sigma
    return x * ratio + x0 * (1.0 - ratio)


class Solver:
    """Base: `step(velocity, x, sigmas, i)` -> (x at sigmas[i+1], x0 predicted at sigmas[i])."""

    name = "base"
    #: model evaluations per step (the last step may use fewer)
    evals_per_step = 1

    def reset(self) -> None:
        pass

    def step(self, velocity: VelocityFn, x: torch.Tensor, sigmas: Sequence[float], i: int):
        raise NotImplementedError


class Euler(Solver):
    """First order: x_next = x + (sigma_next - sigma) * v."""

    name = "euler"

    def step(self, velocity, x, sigmas, i):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        v = velocity(x, sigma)
        return x + v * (sigma_next - sigma), x - v * sigma


class Heun(Solver):
    """Second order, two evaluations per step (trapezoid on v); the last step to 0 is Euler."""

    name = "heun"
    evals_per_step = 2

    def step(self, velocity, x, sigmas, i):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        v = velocity(x, sigma)
        x_euler = x + v * (sigma_next - sigma)
        if sigma_next == 0.0:
            return x_euler, x - v * sigma
        v_next = velocity(x_euler, sigma_next)
        return x + (v + v_next) * (0.5 * (sigma_next - sigma)), x - v * sigma


class DPMPP2M(Solver):
    """DPM-Solver++(2M), deterministic, data-prediction form in flow log-SNR time.

    Matches ComfyUI's dpmpp_2m_sde with eta = 0 (midpoint) on flow (CONST) models. ComfyUI's
    plain `dpmpp_2m` measures step sizes in -log(sigma) even for flow models; we use the
    log-SNR of the flow path, which is what the DPM-Solver++ derivation assumes.
    """

    name = "dpmpp_2m"

    def reset(self):
        self._old_x0 = None
        self._h_last = None

    def __init__(self):
        self.reset()

    def step(self, velocity, x, sigmas, i):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0 = x - velocity(x, sigma) * sigma
        if sigma_next == 0.0:
            x_next = x0
            h = None
        else:
            h = log_snr(sigma_next) - log_snr(sigma)
            x_next = _first_order(x, x0, sigma, sigma_next)
            if self._old_x0 is not None and self._h_last is not None:
                r = self._h_last / h
                x_next = x_next + (self._old_x0 - x0) * (-(1.0 - sigma_next / sigma) * 0.5 / r)
        self._old_x0, self._h_last = x0, h
        return x_next, x0


class UniPC(Solver):
    """UniPC (B(h) = e^h - 1, "bh2") predictor-corrector, data prediction, order 2.

    Each step first corrects the current sample with the model output just computed there
    (UniC, no extra evaluation), then predicts the next one (UniP). The first step and the
    step to sigma = 0 are first order, as in Wan2.1's and diffusers' schedulers
    (lower_order_final); there is no correction after the last step.
    """

    name = "unipc"

    def __init__(self, order: int = 2):
        if order not in (1, 2, 3):
            raise InputError(f"UniPC order must be 1, 2 or 3 (got {order!r}).")
        self.order = order
        self.reset()

    def reset(self):
        self._x0s: list[torch.Tensor] = []  # newest last
        self._lambdas: list[float] = []
        self._last_x: torch.Tensor | None = None
        self._last_order = 0

    @staticmethod
    def _rb(h: float, rks: list[float], order: int):
        """The R matrix and b vector of UniPC-bh2 for step size h in lambda."""
        hh = -h
        h_phi_1 = math.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1.0
        factorial = 1
        b_h = math.expm1(hh)
        rows, b = [], []
        for k in range(1, order + 1):
            rows.append([r ** (k - 1) for r in rks])
            b.append(h_phi_k * factorial / b_h)
            factorial *= k + 1
            h_phi_k = h_phi_k / hh - 1.0 / factorial
        return torch.tensor(rows, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)

    def _update(self, x, x0_hist, lambdas, sigma_s, sigma_t, order, x0_t=None):
        """Shared UniP (x0_t None) / UniC (x0_t = model output at t) update from sigma_s."""
        m0 = x0_hist[-1]
        lam_s, lam_t = lambdas[-1], log_snr(sigma_t)
        h = lam_t - lam_s
        rks, d1s = [], []
        for k in range(1, order):
            rk = (lambdas[-(k + 1)] - lam_s) / h
            rks.append(rk)
            d1s.append((x0_hist[-(k + 1)] - m0) / rk)
        rks.append(1.0)
        # alpha_t * (e^{-h} - 1) == sigma_t / sigma_s - 1 exactly for alpha = 1 - sigma.
        scale = sigma_t / sigma_s - 1.0
        x_t = _first_order(x, m0, sigma_s, sigma_t)
        if x0_t is None:
            if not d1s:
                return x_t
            if order == 2:
                rhos = [0.5]
            else:
                big_r, b = self._rb(h, rks, order)
                rhos = torch.linalg.solve(big_r[:-1, :-1], b[:-1]).tolist()
            res = sum(rho * d for rho, d in zip(rhos, d1s))
            return x_t - res * scale
        if order == 1:
            rhos = [0.5]
        else:
            big_r, b = self._rb(h, rks, order)
            rhos = torch.linalg.solve(big_r, b).tolist()
        res = sum(rho * d for rho, d in zip(rhos[:-1], d1s)) if d1s else 0.0
        return x_t - (res + (x0_t - m0) * rhos[-1]) * scale

    def step(self, velocity, x, sigmas, i):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0 = x - velocity(x, sigma) * sigma
        if self._last_x is not None:
            # Corrector: improve x_i with the output at x_i, going again from sigma_{i-1}.
            x = self._update(
                self._last_x, self._x0s, self._lambdas, float(sigmas[i - 1]), sigma, self._last_order, x0_t=x0
            )
        self._x0s = (self._x0s + [x0])[-self.order:]
        self._lambdas = (self._lambdas + [log_snr(sigma)])[-self.order:]
        if sigma_next == 0.0:
            self._last_x = None
            return x0, x0
        remaining = len(sigmas) - 1 - i
        order = min(self.order, remaining, len(self._x0s))
        self._last_x, self._last_order = x, order
        return self._update(x, self._x0s, self._lambdas, sigma, sigma_next, order), x0


SOLVERS: dict[str, Callable[[], Solver]] = {
    "euler": Euler,
    "heun": Heun,
    "dpmpp_2m": DPMPP2M,
    "unipc": UniPC,
}


def get_solver(solver: str | Solver) -> Solver:
    """A fresh solver for a name, or the given instance reset for a new run."""
    if isinstance(solver, Solver):
        solver.reset()
        return solver
    try:
        return SOLVERS[solver]()
    except (KeyError, TypeError):
        raise InputError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)}.") from None
