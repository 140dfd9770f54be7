"""Our flow solvers against ComfyUI's own k-diffusion samplers on a flow (CONST) model.

Both sides integrate the same analytic model: data x0 ~ N(mu, s^2) per element, whose exact
denoiser E[x0 | x_t] is closed-form, so no weights are involved. ComfyUI's samplers take a
denoiser (x0 prediction); ours take the velocity v = (x - x0) / sigma. Tensors travel as
safetensors files. Checked: the shift formula (ComfyUI's time_snr_shift), Euler (sample_euler),
and DPM-Solver++(2M) against sample_dpmpp_2m_sde with eta = 0, the log-SNR form ComfyUI uses
for flow models.
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from libragen_core.sampling.schedules import flow_sigmas, shift_sigma
from libragen_core.sampling.solvers import get_solver

pytestmark = pytest.mark.integration

MU, S = 0.7, 0.4

COMFY_SIDE = r"""
import sys, types
import comfy.cli_args
comfy.cli_args.args.cpu = True
import torch
import comfy.model_sampling as ms
from comfy.k_diffusion import sampling as k
from safetensors.torch import load_file, save_file

inp_path, out_path, mu, s = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
inp = load_file(inp_path)

class FlowSampling(ms.ModelSamplingDiscreteFlow, ms.CONST):
    pass

sampling = FlowSampling()  # shift 1: the sigmas are given explicitly

class Denoiser:
    inner_model = types.SimpleNamespace(model_patcher=types.SimpleNamespace(get_model_object=lambda name: sampling))
    def __call__(self, x, sigma, **kwargs):
        sigma = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        a = 1.0 - sigma
        var = sigma ** 2 + (a * s) ** 2
        return mu + a * s ** 2 / var * (x - a * mu)

out = {"shifted": ms.time_snr_shift(inp["shift"].item(), inp["grid"])}
zero_noise = lambda a, b: torch.zeros_like(inp["noise"])
for name in ("full", "partial"):
    sig = inp[name + ".sigmas"]
    x = inp["noise"] * sig[0]  # the sampler input at sigma_0 (noise only, as from the start)
    if name == "partial":
        x = inp["partial.start"]
    out[name + ".euler"] = k.sample_euler(Denoiser(), x.clone(), sig, disable=True)
    out[name + ".dpmpp_2m"] = k.sample_dpmpp_2m_sde(Denoiser(), x.clone(), sig, disable=True, eta=0.0, s_noise=0.0,
                                                    noise_sampler=zero_noise)
save_file({k_: v.contiguous() for k_, v in out.items()}, out_path)
"""


def _velocity(x, sigma):
    a = 1.0 - sigma
    var = sigma**2 + (a * S) ** 2
    x0 = MU + a * S**2 / var * (x - a * MU)
    return (x - x0) / sigma


def _ours(name, x, sigmas):
    solver = get_solver(name)
    sig = sigmas.tolist()
    for i in range(len(sig) - 1):
        x, _ = solver.step(_velocity, x, sig, i)
    return x


def test_solvers_match_comfyui_k_diffusion(comfyui, tmp_path):
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 4, 3, 5, dtype=torch.float64, generator=g)
    full = flow_sigmas(12, shift=5.0)
    # Starting below sigma = 1 (img2img-style) avoids ComfyUI's first-sigma offset, so the
    # multistep comparison is exact; from sigma = 1 it moves the first step by about 1e-4.
    partial = flow_sigmas(12, shift=5.0, denoise=0.8)
    a = 1.0 - partial[0]
    start = partial[0] * noise + a * (MU + S * torch.randn(noise.shape, dtype=torch.float64, generator=g))
    grid = torch.linspace(0, 1, 17, dtype=torch.float64)
    inputs = {"noise": noise, "full.sigmas": full, "partial.sigmas": partial, "partial.start": start,
              "grid": grid, "shift": torch.tensor([5.0], dtype=torch.float64)}
    save_file(inputs, str(tmp_path / "in.safetensors"))
    comfyui.run(COMFY_SIDE, str(tmp_path / "in.safetensors"), str(tmp_path / "out.safetensors"), str(MU), str(S))
    theirs = load_file(str(tmp_path / "out.safetensors"))

    assert torch.allclose(theirs["shifted"], shift_sigma(grid, 5.0), atol=1e-12)
    assert torch.allclose(theirs["full.euler"], _ours("euler", noise.clone(), full), atol=1e-9)
    assert torch.allclose(theirs["partial.euler"], _ours("euler", start.clone(), partial), atol=1e-9)
    assert torch.allclose(theirs["partial.dpmpp_2m"], _ours("dpmpp_2m", start.clone(), partial), atol=1e-9)
    diff = (theirs["full.dpmpp_2m"] - _ours("dpmpp_2m", noise.clone(), full)).abs().max().item()
    assert diff < 5e-4
