"""The LibraGen nodes on core types inside ComfyUI, against our own sampler and core's guiders.

ComfyUI's side runs in its own interpreter with core nodes only around ours: UNETLoader on a tiny
Wan-layout DiT (head_dim 128, text_dim 4096), ModelSamplingSD3, BasicScheduler, KSamplerSelect,
RandomNoise and SamplerCustomAdvanced, VAELoader on a random Wan2.1-layout VAE (dim 96), the
LibraGen Subject Conditioning (two references of other aspect ratios than the video, one masked)
and the LibraGen guider; core WanPhantomSubjectToVideo, DualCFGGuider and CFGGuider for
comparison. The text features come from the Stand-in Text node (umT5-XXL's width, no 5.7B encoder).
A unet wrapper (core's set_model_unet_function_wrapper) counts the DiT's input rows.

Our side is libragen_core.sampling.sampler.sample on the same weights, with ComfyUI's references,
noise and sigmas. Shown:
- every preset: the guider in ComfyUI equals our sampler within 1e-4 (fp32), phantom, stiv-jit and
  libragen included, and makes the DiT evaluations the preset needs (stiv-jit: 2 per step where
  DualCFGGuider makes 3);
- phantom: the guider equals core DualCFGGuider (regular style, cfg_conds = s_txt = 7.5,
  cfg_cond2_negative = s_img = 5.0) within 1e-5, on our conditioning and on core
  WanPhantomSubjectToVideo's, and still with core's cfg hooks (RescaleCFG, CFG-Zero*) on the model;
- stiv-jit (two passes) with a pre-CFG hook (APG) and RescaleCFG equals core CFGGuider(positive,
  negative_img_text, 7.5) within 1e-5: the hooks see what they see in core's own CFG;
- the Subject Conditioning's outputs carry core's keys, its null references equal core's, and its
  reference latents equal libragen_core's white-padded preprocessing encoded by our VAE.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from libragen_core.conditioning.references import prepare_references
from libragen_core.conditioning.subjects import Subjects
from libragen_core.models.vae_checkpoint import load_vae
from libragen_core.models.wan_vae import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD
from libragen_core.sampling.guidance import PRESETS
from libragen_core.sampling.sampler import initial_noise, sample
from tests.integration.conftest import REPO
from tests.pack import load_pack
from tests.tiny_models import tiny_wan_dit, write_wan_standins

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS, SHIFT, SEED, SIZE, LENGTH = 4, 5.0, 11, 64, 5
PROMPT, NEGATIVE = "Ref 1 and Ref 2 walk along a pier at sunset", "blurry, static"

COMFY_SIDE = r"""
import importlib.util, json, sys
import comfy.cli_args
comfy.cli_args.args.cpu = True
import torch
import folder_paths
import comfy.latent_formats, comfy.samplers
import nodes as core
from comfy_extras import nodes_apg, nodes_cfg, nodes_custom_sampler as cs, nodes_model_advanced as ma, nodes_wan
from safetensors.torch import load_file, save_file

repo, folder, inputs_path, out_path, steps, shift, seed, size, length = sys.argv[1:10]
steps, shift, seed, size, length = int(steps), float(shift), int(seed), int(size), int(length)
spec = importlib.util.spec_from_file_location("libragen_pack", repo + "/__init__.py", submodule_search_locations=[repo])
pack = importlib.util.module_from_spec(spec); sys.modules["libragen_pack"] = pack; spec.loader.exec_module(pack)
N = pack.NODE_CLASS_MAPPINGS
presets = list(pack.nodes.native_guider.PRESETS)
folder_paths.add_model_folder_path("diffusion_models", folder)
folder_paths.add_model_folder_path("vae", folder)
inp = load_file(inputs_path)
texts = json.loads(inp["texts"].numpy().tobytes().decode())
fmt = comfy.latent_formats.Wan21()

model = ma.ModelSamplingSD3().patch(core.UNETLoader().load_unet("tiny_dit.safetensors", "default")[0], shift)[0]
rows = [0]
def count_rows(apply_model, args):
    rows[0] += args["input"].shape[0]
    return apply_model(args["input"], args["timestep"], **args["c"])
model = model.clone()
model.set_model_unet_function_wrapper(count_rows)
vae = core.VAELoader().load_vae("wan_vae_random.safetensors")[0]
text = N["LibraGenStandInText"]()
positive = text.encode(texts["prompt"], 16, 4096)[0]
negative = text.encode(texts["negative"], 16, 4096)[0]
subjects = N["LibraGenSubjectConditioning"]().condition(
    positive, negative, vae, size, size, length, 1, inp["image_1"], image_2=inp["image_2"], mask_2=inp["mask_2"],
    labels="the wide one\nthe tall one")
one = N["LibraGenSubjectConditioning"]().condition(positive, negative, vae, size, size, length, 1, inp["image_1"])
core_one = nodes_wan.WanPhantomSubjectToVideo.execute(positive, negative, vae, size, size, length, 1, inp["image_1"])
sigmas = cs.BasicScheduler().get_sigmas(model, "simple", steps, 1.0)[0]
euler = cs.KSamplerSelect().get_sampler("euler")[0]
noise = cs.RandomNoise().get_noise(seed)[0]

