"""Our LoRA files in ComfyUI's own loaders: every key loads, and the patched model matches our fold.

The ComfyUI side uses the same nodes a user's graph does (UNETLoader for the tiny Wan DiT,
LoraLoaderModelOnly for the LoRA), then lets model_management patch the weights as a sampler
would, and runs its WanModel. Our side folds the same LoRA into the same base weights with
merge_lora_into, and the two patched models must agree in fp32. Tensors cross over as files.
"""
from __future__ import annotations

import json
from pathlib import Path

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
REPO = Path(__file__).resolve().parents[2]


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


# ---------------------------------------------------------------- LoRA Merge on core MODEL

NATIVE_SIDE = r"""
import importlib.util, json, sys
import comfy.cli_args
comfy.cli_args.args.cpu = True  # no GPU here; keeps model_management from probing CUDA
import torch
import folder_paths
import comfy.model_management as mm
import nodes
from safetensors.torch import load_file, save_file

repo, folder, inputs, out_path = sys.argv[1:5]
folder_paths.add_model_folder_path("diffusion_models", folder, is_default=True)
folder_paths.add_model_folder_path("loras", folder, is_default=True)
spec = importlib.util.spec_from_file_location("libragen_pack", repo + "/__init__.py",
                                              submodule_search_locations=[repo])
pack = importlib.util.module_from_spec(spec); sys.modules["libragen_pack"] = pack; spec.loader.exec_module(pack)
Merge = pack.NODE_CLASS_MAPPINGS["LibraGenLoraMergeNative"]
inp = load_file(inputs)


def merge(model, loras, method="linear", rank=0, strength=1.0):
    slots = {}
    for k in range(1, 5):
        name, w = loras[k - 1] if k <= len(loras) else ("None", 1.0)
        slots[f"lora_{k}"], slots[f"weight_{k}"] = name, w
    return Merge().merge(model, method=method, rank=rank, strength=strength, ties_density=0.5, dare_drop_rate=0.3,
                         save_name="", **slots)


def core_lora(model, name, strength):
    return nodes.LoraLoaderModelOnly().load_lora_model_only(model, name, strength)[0]


@torch.inference_mode()  # as ComfyUI runs every node
def forward(model, lowvram=False):
    # full: what sampling does (weights patched on load); lowvram: core's partial loading, where
    # every layer keeps its file weight and is patched on the fly at each forward
    if lowvram:
        model.patch_model(torch.device("cpu"), lowvram_model_memory=1)
        lazy = model.lowvram_patch_counter()
    else:
        mm.load_models_gpu([model])
        lazy = 0
    y = model.model.diffusion_model(inp["x"], inp["t"], inp["ctx"]).float().clone()
    if lowvram:
        model.unpatch_model(torch.device("cpu"))
    else:
        mm.unload_all_models()
    return y, lazy


out, report = {}, {}
for tag, base in (("fp32", "tiny_wan.safetensors"), ("fp8", "tiny_wan_fp8_scaled.safetensors")):
    (m0,) = nodes.UNETLoader().load_unet(base, "default")
    before = {k: v.clone() for k, v in m0.model.state_dict().items()}
    r = report[tag] = {"weight_dtype": str(m0.model.diffusion_model.blocks[0].self_attn.q.weight.dtype), "errors": {}}
    out[f"{tag}/base"], _ = forward(m0)
    core = core_lora(m0, "a.safetensors", 0.8)
    ours, r["report"] = merge(m0, [("a.safetensors", 1.0)], strength=0.8)
    r["same_patch_keys"] = sorted(core.patches) == sorted(ours.patches)
    r["patches"] = len(ours.patches)
    for name, m in (("core", core), ("ours", ours)):
        out[f"{tag}/{name}"], _ = forward(m)
        out[f"{tag}/{name}_lowvram"], r[f"{name}_lazy"] = forward(m, lowvram=True)
    # two LoRAs: core's loader chained at the weights, and our exact (linear) merge
    out[f"{tag}/core_two"], _ = forward(core_lora(core_lora(m0, "a.safetensors", 0.6), "b.safetensors", 0.4))
    out[f"{tag}/ours_two"], _ = forward(merge(m0, [("a.safetensors", 0.6), ("b.safetensors", 0.4)])[0])
    for method, rank in (("concat", 0), ("svd", 4), ("ties", 0), ("dare", 0)):
        out[f"{tag}/{method}"], _ = forward(merge(m0, [("a.safetensors", 0.6), ("b.safetensors", 0.4)], method,
                                                  rank)[0])
    for bad in ("wrong_shapes.safetensors", "other_model.safetensors"):
        try:
            merge(m0, [("a.safetensors", 0.5), (bad, 0.5)])
        except Exception as e:
            r["errors"][bad] = f"{type(e).__name__}: {e}"
    out[f"{tag}/base_after"], _ = forward(m0)
    r["input_patches_after"] = len(m0.patches)
    r["input_weights_unchanged"] = all(torch.equal(v, before[k]) for k, v in m0.model.state_dict().items())
save_file(out, out_path)
print("REPORT" + json.dumps(report))
"""


