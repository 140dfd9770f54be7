"""A whole subject-to-video sampling run against ComfyUI's own Phantom path.

ComfyUI samples Phantom-Wan with WanPhantomSubjectToVideo's three conditionings (positive with
the reference latents as `time_dim_concat`, negative text with them, negative text with zeroed
ones) and Guider_DualCFG: negative + cfg2 * (middle - negative) + cfg1 * (positive - middle).
That is our three-condition formula with cfg1 = s_txt and cfg2 = s_img, so both must produce the
same latents from the same weights, noise and sigmas. The ComfyUI side loads our tiny DiT's
safetensors with its own loader (config detected from the keys), runs in its own interpreter and
returns its latents as a file. Our side is `sample()` with the same schedule.
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from libragen_core.conditioning.subjects import Subjects
from libragen_core.io.safetensors_file import save_state_dict
from libragen_core.models.presets import build_dit
from libragen_core.sampling.sampler import initial_noise, sample
from libragen_core.sampling.schedules import flow_sigmas

pytestmark = pytest.mark.integration

COMFY_SIDE = r"""
import sys
import comfy.cli_args
comfy.cli_args.args.cpu = True
import torch
import comfy.sd, comfy.samplers, comfy.latent_formats
from comfy_extras.nodes_custom_sampler import Guider_DualCFG
from safetensors.torch import load_file, save_file

weights, inputs, out_path = sys.argv[1:4]
inp = load_file(inputs)
patcher = comfy.sd.load_diffusion_model_state_dict(load_file(weights), model_options={"dtype": torch.float32})
fmt = comfy.latent_formats.Wan21()
# Conditioning latents enter ComfyUI in VAE space and are normalised inside; ours are already
# normalised, so hand over their VAE-space form. Zeros in model space are fmt.process_out(0),
# exactly what WanPhantomSubjectToVideo gives its negative_img_text.
refs = fmt.process_out(inp["refs"])
null = fmt.process_out(torch.zeros_like(inp["refs"]))
out = {}
for name, cfg_txt, cfg_img in (("phantom", 7.5, 5.0), ("stiv", 7.5, 7.5)):
    guider = Guider_DualCFG(patcher)
    guider.set_conds([[inp["context"], {"time_dim_concat": refs}]],
                     [[inp["negative"], {"time_dim_concat": refs}]],
                     [[inp["negative"], {"time_dim_concat": null}]])
    guider.set_cfg(cfg_txt, cfg_img)
    samples = guider.sample(inp["noise"], torch.zeros_like(inp["noise"]), comfy.samplers.sampler_object("euler"),
                            inp["sigmas"], disable_pbar=True, seed=0)
    out[name] = fmt.process_in(samples).contiguous()
save_file(out, out_path)
"""


def test_phantom_sampling_matches_comfyui(comfyui, tmp_path):
    torch.manual_seed(0)
    model = build_dit("tiny").eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    weights = save_state_dict(model.state_dict(), tmp_path / "tiny.safetensors")

    shape = (1, 16, 3, 8, 8)
    noise = initial_noise(shape, 7)
    context = torch.zeros(1, 32, 4096)
    context[:, :9] = torch.randn(1, 9, 4096, generator=gen)
    negative = torch.zeros(1, 32, 4096)
    negative[:, :4] = torch.randn(1, 4, 4096, generator=gen)
    ref_latents = torch.randn(2, 16, 1, 8, 8, generator=gen)
    steps, shift = 4, 5.0
    sigmas = flow_sigmas(steps, shift).float()
    save_file({"noise": noise, "context": context, "negative": negative, "sigmas": sigmas,
               "refs": ref_latents.squeeze(2).transpose(0, 1).unsqueeze(0).contiguous()},
              str(tmp_path / "in.safetensors"))
    comfyui.run(COMFY_SIDE, str(weights), str(tmp_path / "in.safetensors"), str(tmp_path / "out.safetensors"))
    theirs = load_file(str(tmp_path / "out.safetensors"))

    subjects = Subjects(ref_latents)
    for name, cfg in (("phantom", "phantom"), ("stiv", "stiv-jit")):
        ours = sample(model, noise, context, negative, subjects, steps=steps, shift=shift, solver="euler", cfg=cfg)
        scale = theirs[name].abs().max().item()
        diff = (ours - theirs[name]).abs().max().item()
        print(f"\n{name}: max |ours - ComfyUI| = {diff:.2e} (max |x| = {scale:.2f})")
        assert scale > 0.5
        assert diff < 1e-5 * scale, name
    # The references matter: sampling without them lands far from ComfyUI's result.
    plain = sample(model, noise, context, negative, None, steps=steps, shift=shift, solver="euler", cfg="phantom")
    assert (plain - theirs["phantom"]).abs().max().item() > 1e-2 * theirs["phantom"].abs().max().item()
