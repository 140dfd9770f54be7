"""Our LoRA files in ComfyUI's own loaders: every key loads, and the patched model matches our fold.

The ComfyUI side uses the same nodes a user's graph does (UNETLoader for the tiny Wan DiT,
LoraLoaderModelOnly for the LoRA), then lets model_management patch the weights as a sampler
would, and runs its WanModel. Our side folds the same LoRA into the same base weights with
merge_lora_into, and the two patched models must agree in fp32. Tensors cross over as files.
"""
from __future__ import annotations

import json

import pytest
import torch

from libragen_core.io.safetensors_file import save_state_dict
from libragen_core.lora import (
    add_lora,
    extract_lora,
    lora_trainable_parameters,
    merge_loras,
    merged_state_dict,
    save_lora,
    to_state_dict,
)
from libragen_core.models.presets import build_dit
from tests.integration.comfy_lora import COMFY_SIDE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOLERANCE = 1e-4


def _tiny_with_lora(tmp_path):
    torch.manual_seed(0)
    model = build_dit("tiny").eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # perturb every tensor so norms, biases and modulation all matter
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    base = {k: v.clone() for k, v in model.state_dict().items()}
    add_lora(model, rank=4, alpha=8)
    with torch.no_grad():
        for p in lora_trainable_parameters(model):
            p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model, base, gen


def test_our_lora_files_load_in_comfyui_and_patch_like_our_merge(comfyui, tmp_path):
    from safetensors.torch import load_file

    model, base, gen = _tiny_with_lora(tmp_path)
    lora = extract_lora(model)
    # a second LoRA and a TIES merge kept as full diffs exercise ComfyUI's ".diff" patch path
    other = extract_lora(model)
    for f in other.factors.values():
        f.up = f.up.flip(0).contiguous()
    ties = merge_loras([lora, other], [0.6, 0.4], "ties", density=0.5).lora

    save_state_dict(base, tmp_path / "tiny_wan.safetensors")
    save_lora(lora, tmp_path / "sft_comfy.safetensors")
    save_lora(lora, tmp_path / "sft_kohya.safetensors", naming="kohya")
    save_lora(ties, tmp_path / "ties_diff.safetensors")
    save_state_dict(merged_state_dict(base, lora, 1.0), tmp_path / "tiny_wan_merged_by_us.safetensors")
    # a file with one key ComfyUI cannot place: proves the unloaded-key detector below works
    bogus = to_state_dict(lora)
    bogus["diffusion_model.blocks.0.no_such_layer.lora_A.weight"] = torch.zeros(4, 256)
    save_state_dict(bogus, tmp_path / "bogus.safetensors")
    layers = len(lora)

    cases = {  # name -> (unet file, lora file, strength) on the ComfyUI side; our weights for it
        "base": ("tiny_wan.safetensors", None, 0.0),
        "comfy_1.0": ("tiny_wan.safetensors", "sft_comfy.safetensors", 1.0),
        "comfy_0.7": ("tiny_wan.safetensors", "sft_comfy.safetensors", 0.7),
        "kohya_1.0": ("tiny_wan.safetensors", "sft_kohya.safetensors", 1.0),
        "ties_diff": ("tiny_wan.safetensors", "ties_diff.safetensors", 1.0),
        "merged_by_us": ("tiny_wan_merged_by_us.safetensors", None, 0.0),
        "bogus": ("tiny_wan.safetensors", "bogus.safetensors", 1.0),
    }
    ours_weights = {
        "base": base,
        "comfy_1.0": merged_state_dict(base, lora, 1.0),
        "comfy_0.7": merged_state_dict(base, lora, 0.7),
        "kohya_1.0": merged_state_dict(base, lora, 1.0),
        "ties_diff": merged_state_dict(base, ties, 1.0),
    }
    x = torch.randn(1, 16, 3, 8, 8, generator=gen)
    t = torch.tensor([640.0])
    ctx = torch.zeros(1, 24, 4096)
    ctx[:, :10] = torch.randn(1, 10, 4096, generator=gen)
    inputs = save_state_dict({"x": x, "t": t, "ctx": ctx}, tmp_path / "inputs.safetensors")

    run = comfyui.run(COMFY_SIDE, str(tmp_path), json.dumps(cases), str(inputs), str(tmp_path / "out.safetensors"))
    report = json.loads(run.stdout.split("REPORT", 1)[1])
    theirs = load_file(str(tmp_path / "out.safetensors"))

    ref = build_dit("tiny").eval()
    diffs = {}
    for case, sd in ours_weights.items():
        ref.load_state_dict(sd)
        with torch.no_grad():
            ours = ref(x, t, ctx)
        diffs[case] = (ours - theirs[case]).abs().max().item()
    # our own trained model with its peft adapter active, against ComfyUI with the saved file
    with torch.no_grad():
        adapter_out = model(x, t, ctx)
    diffs["peft_adapter_vs_comfy_1.0"] = (adapter_out - theirs["comfy_1.0"]).abs().max().item()
    # inside ComfyUI alone: its LoRA patching vs the weights our merge wrote (no DiT parity involved)
    diffs["comfy_lora_vs_comfy_on_our_merge"] = (theirs["comfy_1.0"] - theirs["merged_by_us"]).abs().max().item()
    lora_effect = (theirs["comfy_1.0"] - theirs["base"]).abs().max().item()
    print("\nComfyUI LoRA report:", report)
    print("max |ours - ComfyUI|:", {k: f"{v:.2e}" for k, v in diffs.items()}, f"LoRA effect {lora_effect:.3f}")

    bad = report.pop("bogus")
    assert any("no_such_layer" in m for m in bad["warnings"]), bad
    for case, r in report.items():
        assert r["dtype"] == "torch.float32", r
        assert r["warnings"] == [], f"{case}: ComfyUI did not load every key: {r['warnings']}"
        want = 0 if case in ("base", "merged_by_us") else layers
        assert r["patches"] == want, f"{case}: {r['patches']} patches, want {want}"
    assert lora_effect > 100 * TOLERANCE, "the LoRA must change ComfyUI's output for the comparison to mean anything"
    for case, d in diffs.items():
        assert d <= TOLERANCE, f"{case}: max abs difference {d:.3e} > {TOLERANCE}"