def run(guider, latent):
    rows[0] = 0
    samples = cs.SamplerCustomAdvanced().sample(noise, guider, euler, sigmas, latent)[0]["samples"]
    return fmt.process_in(samples).contiguous(), rows[0]

def ours(m, conds, preset):
    return N["LibraGenDynamicCFGGuider"]().get_guider(m, *conds[:3], preset)[0]

def dual(m, conds, cfg_txt, cfg_img):
    return cs.DualCFGGuider().get_guider(m, conds[0], conds[1], conds[2], cfg_txt, cfg_img, "regular")[0]

out, report = {}, {"rows": {}, "dual_rows": {}}
for preset in presets:
    out[preset], report["rows"][preset] = run(ours(model, subjects, preset), subjects[3])
    # DualCFGGuider cannot schedule: at the preset's first-step scales (cfg1 = s_txt, cfg2 = s_img)
    s_img, s_txt = pack.nodes.native_guider.PRESETS[preset].scales(0.0, float(sigmas[0]))
    dual_out, report["dual_rows"][preset] = run(dual(model, subjects, s_txt, s_img), subjects[3])
    if preset == "phantom":
        out["dual_phantom"] = dual_out
core_conds = core_one.result if hasattr(core_one, "result") else core_one
out["core_ours"], _ = run(ours(model, core_conds, "phantom"), core_conds[3])
out["core_dual"], _ = run(dual(model, core_conds, 7.5, 5.0), core_conds[3])
hooked = ma.RescaleCFG().patch(model, 0.7)[0]
hooked = nodes_cfg.CFGZeroStar.execute(hooked)[0]
out["hooked_ours"], _ = run(ours(hooked, subjects, "phantom"), subjects[3])
out["hooked_dual"], _ = run(dual(hooked, subjects, 7.5, 5.0), subjects[3])
pre = nodes_apg.APG.execute(ma.RescaleCFG().patch(model, 0.7)[0], 0.5, 0.0, 0.0)[0]
out["pre_ours"], _ = run(ours(pre, subjects, "stiv-jit"), subjects[3])
cfg = comfy.samplers.CFGGuider(pre)
cfg.set_conds(subjects[0], subjects[2])
cfg.set_cfg(7.5)
out["pre_cfg"], _ = run(cfg, subjects[3])
out["refs"] = subjects[0][0][1]["time_dim_concat"].contiguous()
out["one_ours"] = one[0][0][1]["time_dim_concat"].contiguous()
out["one_core"] = core_conds[0][0][1]["time_dim_concat"].contiguous()
out["sigmas"] = sigmas.contiguous()
out["noise"] = noise.generate_noise(subjects[3]).contiguous()
report["keys"] = {"ours": [sorted(c[0][1]) for c in subjects[:3]], "core": [sorted(c[0][1]) for c in core_conds[:3]]}
report["null_equal"] = bool(torch.equal(one[2][0][1]["time_dim_concat"], core_conds[2][0][1]["time_dim_concat"]))
report["latent"] = [list(subjects[3]["samples"].shape), list(core_conds[3]["samples"].shape)]
report["steps"] = len(sigmas) - 1
save_file(out, out_path)
print("REPORT" + json.dumps(report))
"""


def _reference_images():
    g = torch.Generator().manual_seed(5)
    wide = torch.rand(1, 40, 88, 3, generator=g)  # other aspect ratios than the square video
    tall = torch.rand(1, 72, 36, 3, generator=g)
    mask = torch.zeros(1, 72, 36)
    mask[:, :, :6] = 1.0  # LoadImage's convention: 1 = transparent, painted white
    return wide, tall, mask


@pytest.fixture(scope="module")
def parity(comfyui, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("native_parity")
    write_wan_standins(tmp / "tiny_dit.safetensors", tmp / "wan_vae_random.safetensors")
    model = tiny_wan_dit()
    wide, tall, mask = _reference_images()
    texts = json.dumps({"prompt": PROMPT, "negative": NEGATIVE}).encode()
    save_file({"image_1": wide, "image_2": tall, "mask_2": mask,
               "texts": torch.tensor(list(texts), dtype=torch.uint8)}, str(tmp / "in.safetensors"))
    out = comfyui.run(COMFY_SIDE, str(REPO), str(tmp), str(tmp / "in.safetensors"), str(tmp / "out.safetensors"),
                      str(STEPS), str(SHIFT), str(SEED), str(SIZE), str(LENGTH), timeout=900)
    report = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("REPORT"))[6:])
    return model, tmp, load_file(str(tmp / "out.safetensors")), report


def _normalize(refs: torch.Tensor) -> torch.Tensor:
    """ComfyUI's VAE-space [1, C, R, h, w] -> our normalized Subjects layout [R, C, 1, h, w]."""
    mean = torch.tensor(WAN21_LATENTS_MEAN).view(1, -1, 1, 1, 1)
    std = torch.tensor(WAN21_LATENTS_STD).view(1, -1, 1, 1, 1)
    return ((refs - mean) / std)[0].transpose(0, 1).unsqueeze(2)


