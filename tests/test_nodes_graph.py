"""The node pack outside ComfyUI: a whole graph built by hand from the node classes, on the
embedded model (load -> subject encode -> schedule -> sample -> decode), plus the node contract
ComfyUI relies on (ids, categories, tooltips) and the LATENT convention."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from libragen_core import pipeline
from libragen_core.conditioning.subjects import Subjects
from libragen_core.errors import InputError
from libragen_core.sampling.guidance import PRESETS, CFGSchedule, CosineRamp, Switch
from tests.pack import load_pack

REPO = Path(__file__).resolve().parents[1]



pack = load_pack()
N = pack.NODE_CLASS_MAPPINGS
SMALL = {"frames": 5, "width": 64, "height": 64, "steps": 2, "shift": 3.0, "solver": "euler", "seed": 7}


@pytest.fixture(scope="module")
def model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return N["LibraGenLoadModel"]().load("(embedded) libragen-sprite", "(embedded)", "(embedded)")[0]


def image(h=48, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((1, h, w, 3), generator=g)


def test_pack_imports_without_comfyui_and_every_node_follows_the_contract():
    assert not pack.nodes.adapter.in_comfyui()
    assert set(N) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    assert {"LibraGenLoadModel", "LibraGenSubjectEncode", "LibraGenCFGSchedule", "LibraGenSampler",
            "LibraGenDecode", "LibraGenLoraMerge"} <= set(N)
    for node_id, cls in N.items():
        assert node_id.startswith("LibraGen")
        assert cls.CATEGORY.startswith("LibraGen/"), node_id
        assert callable(getattr(cls, cls.FUNCTION)) and cls.DESCRIPTION
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        types = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, spec in types.get(section, {}).items():
                assert len(spec) == 2 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
                if isinstance(spec[0], list):
                    assert spec[1].get("default", spec[0][0]) in spec[0], f"{node_id}.{name} default not a choice"


@pytest.mark.slow
def test_full_graph_by_hand_gives_wan_latents_and_image_frames(model):
    subjects = N["LibraGenSubjectEncode"]().encode(model, image(), 64, 64, image_2=image(30, 60, 1),
                                                   label_1="the fox", label_2="")[0]
    assert isinstance(subjects, Subjects) and subjects.labels == ("the fox", "Ref 2")
    assert subjects.latents.shape == (2, 16, 1, 8, 8) and subjects.latents.device.type == "cpu"
    cfg, text = N["LibraGenCFGSchedule"]().build("custom", 1.0, 4.0, 8.0, 5.0, "cosine", 0.1, "sigma")
    assert CFGSchedule.from_json(text) == cfg
    latent = N["LibraGenSampler"]().sample(model, "Ref 1[the fox] jumps", "", cfg_preset="libragen",
                                           subjects=subjects, cfg=cfg, **SMALL)[0]
    assert set(latent) == {"samples"} and latent["samples"].shape == (1, 16, 2, 8, 8)
    frames = N["LibraGenDecode"]().decode(model, latent)[0]
    assert frames.shape == (5, 64, 64, 3) and frames.dtype == torch.float32
    assert 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0

    # the same run through the core pipeline: the node LATENT is the VAE's raw (un-normalized)
    # latents, as ComfyUI's Wan21 latent format expects; decoding agrees with the pipeline's
    prompts = [pipeline.encode_prompts(model.bundle, [p]) for p in ("Ref 1[the fox] jumps", "")]
    normalized = pipeline.sample_latents(model.bundle, subjects, *prompts, 5, 64, 64, 2, 3.0, "euler", cfg, 7)
    vae = model.bundle.vae
    torch.testing.assert_close(latent["samples"], vae.denormalize(normalized), rtol=0, atol=1e-6)
    torch.testing.assert_close(frames, pipeline.decode_frames(model.bundle, normalized)[0], rtol=0, atol=1e-5)
    assert not torch.allclose(latent["samples"], normalized, atol=1e-3)  # raw differs from normalized


def test_decode_accepts_core_latents_from_the_vae_and_round_trips(model):
    vae = model.bundle.vae
    video = torch.rand(1, 3, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        raw = vae.encode_raw(video)  # what core VAEEncode puts into a LATENT
        expected = ((vae.decode_raw(raw) + 1) / 2).clamp(0, 1)[0].permute(1, 2, 3, 0)
    frames = N["LibraGenDecode"]().decode(model, {"samples": raw, "batch_index": [0]})[0]
    torch.testing.assert_close(frames, expected, rtol=0, atol=2e-5)


def test_decode_names_wrong_latents(model):
    dec = N["LibraGenDecode"]()
    with pytest.raises(InputError, match="4 channels but this model's VAE uses 16"):
        dec.decode(model, {"samples": torch.zeros(1, 4, 2, 8, 8)})
    with pytest.raises(InputError, match="video latents"):
        dec.decode(model, {"samples": torch.zeros(1, 16, 8, 8)})


def test_comfy_masks_are_inverted_and_opaque_masks_ignored(model):
    from libragen_pack.nodes.subject_nodes import comfy_mask_to_subject

    img = image(32, 48)
    assert comfy_mask_to_subject(torch.zeros(1, 64, 64), img[0], 1) is None  # LoadImage on an opaque file
    transparent_right = torch.zeros(1, 32, 48)
    transparent_right[:, :, 24:] = 1.0
    subject = comfy_mask_to_subject(transparent_right, img[0], 1)
    assert float(subject[:, :24].min()) == 1.0 and float(subject[:, 24:].max()) == 0.0
    resized = comfy_mask_to_subject(torch.ones(1, 16, 24) * (torch.arange(24) >= 12), img[0], 1)
    assert resized.shape == (32, 48)

    node = N["LibraGenSubjectEncode"]()
    masked = node.encode(model, img, 64, 64, mask_1=transparent_right)[0]
    direct = pipeline.encode_subjects(model.bundle, [img[0]], 64, 64, masks=[subject])
    torch.testing.assert_close(masked.latents, direct.latents.cpu())
    unmasked = node.encode(model, img, 64, 64)[0]
    assert not torch.allclose(masked.latents, unmasked.latents)


def test_subject_encode_refuses_batches_and_orphan_labels(model):
    node = N["LibraGenSubjectEncode"]()
    with pytest.raises(InputError, match="batch of 3 images"):
        node.encode(model, torch.rand(3, 32, 32, 3), 64, 64)
    with pytest.raises(InputError, match="label_3"):
        node.encode(model, image(), 64, 64, label_3="the cat")
    msg = node.VALIDATE_INPUTS(width=64, height=64, label_3="the cat")
    assert "label_3 is 'the cat' but image_3 is not connected" in msg
    assert node.VALIDATE_INPUTS(width=64, height=64, image_3=None, label_3="the cat") is True  # linked
    assert "multiple of 16" in node.VALIDATE_INPUTS(width=70, height=64)


def test_sampler_validation_messages():
    v = N["LibraGenSampler"].VALIDATE_INPUTS
    assert v(frames=17, width=64, height=64, steps=4, shift=3.0, solver="unipc", seed=1, cfg_preset="phantom")
    assert v(frames=18) == "frames 18 is not 4k+1; use 17 or 21."
    assert v(width=72) == "width 72 is not a multiple of 16; use 64 or 80."
    assert "steps 0 is below its minimum 1" in v(steps=0)
    assert "solver 'ddim' is not one of the choices" in v(solver="ddim")
    assert "cfg_preset 'strong'" in v(cfg_preset="strong")
    assert v(frames=None, width=None) is True  # linked inputs are unknown at validation time


def test_sampler_refuses_references_of_another_size(model):
    subjects = N["LibraGenSubjectEncode"]().encode(model, image(), 32, 32)[0]
    with pytest.raises(InputError, match="reference latents are 4x4"):
        N["LibraGenSampler"]().sample(model, "x", "", cfg_preset="none", subjects=subjects, **SMALL)


def test_schedule_node_presets_and_custom_shapes():
    node = N["LibraGenCFGSchedule"]()
    assert node.build("humo", 0, 0, 0, 0, "constant", 0.5, "sigma")[0] is PRESETS["humo"]
    cfg = node.build("custom", 1.0, 4.0, 8.0, 5.0, "cosine", 0.1, "progress")[0]
    assert cfg.s_img == CosineRamp(1.0, 4.0, over="progress")
    sw = node.build("custom", 1.0, 4.0, 8.0, 5.0, "switch", 0.9, "sigma")[0]
    assert sw.s_txt == Switch(8.0, 5.0, at=0.9, over="sigma")
    assert sw.scales(0.0, 0.95) == (1.0, 8.0) and sw.scales(0.5, 0.5) == (4.0, 5.0)
    msg = node.VALIDATE_INPUTS(preset="custom", shape="switch", switch_at=1.0, axis="progress")
    assert "never switches" in msg
    assert "preset 'loud'" in node.VALIDATE_INPUTS(preset="loud")


def test_loader_dtypes_and_missing_files(model, monkeypatch, tmp_path):
    from libragen_core.errors import CheckpointError
    from libragen_core.models.fp8 import Fp8Linear

    loader = N["LibraGenLoadModel"]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp8 = loader.load("(embedded) libragen-sprite", "(embedded)", "(embedded)", "fp8_e4m3fn", "math",
                          "cpu only")[0]
    assert isinstance(fp8.bundle.dit.blocks[0].self_attn.q, Fp8Linear)
    assert fp8.attention == "math" and fp8.offload == "cpu only"
    latent = N["LibraGenSampler"]().sample(fp8, "x", "", cfg_preset="none", **{**SMALL, "steps": 1})[0]
    assert torch.isfinite(latent["samples"]).all()
    monkeypatch.setenv("LIBRAGEN_MODELS_DIR", str(tmp_path))
    with pytest.raises(CheckpointError, match="'gone.safetensors' was not found in .*diffusion_models"):
        loader.load("gone.safetensors", "vae.safetensors", "text.safetensors")
    assert loader.IS_CHANGED("(embedded) libragen-sprite", "(embedded)", "(embedded)") == "[]"


def test_loader_default_dtype_keeps_an_fp8_file_in_fp8(monkeypatch, tmp_path):
    """A scaled-fp8 DiT file (the embedded DiT quantized as ComfyUI's *_fp8_e4m3fn_scaled files are)
    stays fp8 under weight_dtype "default", as its tooltip says; bf16 dequantizes it."""
    from libragen_core.models.bundle import load_embedded
    from libragen_core.models.fp8 import Fp8Linear, quantize_block_linears, weight_bytes
    from libragen_core.models.loading import save_dit

    (tmp_path / "diffusion_models").mkdir()
    save_dit(quantize_block_linears(load_embedded().dit), tmp_path / "diffusion_models" / "sprite_fp8_scaled.safetensors")
    monkeypatch.setenv("LIBRAGEN_MODELS_DIR", str(tmp_path))
    loader = N["LibraGenLoadModel"]()
    default, bf16 = (loader.load("sprite_fp8_scaled.safetensors", "(embedded)", "(embedded)", d, "auto", "cpu only")[0]
                     for d in ("default", "bf16"))
    q = default.bundle.dit.blocks[0].self_attn.q
    assert isinstance(q, Fp8Linear) and q.weight.dtype == torch.float8_e4m3fn
    assert bf16.bundle.dit.blocks[0].self_attn.q.weight.dtype == torch.bfloat16
    assert weight_bytes(default.bundle.dit) < 0.6 * weight_bytes(bf16.bundle.dit)
    latent = N["LibraGenSampler"]().sample(default, "x", "", cfg_preset="none", **{**SMALL, "steps": 1})[0]
    assert torch.isfinite(latent["samples"]).all()
