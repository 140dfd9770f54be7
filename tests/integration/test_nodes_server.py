"""The node pack inside a real ComfyUI: what /object_info declares, interrupts, bad workflows, and
(in-process, with ComfyUI's own modules) progress previews, memory management and interrupts."""
from __future__ import annotations

import copy
import importlib.util
import json
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.pack import load_pack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _helper():
    if "libragen_comfy_server" not in sys.modules:
        spec = importlib.util.spec_from_file_location("libragen_comfy_server", HERE / "comfy_server.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["libragen_comfy_server"] = module
        spec.loader.exec_module(module)
    return sys.modules["libragen_comfy_server"]



@pytest.fixture(scope="module")
def server(comfyui, request):
    return _helper().shared_server(comfyui, request.config)


def small_graph(seed=1, steps=2, frames=5, subjects_size=64, extra=None):
    """Embedded model -> one LoadImage subject -> sampler -> decode -> SaveAnimatedWEBP."""
    g = {
        "1": {"class_type": "LibraGenLoadModel", "inputs": {
            "diffusion_model": "(embedded) libragen-sprite", "vae": "(embedded)", "text_encoder": "(embedded)",
            "weight_dtype": "default", "attention": "auto", "offload": "auto"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "red_circle.png"}},
        "3": {"class_type": "LibraGenSubjectEncode", "inputs": {
            "model": ["1", 0], "image_1": ["2", 0], "mask_1": ["2", 1], "width": subjects_size,
            "height": subjects_size, "label_1": "the red circle"}},
        "4": {"class_type": "LibraGenSampler", "inputs": {
            "model": ["1", 0], "subjects": ["3", 0], "prompt": "Video: Ref 1[the red circle] moves left.",
            "negative_prompt": "", "frames": frames, "width": 64, "height": 64, "steps": steps, "shift": 3.0,
            "solver": "euler", "seed": seed, "cfg_preset": "phantom"}},
        "5": {"class_type": "LibraGenDecode", "inputs": {"model": ["1", 0], "latent": ["4", 0]}},
        "6": {"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": ["5", 0], "filename_prefix": f"libragen_test/small_{seed}", "fps": 8.0, "lossless": False,
            "quality": 80, "method": "fastest"}},
    }
    for key, value in (extra or {}).items():
        node, name = key.split(".")
        g[node]["inputs"][name] = value
    return g


def messages(entry: dict) -> dict:
    return dict((m[0], m[1]) for m in entry["status"]["messages"])


def test_object_info_declares_every_node_as_defined(server):
    pack = load_pack()
    info = server.get("/object_info").json()
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert node_id in info, f"{node_id} is not registered on the server (see {server.log})"
        served = info[node_id]
        declared = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            assert list(served["input"].get(section, {})) == list(declared.get(section, {})), (node_id, section)
            for name, spec in declared.get(section, {}).items():
                served_spec = served["input"][section][name]
                assert served_spec[1]["tooltip"] == spec[1]["tooltip"]
                if not isinstance(spec[0], list):
                    assert served_spec[0] == spec[0], (node_id, name)
        assert served["output"] == list(cls.RETURN_TYPES)
        assert served["output_name"] == list(cls.RETURN_NAMES)
        assert served["category"] == cls.CATEGORY and served["description"] == cls.DESCRIPTION
        assert served["display_name"] == pack.NODE_DISPLAY_NAME_MAPPINGS[node_id]
    lora_files = info["LibraGenLoraMerge"]["input"]["required"]["lora_1"][0]
    assert _helper().EXAMPLE_LORA in lora_files  # read through folder_paths
    assert info["LibraGenLoadModel"]["input"]["required"]["diffusion_model"][0][0] == "(embedded) libragen-sprite"


def test_interrupt_during_sampling_then_the_next_prompt_runs(server):
    client = uuid.uuid4().hex
    r = server.submit(small_graph(seed=11, steps=400, frames=17), client_id=client)
    assert r.status_code == 200, r.text
    prompt_id = r.json()["prompt_id"]
    server.progress(client, prompt_id, node="4", at_least=2)  # the sampler is inside its loop
    entry, stopped_after = server.interrupt(prompt_id, timeout=120)
    print(f"interrupt: prompt ended {stopped_after:.2f} s after POST /interrupt")
    assert entry["status"]["status_str"] == "error"
    assert "execution_interrupted" in messages(entry), entry["status"]
    assert stopped_after < 30, f"the interrupt took {stopped_after:.0f} s (one step should be well under that)"
    after = server.run(small_graph(seed=12))
    assert after["status"]["status_str"] == "success", after["status"]


