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
from tests.real_data import run_real_chain

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COMFY_SIDE = r"""
import json, logging, sys
import comfy.cli_args
comfy.cli_args.args.cpu = True
import torch
import folder_paths
import comfy.model_management
import nodes
from safetensors.torch import load_file, save_file

folder, inputs, out_path = sys.argv[1:4]
folder_paths.add_model_folder_path("diffusion_models", folder, is_default=True)
folder_paths.add_model_folder_path("loras", folder, is_default=True)

class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []
    def emit(self, record):
        self.messages.append(record.getMessage())

inp = load_file(inputs)
out, report = {}, {}
for case, lora in (("base", None), ("lora", "merged_sft.safetensors")):
    (model,) = nodes.UNETLoader().load_unet("dit.safetensors", "default")
    log = Collect()
    logging.getLogger().addHandler(log)
    if lora:
        (model,) = nodes.LoraLoaderModelOnly().load_lora_model_only(model, lora, 1.0)
    logging.getLogger().removeHandler(log)
    comfy.model_management.load_models_gpu([model])
    dm = model.model.diffusion_model
    with torch.no_grad():
        out[case] = dm(inp["x"].to(next(dm.parameters()).dtype), inp["t"], inp["ctx"].to(next(dm.parameters()).dtype)).float().contiguous()
    report[case] = {"patches": len(model.patches), "messages": log.messages}
    comfy.model_management.unload_all_models()
save_file(out, out_path)
print("REPORT" + json.dumps(report))
"""


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
    run = comfyui.run(COMFY_SIDE, str(models), str(inputs), str(tmp_path / "out.safetensors"))
    report = json.loads(run.stdout.split("REPORT", 1)[1])
    print("\nComfyUI:", {k: {"patches": v["patches"], "messages": v["messages"][:3]} for k, v in report.items()})
    unloaded = [m for m in report["lora"]["messages"] if "lora" in m.lower() or "not loaded" in m.lower()]
    assert unloaded == [], f"ComfyUI left LoRA keys unloaded: {unloaded}"
    assert report["lora"]["patches"] == layers and report["base"]["patches"] == 0
    from safetensors.torch import load_file

    outs = load_file(str(tmp_path / "out.safetensors"))
    assert (outs["lora"] - outs["base"]).abs().max() > 0  # the trained LoRA changes the model
