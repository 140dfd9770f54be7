"""The LoRA of the real-data chain (curate -> cache -> SFT in-pair / cross-pair -> merge on tiny
Wan-layout base files, tests/real_data.run_real_chain) in ComfyUI: core UNETLoader loads the base
DiT file the chain trained on, core LoraLoaderModelOnly applies the merged LoRA with no key left
unloaded, and the patched model's output differs from the base's."""
from __future__ import annotations

import pytest

from libragen_core.lora import load_lora
from tests.integration.comfy_lora import lora_in_comfyui
from tests.real_data import run_real_chain

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_real_chain_lora_loads_in_comfyui_with_every_key(comfyui, tmp_path):
    chain = run_real_chain(tmp_path / "chain")
    report, outs = lora_in_comfyui(comfyui, chain["base"] / "dit.safetensors", chain["lora"], tmp_path)
    assert report["lora"]["warnings"] == [], f"ComfyUI left LoRA keys unloaded: {report['lora']['warnings']}"
    assert report["lora"]["patches"] == len(load_lora(chain["lora"])) and report["base"]["patches"] == 0
    assert (outs["lora"] - outs["base"]).abs().max() > 0  # the trained LoRA changes the model