def test_the_guider_in_comfyui_equals_our_sampler_for_every_preset(parity):
    model, _, theirs, report = parity
    features = load_pack().nodes.standin_nodes.standin_features
    context, negative = features(PROMPT, 16), features(NEGATIVE, 16)
    subjects = Subjects(_normalize(theirs["refs"]))
    noise = theirs["noise"]
    assert torch.equal(noise, initial_noise(noise.shape, SEED))  # RandomNoise draws our seed's noise
    print(f"\nsigmas {[round(s, 4) for s in theirs['sigmas'].tolist()]}")
    for preset in PRESETS:
        ours = sample(model, noise, context, negative, subjects, sigmas=theirs["sigmas"].double(), solver="euler",
                      cfg=preset)
        scale = theirs[preset].abs().max().item()
        diff = (ours - theirs[preset]).abs().max().item()
        print(f"{preset:14s} max |guider in ComfyUI - our sampler| = {diff:.2e} (max |x| = {scale:.2f})")
        assert scale > 0.5, preset
        assert diff < 1e-4, preset
    # the references matter: without them the result is far away
    plain = sample(model, noise, context, negative, None, sigmas=theirs["sigmas"].double(), solver="euler",
                   cfg="phantom")
    assert (plain - theirs["phantom"]).abs().max().item() > 1e-2


def test_phantom_preset_equals_core_dual_cfg_guider(parity):
    _, _, theirs, _ = parity
    for ours, core, what in (("phantom", "dual_phantom", "our Subject Conditioning"),
                             ("core_ours", "core_dual", "core WanPhantomSubjectToVideo"),
                             ("hooked_ours", "hooked_dual", "RescaleCFG + CFG-Zero* on the model"),
                             ("pre_ours", "pre_cfg", "stiv-jit vs core CFGGuider, APG + RescaleCFG")):
        diff = (theirs[ours] - theirs[core]).abs().max().item()
        print(f"\n{what}: max |ours - core| = {diff:.2e}")
        assert diff < 1e-5, what
    # the hooks did something (so the equalities above include them)
    assert (theirs["hooked_ours"] - theirs["phantom"]).abs().max().item() > 1e-3
    assert (theirs["pre_ours"] - theirs["stiv-jit"]).abs().max().item() > 1e-3


def test_dit_evaluations_per_video(parity):
    _, _, _, report = parity
    rows, dual, steps = report["rows"], report["dual_rows"], report["steps"]
    print(f"\nDiT evaluations per video ({steps} euler steps, batch 1; DualCFGGuider at the preset's "
          "first-step scales, as it has no schedule):")
    print(f"{'preset':14s} {'LibraGen guider':>16s} {'DualCFGGuider':>14s}")
    for preset in PRESETS:
        print(f"{preset:14s} {rows[preset]:16d} {dual[preset]:14d}")
    # DualCFGGuider skips a pass only when cfg_cond2_negative is 1 (humo's first step, none)
    assert all(dual[p] == 3 * steps for p in PRESETS if p not in ("none", "humo"))
    assert dual["none"] == steps and dual["humo"] == 2 * steps
    assert rows["phantom"] == rows["libragen"] == rows["customcrafter"] == rows["stiv-sit"] == 3 * steps
    assert rows["stiv-jit"] == 2 * steps  # s_img == s_txt: two passes
    assert rows["none"] == steps
    # humo: (full, ref) while sigma > 0.98, then s_img == s_txt: (full, null); two passes throughout
    assert rows["humo"] == 2 * steps


def test_subject_conditioning_is_interchangeable_with_core_and_pads_with_white(parity):
    _, tmp, theirs, report = parity
    assert report["keys"]["ours"] == report["keys"]["core"]  # time_dim_concat on all three
    assert report["null_equal"]
    assert report["latent"][0] == report["latent"][1] == [1, 16, (LENGTH - 1) // 4 + 1, SIZE // 8, SIZE // 8]
    # its references are libragen_core's white-padded preprocessing, encoded by our VAE
    wide, tall, mask = _reference_images()
    pixels = prepare_references([wide[0], tall[0]], SIZE, SIZE, masks=[None, 1.0 - mask[0]])
    vae = load_vae(tmp / "wan_vae_random.safetensors")
    with torch.no_grad():
        ours = vae.encode(pixels.unsqueeze(2))  # normalized, as the DiT sees them
    diff = (ours - _normalize(theirs["refs"])).abs().max().item()
    print(f"\nreference latents, Subject Conditioning in ComfyUI vs libragen_core: max abs diff {diff:.2e}")
    assert diff < 1e-3
    # core WanPhantomSubjectToVideo centre-crops the wide reference to the square frame: other latents
    crop = (theirs["one_ours"] - theirs["one_core"]).abs().max().item()
    print(f"the wide reference, fitted on white vs core's centre crop: max abs diff {crop:.2f}")
    assert crop > 0.1
