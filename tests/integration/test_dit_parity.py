"""Our WanDiT against ComfyUI's own comfy.ldm.wan.model.WanModel on identical random weights.

The ComfyUI side runs in ComfyUI's interpreter and sees only ComfyUI and safetensors files: the
weights and inputs are written here, its outputs come back as files, and the comparison is fp32.
Reference frames: ComfyUI's forward takes them as `time_dim_concat` (used by Phantom); ours takes
them appended to x on the time axis with frame_pos F, F+1, ..., and the caller trims the output.
"""
from __future__ import annotations

import json

import pytest
import torch

from libragen_core.io.safetensors_file import save_state_dict
from libragen_core.models.presets import build_dit

pytestmark = pytest.mark.integration

TOLERANCE = 1e-4

COMFY_SIDE = r"""
import json, sys
import comfy.cli_args
comfy.cli_args.args.cpu = True  # no GPU here; keeps model_management from probing CUDA
import torch
import comfy.ops
from comfy.ldm.wan.model import WanModel
from safetensors.torch import load_file, save_file

weights, inputs, cfg_json, out_path = sys.argv[1:5]
cfg = json.loads(cfg_json)
model = WanModel(model_type="t2v", patch_size=tuple(cfg["patch_size"]), in_dim=cfg["in_dim"], dim=cfg["dim"],
                 ffn_dim=cfg["ffn_dim"], freq_dim=cfg["freq_dim"], text_dim=cfg["text_dim"], out_dim=cfg["out_dim"],
                 num_heads=cfg["num_heads"], num_layers=cfg["num_layers"], qk_norm=cfg["qk_norm"],
                 cross_attn_norm=cfg["cross_attn_norm"], eps=cfg["eps"], device="cpu", dtype=torch.float32,
                 operations=comfy.ops.disable_weight_init)
missing, unexpected = model.load_state_dict(load_file(weights), strict=True)
model.eval()
inp = load_file(inputs)
out = {}
with torch.no_grad():
    for case in ("plain", "refs", "odd"):
        refs = inp.get(case + ".refs")
        out[case] = model(inp[case + ".x"], inp[case + ".t"], inp[case + ".ctx"], time_dim_concat=refs).contiguous()
save_file(out, out_path)
"""


def _text_features(b: int, n_tokens: int, n_real: int, gen: torch.Generator) -> torch.Tensor:
    # zero-padded after the real tokens, as the text encoder delivers them
    ctx = torch.zeros(b, n_tokens, 4096)
    ctx[:, :n_real] = torch.randn(b, n_real, 4096, generator=gen)
    return ctx


def test_velocity_matches_comfyui(comfyui, tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = build_dit("tiny").eval()
    gen = torch.Generator().manual_seed(1)
    # perturb every tensor (norm gains, biases, modulation, head) so all of them are exercised
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    weights = save_state_dict(model.state_dict(), tmp_path / "tiny.safetensors")

    cases = {
        "plain": dict(x=torch.randn(2, 16, 5, 8, 12, generator=gen), t=torch.tensor([999.0, 250.5]),
                      ctx=_text_features(2, 64, 20, gen)),
        "refs": dict(x=torch.randn(2, 16, 5, 8, 12, generator=gen), t=torch.tensor([700.0, 31.25]),
                     ctx=_text_features(2, 64, 11, gen), refs=torch.randn(2, 16, 2, 8, 12, generator=gen)),
        "odd": dict(x=torch.randn(1, 16, 3, 7, 9, generator=gen), t=torch.tensor([500.0]),
                    ctx=_text_features(1, 32, 5, gen)),
    }
    inputs = save_state_dict({f"{c}.{k}": v for c, d in cases.items() for k, v in d.items()},
                             tmp_path / "inputs.safetensors")
    comfy_out = tmp_path / "comfy_out.safetensors"
    comfyui.run(COMFY_SIDE, str(weights), str(inputs), json.dumps(model.config.to_dict()), str(comfy_out))
    theirs = load_file(str(comfy_out))

    ours = {}
    with torch.no_grad():
        for name, d in cases.items():
            x, f = d["x"], d["x"].shape[2]
            if "refs" in d:
                x = torch.cat([x, d["refs"]], dim=2)
                frame_pos = torch.arange(x.shape[2])  # references continue after the video: F, F+1, ...
                ours[name] = model(x, d["t"], d["ctx"], frame_pos=frame_pos)[:, :, :f]
            else:
                ours[name] = model(x, d["t"], d["ctx"])
    report = {}
    for name in cases:
        assert ours[name].shape == theirs[name].shape, name
        diff = (ours[name] - theirs[name]).abs().max().item()
        report[name] = (diff, theirs[name].abs().max().item())
    print("\nmax |ours - ComfyUI| (max |v|):", {k: f"{d:.2e} ({m:.2f})" for k, (d, m) in report.items()})
    for name, (diff, scale) in report.items():
        assert scale > 0.1, f"{name}: ComfyUI output is degenerate"
        assert diff <= TOLERANCE, f"{name}: max abs difference {diff:.3e} > {TOLERANCE}"
    # the references must matter, or case (b) would not test the time-concatenated path
    with torch.no_grad():
        no_refs = model(cases["refs"]["x"], cases["refs"]["t"], cases["refs"]["ctx"])
    assert (no_refs - theirs["refs"]).abs().max() > 100 * TOLERANCE