@pytest.mark.parametrize("case", ["frames", "labels", "missing_file", "wrong_type", "bad_size", "no_lora"])
def test_bad_workflows_are_refused_with_a_clear_reason(server, case):
    g = small_graph(seed=20)
    if case == "frames":
        g["4"]["inputs"]["frames"] = 18
        expect = "frames 18 is not 4k+1; use 17 or 21."
    elif case == "labels":
        g["3"]["inputs"]["label_3"] = "the cat"
        expect = "label_3 is 'the cat' but image_3 is not connected"
    elif case == "missing_file":
        g["1"]["inputs"]["diffusion_model"] = "not_there.safetensors"
        expect = "not_there.safetensors"
    elif case == "wrong_type":
        g["4"]["inputs"]["model"] = ["2", 0]
        expect = "received_type(IMAGE) mismatch input_type(LIBRAGEN_MODEL)"
    elif case == "bad_size":
        g["4"]["inputs"]["width"] = 72
        expect = "width 72 is not a multiple of 16"
    else:
        g["7"] = {"class_type": "LibraGenLoraMerge", "inputs": {
            "model": ["1", 0], **{f"lora_{k}": "None" for k in range(1, 5)},
            **{f"weight_{k}": 1.0 for k in range(1, 5)}, "method": "linear", "rank": 0, "strength": 1.0,
            "ties_density": 0.2, "dare_drop_rate": 0.5, "save_name": ""}}
        g["4"]["inputs"]["model"] = ["7", 0]
        expect = "no LoRA is selected"
    r = server.submit(g)
    assert r.status_code == 400, r.text
    body = r.json()
    assert expect in json.dumps(body["node_errors"]), body
    assert server.get("/object_info/LibraGenSampler").ok  # still serving


def test_runtime_errors_become_execution_errors_and_the_server_goes_on(server):
    entry = server.run(small_graph(seed=30, subjects_size=32))  # references at 32x32, video at 64x64
    assert entry["status"]["status_str"] == "error"
    err = messages(entry)["execution_error"]
    assert err["node_type"] == "LibraGenSampler"
    assert "reference latents are 4x4 (h x w) but the video latents are 8x8" in err["exception_message"]
    assert server.run(small_graph(seed=31))["status"]["status_str"] == "success"


