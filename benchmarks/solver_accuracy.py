"""Solver accuracy on an exact flow: data x0 ~ N(mu, s^2), end point mu + s * z for noise z.

    .venv/bin/python benchmarks/solver_accuracy.py

Prints the mean absolute end-point error per solver, step count and shift, and in brackets its
ratio to Euler at the same step count. Heun makes two model calls per step (one on the last),
the others one, so at equal model calls Heun should be read against Euler with twice the steps.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libragen_core.sampling.schedules import flow_sigmas  # noqa: E402
from libragen_core.sampling.solvers import SOLVERS, get_solver  # noqa: E402


def velocity_for(mu, s):
    def v(x, sigma):
        a = 1.0 - sigma
        var = sigma**2 + (a * s) ** 2
        centred = x - a * mu
        return sigma / var * centred - (mu + a * s**2 / var * centred)

    return v


def end_error(name, mu, s, steps, shift, z):
    sigmas = flow_sigmas(steps, shift).tolist()
    solver, x, v = get_solver(name), z.clone(), velocity_for(mu, s)
    for i in range(steps):
        x, _ = solver.step(v, x, sigmas, i)
    return (x - (mu + s * z)).abs().mean().item()


def main():
    z = torch.randn(100_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for mu, s in ((0.0, 1.0), (1.5, 0.4)):
        print(f"\ndata N({mu}, {s}^2)")
        print(f"{'shift':>5s} {'steps':>5s} " + " ".join(f"{n:>16s}" for n in sorted(SOLVERS)))
        for shift in (1.0, 3.0, 5.0):
            for steps in (10, 20, 30, 50):
                errs = {n: end_error(n, mu, s, steps, shift, z) for n in sorted(SOLVERS)}
                cells = [f"{errs[n]:.2e} ({errs[n] / errs['euler']:.2f})" for n in sorted(SOLVERS)]
                print(f"{shift:5.1f} {steps:5d} " + " ".join(f"{c:>16s}" for c in cells))


if __name__ == "__main__":
    main()
