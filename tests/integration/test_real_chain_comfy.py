"""The LoRA of the real-data chain (curate -> cache -> SFT in-pair / cross-pair -> merge on tiny
Wan-layout base files, tests/real_data.run_real_chain) in ComfyUI: core UNETLoader loads the base
DiT file the chain trained on, core LoraLoaderModelOnly applies the merged LoRA with no key left
unloaded, and the patched model's output differs from the base's."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from libragen_core.io.safetensors_file import save_state_dict
from libragen_core.lora import load_lora
from tests.integration.comfy_lora import COMFY_SIDE
from tests.real_data import run_real_chain

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_real_chain_lora_loads_in_comfyui_with_every_key(comfyui, tmp_path):
    chain = run_real_chain(tmp_path / "chain")
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(chain["base"] / "dit.safetensors", models / "dit.safetensors")
    shutil.copyfile(chain["lora"], models / "merged_sft.safetensors")
    layers = len(load_lora(chain["lora"]))
    g = torch.Generator().manual_seed(0)
    ctx = torch.zeros(1, 24, 4096)
    ctx[:, :9] = torch.randn(1, 9, 4096, generator=g)
    inputs = save_state_dict({"x": torch.randn(1, 16, 3, 6, 8, generator=g), "t": torch.tensor([500.0]), "ctx": ctx},
                             tmp_path / "inputs.safetensors")
    cases = {"base": ["dit.safetensors", None, 0.0], "lora": ["dit.safetensors", "merged_sft.safetensors", 1.0]}
    run = comfyui.run(COMFY_SIDE, str(models), json.dumps(cases), str(inputs), str(tmp_path / "out.safetensors"))
    report = json.loads(run.stdout.split("REPORT", 1)[1])
    print("\nComfyUI:", report)
    assert report["lora"]["warnings"] == [], f"ComfyUI left LoRA keys unloaded: {report['lora']['warnings']}"
    assert report["lora"]["patches"] == layers and report["base"]["patches"] == 0
    from safetensors.torch import load_file

    outs = load_file(str(tmp_path / "out.safetensors"))
    assert (outs["lora"] - outs["base"]).abs().max() > 0  # the trained LoRA changes the model
