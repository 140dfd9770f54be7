"""Our Wan2.1 VAE against ComfyUI's (comfy.ldm.wan.vae.WanVAE) on the same random weights, fp32.

Both sides load one safetensors file strictly and run the same inputs; tensors cross over as
files. Compared: raw (unnormalized) encoder means and raw decodes, then separately our latent
normalization against comfy.latent_formats.Wan21. A last case goes through ComfyUI's own VAE
loader class (comfy.sd.VAE, what the VAELoader node builds) with the released dim-96 layout, on
ComfyUI IMAGE tensors, to show a file written by save_vae is a drop-in for wan_2.1_vae.safetensors.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from libragen_core.models.wan_vae import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, VAEConfig, WanVAE, save_vae

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOLERANCE = 1e-4

COMFY_SIDE = r"""
import json, sys
import comfy.cli_args
comfy.cli_args.args.cpu = True  # no GPU here; keeps model_management from probing CUDA
import torch
from safetensors.torch import load_file, save_file
import comfy.latent_formats
import comfy.ldm.wan.vae

cases, out_path = json.loads(sys.argv[1]), sys.argv[2]
fmt = comfy.latent_formats.Wan21()
out = {"mean": fmt.latents_mean.flatten(), "std": fmt.latents_std.flatten()}
for name, c in cases.items():
    m = comfy.ldm.wan.vae.WanVAE(dim=c["dim"], z_dim=16, dim_mult=c["dim_mult"], num_res_blocks=c["num_res_blocks"],
                                 attn_scales=[], temperal_downsample=c["temperal_downsample"], dropout=0.0)
    m.load_state_dict(load_file(c["weights"]), strict=True)
    m.eval()
    inp = load_file(c["inputs"])
    with torch.no_grad():
        mu = m.encode(inp["x"])
        out[name + ".mu"] = mu
        out[name + ".y"] = m.decode(inp["z"])
        out[name + ".mu_in"] = fmt.process_in(mu)
        out[name + ".z_out"] = fmt.process_out(inp["z"])
save_file({k: v.contiguous() for k, v in out.items()}, out_path)
"""

COMFY_LOADER_SIDE = r"""
import sys
import comfy.cli_args
comfy.cli_args.args.cpu = True
import torch
import comfy.sd
import comfy.utils
from safetensors.torch import load_file, save_file

vae_file, inputs, out_path = sys.argv[1:4]
vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(vae_file))
inp = load_file(inputs)
samples = vae.encode(inp["images"])           # ComfyUI IMAGE [F, H, W, 3] in [0, 1] -> LATENT samples
images = vae.decode(inp["z"])                 # LATENT samples -> IMAGE [1, F, H, W, 3]
save_file({"samples": samples.contiguous(), "images": images.contiguous(),
           "dtype_is_fp32": torch.tensor(vae.vae_dtype == torch.float32)}, out_path)
"""


def _random_vae(cfg: VAEConfig, seed: int) -> WanVAE:
    torch.manual_seed(seed)
    vae = WanVAE(cfg).eval()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.5, 1.5)  # the released gains are not 1: exercise them
            elif name.endswith("bias"):
                p.normal_(0, 0.05)
    return vae


CASES = {
    # the `small` config: Wan2.1 keys, dim 16; 9 frames exercise two streamed chunks after the first
    "small": (VAEConfig.small(16), (1, 3, 9, 32, 32)),
    # another layout through the same constructor arguments; batch 2, non-square frames
    "variant": (VAEConfig(dim=8, dim_mult=(1, 2, 2, 4), num_res_blocks=1), (2, 3, 5, 48, 64)),
}


def test_encode_decode_and_normalization_match_comfyui(comfyui, tmp_path):
    ours, spec = {}, {}
    for i, (name, (cfg, shape)) in enumerate(CASES.items()):
        vae = _random_vae(cfg, seed=i)
        weights = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(weights))
        g = torch.Generator().manual_seed(10 + i)
        x = torch.rand(shape, generator=g) * 2 - 1
        t, h, w = vae.latent_shape(*shape[2:])
        z = torch.randn(shape[0], 16, t, h, w, generator=g)
        inputs = tmp_path / f"{name}.inputs.safetensors"
        save_file({"x": x, "z": z}, str(inputs))
        with torch.no_grad():
            ours[name] = {"mu": vae.encode_raw(x), "y": vae.decode_raw(z, clamp=False),
                          "mu_in": vae.encode(x), "z_out": vae.denormalize(z)}
        spec[name] = {"dim": cfg.dim, "dim_mult": list(cfg.dim_mult), "num_res_blocks": cfg.num_res_blocks,
                      "temperal_downsample": list(cfg.temperal_downsample),
                      "weights": str(weights), "inputs": str(inputs)}
    out_path = tmp_path / "comfy_out.safetensors"
    comfyui.run(COMFY_SIDE, json.dumps(spec), str(out_path))
    theirs = load_file(str(out_path))

    torch.testing.assert_close(theirs["mean"], torch.tensor(WAN21_LATENTS_MEAN), atol=0, rtol=0)
    torch.testing.assert_close(theirs["std"], torch.tensor(WAN21_LATENTS_STD), atol=0, rtol=0)
    for name, mine in ours.items():
        for key, value in mine.items():
            other = theirs[f"{name}.{key}"]
            assert value.shape == other.shape, (name, key, value.shape, other.shape)
            diff = (value - other).abs().max().item()
            print(f"vae parity {name} {key} {tuple(value.shape)}: max abs diff {diff:.3g} "
                  f"(values up to {other.abs().max().item():.3g})")
            assert diff <= TOLERANCE, f"{name} {key}: max abs difference {diff} > {TOLERANCE}"


def test_save_vae_file_is_a_dropin_for_comfyui_vae_loader(comfyui, tmp_path):
    # The released dim-96 layout through comfy.sd.VAE (which hard-codes dim 96 for Wan2.1 files):
    # the extra latents_mean/std tensors of save_vae are ignored there, and the LATENT it produces
    # is the RAW latent (ComfyUI normalizes inside the sampler): it must equal our encode_raw.
    vae = _random_vae(VAEConfig.wan21(), seed=5)
    path = save_vae(vae, tmp_path / "wan_2.1_vae_random.safetensors")
    g = torch.Generator().manual_seed(3)
    images = torch.rand(5, 32, 48, 3, generator=g)  # ComfyUI IMAGE: [frames, H, W, RGB] in [0, 1]
    z = torch.randn(1, 16, 2, 4, 6, generator=g)
    inputs = tmp_path / "inputs.safetensors"
    save_file({"images": images, "z": z}, str(inputs))
    out_path = tmp_path / "out.safetensors"
    comfyui.run(COMFY_LOADER_SIDE, str(path), str(inputs), str(out_path))
    theirs = load_file(str(out_path))
    assert bool(theirs["dtype_is_fp32"])
    with torch.no_grad():
        mu = vae.encode_raw(images.permute(3, 0, 1, 2)[None] * 2 - 1)
        pixels = vae.decode_raw(z)  # clamped to [-1, 1], as ComfyUI's IMAGE output is clamped
    frames = ((pixels[0].permute(1, 2, 3, 0) + 1) / 2)[None]
    d_enc = (mu - theirs["samples"]).abs().max().item()
    d_dec = (frames - theirs["images"]).abs().max().item()
    print(f"vae parity via comfy.sd.VAE (dim 96): encode {d_enc:.3g}, decode {d_dec:.3g}")
    assert theirs["samples"].shape == mu.shape and theirs["images"].shape == frames.shape
    assert d_enc <= TOLERANCE and d_dec <= TOLERANCE
