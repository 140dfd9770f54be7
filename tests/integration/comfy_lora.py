"""A ComfyUI-side script: core UNETLoader + LoraLoaderModelOnly on model files, as a user's graph
does, then one forward of the patched WanModel per case (run with `comfyui.run(COMFY_SIDE, folder,
cases_json, inputs, out_path)`; cases: name -> [unet file, LoRA file or null, strength]).

It prints REPORT{case: {patches, warnings (every LoRA / "not loaded" message), dtype}} and saves
each case's output to out_path."""

COMFY_SIDE = r"""
import json, logging, sys
import comfy.cli_args
comfy.cli_args.args.cpu = True  # no GPU here; keeps model_management from probing CUDA
import torch
import folder_paths
import comfy.model_management
import nodes
from safetensors.torch import load_file, save_file

folder, cases_json, inputs, out_path = sys.argv[1:5]
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
for case, (unet_name, lora_name, strength) in json.loads(cases_json).items():
    (model,) = nodes.UNETLoader().load_unet(unet_name, "default")
    log = Collect()
    logging.getLogger().addHandler(log)
    if lora_name:
        (model,) = nodes.LoraLoaderModelOnly().load_lora_model_only(model, lora_name, strength)
    logging.getLogger().removeHandler(log)
    comfy.model_management.load_models_gpu([model])  # applies the weight patches, as sampling does
    dm = model.model.diffusion_model
    dtype = next(dm.parameters()).dtype
    with torch.no_grad():
        out[case] = dm(inp["x"].to(dtype), inp["t"], inp["ctx"].to(dtype)).float().contiguous()
    report[case] = {
        "patches": len(model.patches),
        "warnings": [m for m in log.messages if "lora" in m.lower() or "not loaded" in m.lower()],
        "dtype": str(next(dm.parameters()).dtype),
    }
    comfy.model_management.unload_all_models()
save_file(out, out_path)
print("REPORT" + json.dumps(report))
"""



def lora_in_comfyui(comfyui, dit_file, lora_file, tmp) -> tuple[dict, dict]:
    """Core UNETLoader on `dit_file`, then LoraLoaderModelOnly with `lora_file` at strength 1, one
    forward each on fixed inputs (Wan text width 4096). Returns (the REPORT of both cases, their
    outputs {"base", "lora"})."""
    import json
    import shutil
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    from libragen_core.io.safetensors_file import save_state_dict

    tmp = Path(tmp)
    models = tmp / "models"
    models.mkdir()
    shutil.copyfile(dit_file, models / "dit.safetensors")
    shutil.copyfile(lora_file, models / "lora.safetensors")
    g = torch.Generator().manual_seed(0)
    ctx = torch.zeros(1, 24, 4096)
    ctx[:, :9] = torch.randn(1, 9, 4096, generator=g)
    inputs = save_state_dict({"x": torch.randn(1, 16, 3, 6, 8, generator=g), "t": torch.tensor([500.0]), "ctx": ctx},
                             tmp / "inputs.safetensors")
    cases = {"base": ["dit.safetensors", None, 0.0], "lora": ["dit.safetensors", "lora.safetensors", 1.0]}
    run = comfyui.run(COMFY_SIDE, str(models), json.dumps(cases), str(inputs), str(tmp / "out.safetensors"))
    report = json.loads(run.stdout.split("REPORT", 1)[1])
    print("\nComfyUI:", report)
    return report, load_file(str(tmp / "out.safetensors"))