def test_lora_merge_saves_into_the_server_loras_folder(server):
    helper = _helper()
    name = f"libragen_test_saved_{int(time.time())}"
    g = {
        "1": copy.deepcopy(small_graph()["1"]),
        "2": {"class_type": "LibraGenLoraMerge", "inputs": {
            "model": ["1", 0], "lora_1": helper.EXAMPLE_LORA, "weight_1": 0.5, "lora_2": helper.EXAMPLE_LORA,
            "weight_2": 0.5, "lora_3": "None", "weight_3": 1.0, "lora_4": "None", "weight_4": 1.0, "method": "svd",
            "rank": 2, "strength": 1.0, "ties_density": 0.2, "dare_drop_rate": 0.5, "save_name": f"../{name}"}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
    }
    saved = server.comfy_dir / "models" / "loras" / f"{name}.safetensors"
    try:
        entry = server.run(g)
        assert entry["status"]["status_str"] == "success", entry["status"]
        assert saved.is_file()
        from libragen_core.lora import load_lora

        assert len(load_lora(saved)) == len(load_lora(REPO / "examples" / "loras" / helper.EXAMPLE_LORA))
    finally:
        saved.unlink(missing_ok=True)


IN_PROCESS = r"""
import importlib.util, json, sys, warnings
import torch
warnings.simplefilter("ignore")
import comfy.cli_args
comfy.cli_args.args.cpu = True  # no GPU here; keeps model_management from probing CUDA
from comfy.cli_args import args, LatentPreviewMethod
args.preview_method = LatentPreviewMethod.Latent2RGB
import comfy.utils, comfy.model_management as mm
spec = importlib.util.spec_from_file_location("libragen_pack", REPO_DIR + "/__init__.py",
                                              submodule_search_locations=[REPO_DIR])
"""

IN_PROCESS_BODY = r"""
pack = importlib.util.module_from_spec(spec); sys.modules["libragen_pack"] = pack; spec.loader.exec_module(pack)
N = pack.NODE_CLASS_MAPPINGS
assert pack.nodes.adapter.in_comfyui() and pack.nodes.adapter.previews_enabled()
calls = []
comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append(
    (value, total, None if preview is None else (preview[0], type(preview[1]).__name__, preview[1].size, preview[2]))))
model = N["LibraGenLoadModel"]().load("(embedded) libragen-sprite", "(embedded)", "(embedded)")[0]
before = {k: v.clone() for k, v in model.bundle.dit.state_dict().items()}
img = torch.rand(1, 40, 40, 3)
subjects = N["LibraGenSubjectEncode"]().encode(model, img, 64, 64)[0]
run = dict(prompt="a dot", negative_prompt="", frames=5, width=64, height=64, steps=2, shift=3.0, solver="euler",
           seed=1, cfg_preset="phantom", subjects=subjects, unique_id="4")
latent = N["LibraGenSampler"]().sample(model, **run)[0]
loaded = [type(m.model.model).__name__ for m in mm.current_loaded_models]
from libragen_core.lora import LoraFactors, LoraWeights
lora = LoraWeights(factors={"blocks.0.self_attn.q": LoraFactors(torch.ones(2, 256), torch.ones(256, 2), 2.0)})
merged = model.with_patches(pack.nodes.types.LoraPatch(lora, 1.0, "test"))
mm.interrupt_current_processing(True)
try:
    N["LibraGenSampler"]().sample(merged, **run)
    interrupted = False
except mm.InterruptProcessingException:
    interrupted = True
mm.interrupt_current_processing(False)
unchanged = all(torch.equal(v, before[k]) for k, v in model.bundle.dit.state_dict().items())
offloading = pack.nodes.types.LibraGenModel(model.bundle, "x", offload="offload after use", handles=model.handles)
N["LibraGenDecode"]().decode(offloading, latent)
after_offload = [type(m.model.model).__name__ for m in mm.current_loaded_models]
print(json.dumps({"calls": calls, "loaded": loaded, "interrupted": interrupted, "unchanged": unchanged,
                  "after_offload": after_offload, "shape": list(latent["samples"].shape)}))
"""


def test_in_comfyui_progress_previews_memory_manager_and_interrupt(comfyui):
    script = IN_PROCESS.replace("REPO_DIR", repr(str(REPO))) + IN_PROCESS_BODY
    out = comfyui.run(script, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    previews = [c for c in result["calls"] if c[1] == 2]
    assert [c[0] for c in previews] == [1, 2]
    for _, _, preview in previews:
        assert preview[0] == "JPEG" and preview[1].endswith("Image") and preview[2] == [64, 64] and preview[3] == 512
    # ComfyUI's memory manager holds our modules (so it can evict them for other models)
    assert {"LibraGenTextEncoder", "LibraGenDiT"} <= set(result["loaded"])
    assert result["interrupted"] and result["unchanged"]
    assert "LibraGenVAE" not in result["after_offload"]  # "offload after use" gave it back
    assert result["shape"] == [1, 16, 2, 8, 8]


CORE_DECODE = r"""
import importlib.util, json, sys, tempfile, warnings
from pathlib import Path
import torch
warnings.simplefilter("ignore")
import comfy.cli_args
comfy.cli_args.args.cpu = True
import folder_paths
import nodes as core_nodes  # ComfyUI's own nodes.py
from libragen_core.models.wan_vae import VAEConfig, WanVAE, save_vae
spec = importlib.util.spec_from_file_location("libragen_pack", REPO_DIR + "/__init__.py",
                                              submodule_search_locations=[REPO_DIR])
pack = importlib.util.module_from_spec(spec); sys.modules["libragen_pack"] = pack; spec.loader.exec_module(pack)
N = pack.NODE_CLASS_MAPPINGS
folder = Path(tempfile.mkdtemp())
torch.manual_seed(0)
save_vae(WanVAE(VAEConfig.wan21()).eval(), folder / "wan_vae_random.safetensors")
folder_paths.add_model_folder_path("vae", str(folder))
model = N["LibraGenLoadModel"]().load("(embedded) libragen-sprite", "wan_vae_random.safetensors", "(embedded)")[0]
latent = N["LibraGenSampler"]().sample(model, "a dot", "", frames=5, width=64, height=64, steps=1, shift=3.0,
                                       solver="euler", seed=2, cfg_preset="none")[0]
ours = N["LibraGenDecode"]().decode(model, latent)[0]
vae = core_nodes.VAELoader().load_vae("wan_vae_random.safetensors")[0]
theirs = core_nodes.VAEDecode().decode(vae, latent)[0]
theirs = theirs.reshape(-1, *theirs.shape[-3:])
print(json.dumps({"ours": list(ours.shape), "theirs": list(theirs.shape),
                  "diff": float((ours - theirs).abs().max()), "range": float(ours.std())}))
"""


def test_core_vae_decode_reads_the_sampler_latent(comfyui):
    # the LATENT convention end to end: our sampler's output through ComfyUI's VAELoader +
    # VAEDecode (a random Wan2.1-layout VAE: ComfyUI only builds the released dim-96 layout)
    out = comfyui.run(CORE_DECODE.replace("REPO_DIR", repr(str(REPO))), timeout=400)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"core VAEDecode vs LibraGen Decode on the sampler LATENT: max abs diff {result['diff']:.3g}")
    assert result["ours"] == result["theirs"] == [5, 64, 64, 3]
    assert result["range"] > 1e-3  # not a blank video
    assert result["diff"] < 1e-3, result