def test_lora_merge_on_core_model_equals_core_lora_loader(comfyui, tmp_path):
    """LibraGen LoRA Merge (MODEL) inside ComfyUI on Wan-layout files core's UNETLoader loads (fp32
    and scaled fp8): one LoRA equals core's LoraLoaderModelOnly, with full and with low-VRAM (lazy,
    per-layer) loading; two LoRAs equal core's loader chained; svd/ties/dare equal our merge folded
    in by us; the input MODEL is unchanged; LoRAs for another model are refused by input name."""
    from safetensors.torch import load_file

    from libragen_core.lora import LoraFactors, LoraWeights, load_lora
    from tests.tiny_models import scaled_fp8_state_dict, tiny_wan_state_dict

    base = tiny_wan_state_dict()
    save_state_dict(base, tmp_path / "tiny_wan.safetensors")
    save_state_dict(scaled_fp8_state_dict(base), tmp_path / "tiny_wan_fp8_scaled.safetensors")
    gen = torch.Generator().manual_seed(5)
    layers = {n[: -len(".weight")]: tuple(v.shape) for n, v in base.items()
              if n.startswith("blocks.") and n.endswith(".weight") and v.ndim == 2}

    def random_lora(rank, alpha, shapes=layers):
        return LoraWeights(factors={n: LoraFactors(0.05 * torch.randn(rank, s[1], generator=gen),
                                                   0.05 * torch.randn(s[0], rank, generator=gen), alpha)
                                    for n, s in shapes.items()})

    save_lora(random_lora(4, 8.0), tmp_path / "a.safetensors")
    save_lora(random_lora(8, 4.0), tmp_path / "b.safetensors")
    save_lora(random_lora(4, 4.0, {"blocks.0.self_attn.q": (128, 128)}), tmp_path / "wrong_shapes.safetensors")
    # an SD1-style LoRA: no key names a Wan layer
    save_state_dict({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
                     "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4)},
                    tmp_path / "other_model.safetensors")
    x = torch.randn(1, 16, 3, 8, 8, generator=gen)
    t = torch.tensor([640.0])
    ctx = torch.zeros(1, 24, 4096)
    ctx[:, :10] = torch.randn(1, 10, 4096, generator=gen)
    inputs = save_state_dict({"x": x, "t": t, "ctx": ctx}, tmp_path / "inputs.safetensors")

    run = comfyui.run(NATIVE_SIDE, str(REPO), str(tmp_path), str(inputs), str(tmp_path / "out.safetensors"))
    report = json.loads(run.stdout.split("REPORT", 1)[1])
    theirs = load_file(str(tmp_path / "out.safetensors"))

    # our side for the approximate methods: the same merge, folded into the fp32 weights by us
    a, b = load_lora(tmp_path / "a.safetensors"), load_lora(tmp_path / "b.safetensors")
    ref = build_dit("tiny").eval()
    expected = {}
    for method, rank in (("concat", None), ("svd", 4), ("ties", None), ("dare", None)):
        merged = merge_loras([a, b], [0.6, 0.4], method, rank=rank, density=0.5, drop_rate=0.3).lora
        ref.load_state_dict(merged_state_dict(base, merged, 1.0))
        with torch.no_grad():
            expected[method] = ref(x, t, ctx)

    def diff(p, q):
        return (p - q).abs().max().item()

    figures = {}
    for tag in ("fp32", "fp8"):
        r = report[tag]
        figures[tag] = {
            "ours vs core LoraLoaderModelOnly": diff(theirs[f"{tag}/ours"], theirs[f"{tag}/core"]),
            "same, low-VRAM lazy patching": diff(theirs[f"{tag}/ours_lowvram"], theirs[f"{tag}/core_lowvram"]),
            "lazy vs full (ours)": diff(theirs[f"{tag}/ours_lowvram"], theirs[f"{tag}/ours"]),
            "two LoRAs: ours vs core chained": diff(theirs[f"{tag}/ours_two"], theirs[f"{tag}/core_two"]),
            "input MODEL before vs after": diff(theirs[f"{tag}/base"], theirs[f"{tag}/base_after"]),
            "LoRA effect": diff(theirs[f"{tag}/core"], theirs[f"{tag}/base"]),
        }
        if tag == "fp32":
            for method in expected:
                figures[tag][f"{method}: ComfyUI vs our fold"] = diff(theirs[f"fp32/{method}"], expected[method])
    print("\nLoRA Merge (MODEL) max abs differences:", json.dumps(figures, indent=1))
    print("reports:", json.dumps({k: {n: v for n, v in r.items() if n != "report"} for k, r in report.items()}, indent=1))

    assert report["fp32"]["weight_dtype"] == "torch.float32"
    assert report["fp8"]["weight_dtype"] == "torch.float8_e4m3fn"  # core kept the file's scaled fp8
    for tag, f in figures.items():
        r = report[tag]
        assert r["same_patch_keys"] and r["patches"] == len(layers), r
        assert r["ours_lazy"] == r["core_lazy"] > 0, r  # patched per layer, lazily, in both
        assert r["input_patches_after"] == 0 and r["input_weights_unchanged"], r
        assert f["input MODEL before vs after"] == 0
        assert f["LoRA effect"] > 1e-2, f
        assert f["ours vs core LoraLoaderModelOnly"] <= 1e-5, f
        assert f["same, low-VRAM lazy patching"] <= 1e-5, f
        assert f["two LoRAs: ours vs core chained"] <= (1e-5 if tag == "fp32" else 0.05 * f["LoRA effect"]), f
        errors = r["errors"]
        assert "lora_2 (wrong_shapes.safetensors)" in errors["wrong_shapes.safetensors"], errors
        assert "does not fit this model's layer shapes" in errors["wrong_shapes.safetensors"], errors
        assert "lora_2 (other_model.safetensors)" in errors["other_model.safetensors"], errors
        assert "not LoRA weights for a Wan2.1 DiT" in errors["other_model.safetensors"], errors
    for method in expected:
        assert figures["fp32"][f"{method}: ComfyUI vs our fold"] <= TOLERANCE, figures["fp32"]


@pytest.fixture(scope="module")
def server(comfyui, request):
    import importlib.util
    import sys

    if "libragen_comfy_server" not in sys.modules:
        spec = importlib.util.spec_from_file_location("libragen_comfy_server", REPO / "tests" / "integration" /
                                                      "comfy_server.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["libragen_comfy_server"] = module
        spec.loader.exec_module(module)
    return sys.modules["libragen_comfy_server"].shared_server(comfyui, request.config)


def test_lora_for_another_model_into_the_model_merge_fails_by_name_and_the_server_goes_on(server):
    """In a server: core UNETLoader -> LoRA Merge (MODEL) with the embedded model's shipped LoRA
    (another model: 4 blocks, ffn 1024) or an SD1 LoRA (no Wan key) gives an execution error that
    names the input and the file; a LoRA that fits then runs in the same server."""
    from libragen_core.lora import LoraFactors, LoraWeights
    from tests.tiny_models import tiny_wan_state_dict

    models = server.comfy_dir / "models"
    base = tiny_wan_state_dict()
    save_state_dict(base, models / "diffusion_models" / "tiny_wan.safetensors")
    gen = torch.Generator().manual_seed(2)
    fits = LoraWeights(factors={n[: -len(".weight")]: LoraFactors(0.05 * torch.randn(4, v.shape[1], generator=gen),
                                                                  0.05 * torch.randn(v.shape[0], 4, generator=gen), 4.0)
                                for n, v in base.items() if n.startswith("blocks.0.") and n.endswith("attn.q.weight")})
    save_lora(fits, models / "loras" / "tiny_fits.safetensors")
    save_state_dict({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
                     "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4)},
                    models / "loras" / "sd1_style.safetensors")

    def graph(lora_2):
        slots = {"lora_1": "tiny_fits.safetensors", "weight_1": 0.5, "lora_2": lora_2, "weight_2": 0.5,
                 "lora_3": "None", "weight_3": 1.0, "lora_4": "None", "weight_4": 1.0}
        return {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_wan.safetensors",
                                                              "weight_dtype": "default"}},
                "2": {"class_type": "LibraGenLoraMergeNative", "inputs": {
                    "model": ["1", 0], **slots, "method": "linear", "rank": 0, "strength": 1.0, "ties_density": 0.2,
                    "dare_drop_rate": 0.5, "save_name": ""}},
                "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}}}

    written = [models / "diffusion_models" / "tiny_wan.safetensors", models / "loras" / "tiny_fits.safetensors",
               models / "loras" / "sd1_style.safetensors"]
    try:  # the shared server keeps only what a new user copies for the other tests
        for lora, expect in (("libragen-sprite_sft_in.safetensors",
                              "the LoRA targets 20 layer(s) this model does not have"),
                             ("sd1_style.safetensors", "not LoRA weights for a Wan2.1 DiT")):
            entry = server.run(graph(lora))
            assert entry["status"]["status_str"] == "error", entry["status"]
            err = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")
            print(f"\n{lora}: {err['exception_type']}: {err['exception_message'][:300]}")
            assert err["node_type"] == "LibraGenLoraMergeNative"
            assert err["exception_message"].startswith(f"lora_2 ({lora}): "), err["exception_message"]
            assert expect in err["exception_message"]
        entry = server.run(graph("tiny_fits.safetensors"))
        assert entry["status"]["status_str"] == "success", entry["status"]
        assert "merged 2 LoRA(s) with linear: 2 layers" in json.dumps(entry["outputs"]["3"])
    finally:
        for path in written:
            path.unlink(missing_ok=True)
