"""Our UniPC against Wan's own FlowUniPCMultistepScheduler (Phantom-Wan's and HuMo's sampler).

Needs a Wan2.1 or Wan2.2 code checkout (WAN_CODE_DIR, the folder holding `wan/`) and diffusers
importable (WAN_EXTRA_PATH may add a folder with it to sys.path); skips and says why otherwise.
Wan's file is imported from that checkout at run time, never copied here. Both sides integrate an
analytic velocity field (data x0 ~ N(mu, s^2)), so no weights are involved.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

from libragen_core.sampling.schedules import flow_sigmas
from libragen_core.sampling.solvers import UniPC

pytestmark = pytest.mark.integration

MU, S = 0.7, 0.4


def _wan_scheduler_class():
    code = os.environ.get("WAN_CODE_DIR")
    path = Path(code or "") / "wan" / "utils" / "fm_solvers_unipc.py"
    if not code or not path.is_file():
        pytest.skip("WAN_CODE_DIR is not set to a Wan2.1/Wan2.2 checkout (with wan/utils/fm_solvers_unipc.py)")
    extra = os.environ.get("WAN_EXTRA_PATH")
    if extra and extra not in sys.path:
        sys.path.insert(0, extra)
    if importlib.util.find_spec("diffusers") is None:
        pytest.skip("diffusers is not importable (Wan's scheduler builds on it); set WAN_EXTRA_PATH")
    spec = importlib.util.spec_from_file_location("wan_fm_solvers_unipc", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FlowUniPCMultistepScheduler


def _velocity(x, sigma):
    sigma = float(sigma)
    a = 1.0 - sigma
    var = sigma**2 + (a * S) ** 2
    return (x - (MU + a * S**2 / var * (x - a * MU))) / sigma


@pytest.mark.parametrize(("steps", "shift"), [(4, 1.0), (10, 5.0), (30, 5.0), (50, 3.0)])
def test_unipc_matches_wan_scheduler(steps, shift):
    scheduler_cls = _wan_scheduler_class()
    scheduler = scheduler_cls(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)
    scheduler.set_timesteps(steps, shift=shift)
    sigmas = scheduler.sigmas.double()
    # Wan's grid is ours started at 0.999 instead of 1 (its training table's largest sigma).
    assert torch.allclose(sigmas, flow_sigmas(steps, shift, denoise=0.999), atol=1e-6)
    z = torch.randn(2, 4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    theirs = z.clone()
    for i, t in enumerate(scheduler.timesteps):
        theirs = scheduler.step(_velocity(theirs, sigmas[i]), t, theirs, return_dict=False)[0]
    ours, solver, grid = z.clone(), UniPC(), sigmas.tolist()
    for i in range(steps):
        ours, _ = solver.step(_velocity, ours, grid, i)
    # Wan keeps its sigmas in float32; the rest is float64 on both sides.
    assert (theirs - ours).abs().max().item() < 2e-6
