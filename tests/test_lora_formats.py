"""LoRA files: ComfyUI-native writing, reading of kohya / diffusers / peft spellings, clear errors."""
from __future__ import annotations

import json

import pytest
import torch

from libragen_core.errors import CheckpointError, InputError
from libragen_core.io.safetensors_file import read_header
from libragen_core.lora import LoraFactors, LoraWeights, from_state_dict, load_lora, save_lora, to_state_dict
from libragen_core.lora.formats import canonical_layer_name, describe

LAYERS = {  # name -> (out, in), names and shapes as in a Wan block with dim 32, ffn 48
    "blocks.0.self_attn.q": (32, 32), "blocks.0.self_attn.o": (32, 32), "blocks.0.cross_attn.k": (32, 32),
    "blocks.1.cross_attn.v": (32, 32), "blocks.1.ffn.0": (48, 32), "blocks.1.ffn.2": (32, 48),
    "blocks.12.self_attn.v": (32, 32),
}


def random_lora(rank=4, alpha=8.0, seed=0, layers=LAYERS) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    return LoraWeights({n: LoraFactors(torch.randn(rank, i, generator=g), torch.randn(o, rank, generator=g), alpha)
                        for n, (o, i) in layers.items()})


def assert_same_deltas(a: LoraWeights, b: LoraWeights, tol=1e-6):
    assert a.layer_names() == b.layer_names()
    for n in a.layer_names():
        torch.testing.assert_close(a.delta(n), b.delta(n), atol=tol, rtol=tol)


def test_comfyui_naming_is_exactly_the_native_wan_form(tmp_path):
    lora = random_lora()
    path = save_lora(lora, tmp_path / "x.safetensors")
    header, meta = read_header(path)
    assert "diffusion_model.blocks.0.self_attn.q.lora_A.weight" in header
    assert header["diffusion_model.blocks.0.self_attn.q.lora_A.weight"]["shape"] == [4, 32]
    assert header["diffusion_model.blocks.1.ffn.0.lora_B.weight"]["shape"] == [48, 4]
    assert header["diffusion_model.blocks.12.self_attn.v.alpha"]["shape"] == []
    assert len(header) == 3 * len(LAYERS)
    assert meta["rank"] == "4" and meta["alpha"] == "8" and meta["base_model"] == "wan2.1"
    assert set(json.loads(meta["targets"])) == {"self_attn.q", "self_attn.o", "cross_attn.k", "cross_attn.v",
                                                "ffn.0", "ffn.2", "self_attn.v"}


@pytest.mark.parametrize("naming", ["comfyui", "kohya", "diffusers", "peft"])
def test_round_trip_in_each_naming(tmp_path, naming):
    lora = random_lora(rank=3, alpha=5.0)
    path = save_lora(lora, tmp_path / f"{naming}.safetensors", naming=naming, method="sft-in-pair")
    back = load_lora(path)
    assert_same_deltas(lora, back, tol=1e-5)
    assert back.metadata["method"] == "sft-in-pair"


def test_key_spellings_of_each_convention():
    kohya = to_state_dict(random_lora(), "kohya")
    assert "lora_unet_blocks_0_self_attn_q.lora_down.weight" in kohya
    assert "lora_unet_blocks_1_ffn_2.lora_up.weight" in kohya
    diffusers = to_state_dict(random_lora(), "diffusers")
    assert "transformer.blocks.0.attn1.to_q.lora_A.weight" in diffusers
    assert "transformer.blocks.0.attn1.to_out.0.lora_B.weight" in diffusers
    assert "transformer.blocks.0.attn2.to_k.lora_A.weight" in diffusers
    assert "transformer.blocks.1.ffn.net.0.proj.lora_A.weight" in diffusers
    assert "transformer.blocks.1.ffn.net.2.lora_B.weight" in diffusers
    assert not any(k.endswith(".alpha") for k in diffusers)


@pytest.mark.parametrize("stem,name", [
    ("diffusion_model.blocks.3.self_attn.q", "blocks.3.self_attn.q"),
    ("model.diffusion_model.blocks.3.ffn.0", "blocks.3.ffn.0"),
    ("lora_unet_blocks_3_cross_attn_k_img", "blocks.3.cross_attn.k_img"),
    ("lora_unet__blocks_0_cross_attn_k", "blocks.0.cross_attn.k"),  # Wan "Fun" LoRAs
    ("lora_unet_blocks_10_ffn_2", "blocks.10.ffn.2"),
    ("lora_unet_text_embedding_0", "text_embedding.0"),
    ("transformer.blocks.3.attn2.add_v_proj", "blocks.3.cross_attn.v_img"),
    ("transformer.condition_embedder.time_proj", "time_projection.1"),
    ("transformer.proj_out", "head.head"),
    ("base_model.model.transformer.blocks.0.attn1.to_out.0", "blocks.0.self_attn.o"),
    ("base_model.model.blocks.0.self_attn.k", "blocks.0.self_attn.k"),
])
def test_canonical_layer_names(stem, name):
    assert canonical_layer_name(stem) == name


def test_reads_peft_adapter_names_and_prefixes():
    lora = random_lora(rank=2, alpha=2.0)
    sd = {}
    for n, f in lora.factors.items():
        sd[f"base_model.model.{n}.lora_A.default.weight"] = f.down
        sd[f"base_model.model.{n}.lora_B.default.weight"] = f.up
    back = from_state_dict(sd)  # no alpha tensors: alpha = rank, scale 1 (= the original's 2/2)
    assert_same_deltas(lora, back)
    # a peft file whose config said alpha=8: the caller passes it
    assert torch.allclose(from_state_dict(sd, alpha=8.0).delta("blocks.0.self_attn.q"),
                          4 * lora.delta("blocks.0.self_attn.q"))


def test_reads_lora_dot_up_down_and_mixed_prefixes():
    lora = random_lora()
    sd = {}
    for i, (n, f) in enumerate(lora.factors.items()):
        stem = (f"diffusion_model.{n}", f"transformer.{n}", "lora_unet_" + n.replace(".", "_"))[i % 3]
        sd[f"{stem}.lora.down.weight"] = f.down
        sd[f"{stem}.lora.up.weight"] = f.up
        sd[f"{stem}.alpha"] = torch.tensor(f.alpha)
    assert_same_deltas(lora, from_state_dict(sd))


def test_full_diff_layers_round_trip(tmp_path):
    lora = random_lora()
    lora.diffs["blocks.5.ffn.0"] = torch.randn(48, 32)
    path = save_lora(lora, tmp_path / "d.safetensors")
    header, meta = read_header(path)
    assert "diffusion_model.blocks.5.ffn.0.diff" in header and meta["diff_layers"] == "1"
    back = load_lora(path)
    assert torch.equal(back.diffs["blocks.5.ffn.0"], lora.diffs["blocks.5.ffn.0"])
    with pytest.raises(InputError, match="full-matrix diff"):
        to_state_dict(lora, "diffusers")


def test_unknown_keys_are_listed():
    sd = to_state_dict(random_lora())
    sd["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"] = torch.zeros(4, 8)
    sd["some_random_tensor"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as e:
        from_state_dict(sd, source="sdxl.safetensors")
    msg = str(e.value)
    assert "sdxl.safetensors" in msg and "2 key(s)" in msg
    assert "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight" in msg and "some_random_tensor" in msg


def test_rank_mismatch_and_missing_partner_are_named():
    sd = to_state_dict(random_lora())
    sd["diffusion_model.blocks.0.self_attn.q.lora_B.weight"] = torch.zeros(32, 5)
    with pytest.raises(CheckpointError, match=r"rank mismatch in layer blocks\.0\.self_attn\.q.*rank 4.*rank 5"):
        from_state_dict(sd)
    sd = to_state_dict(random_lora())
    del sd["diffusion_model.blocks.1.ffn.2.lora_B.weight"]
    with pytest.raises(CheckpointError, match=r"blocks\.1\.ffn\.2 .*no lora_B/lora_up"):
        from_state_dict(sd)


def test_unsupported_variants_and_duplicate_layers():
    sd = to_state_dict(random_lora())
    sd["diffusion_model.blocks.0.self_attn.q.dora_scale"] = torch.ones(1, 32)
    with pytest.raises(CheckpointError, match="DoRA"):
        from_state_dict(sd)
    sd = to_state_dict(random_lora())
    sd.update({k: v for k, v in to_state_dict(random_lora(), "kohya").items() if "blocks_0_self_attn_q" in k})
    with pytest.raises(CheckpointError, match="two .* tensors for layer blocks.0.self_attn.q"):
        from_state_dict(sd)
    with pytest.raises(CheckpointError, match="no tensors"):
        from_state_dict({})


def test_save_refuses_bad_names_and_secret_metadata(tmp_path):
    with pytest.raises(InputError, match=".safetensors"):
        save_lora(random_lora(), tmp_path / "x.pt")
    with pytest.raises(InputError, match="credential"):
        save_lora(random_lora(), tmp_path / "x.safetensors", metadata={"hf_token": "abc"})
    with pytest.raises(InputError, match="does not exist"):
        save_lora(random_lora(), tmp_path / "missing" / "x.safetensors")
    assert not list(tmp_path.iterdir())


def test_bf16_save_keeps_alpha_fp32_and_describe(tmp_path):
    lora = random_lora()
    path = save_lora(lora, tmp_path / "b.safetensors", dtype=torch.bfloat16)
    header, _ = read_header(path)
    assert header["diffusion_model.blocks.0.self_attn.q.lora_A.weight"]["dtype"] == "BF16"
    assert header["diffusion_model.blocks.0.self_attn.q.alpha"]["dtype"] == "F32"
    back = load_lora(path)
    assert_same_deltas(lora, back.to(torch.float32), tol=0.1)
    text = describe(back)
    assert "layers: 7" in text and "ranks: [4]" in text and "blocks: 0..12 (3)" in text


@pytest.mark.parametrize("key,kind", [
    ("diffusion_model.blocks.0.self_attn.q.hada_w1_a", "LoHa"),
    ("lora_unet_blocks_0_ffn_0.lokr_w2", "LoKr"),
    ("diffusion_model.blocks.0.ffn.0.lora_mid.weight", "LoCon"),
    ("diffusion_model.blocks.0.ffn.0.diff_b", "bias"),
])
def test_other_lora_variants_are_named(key, kind):
    sd = to_state_dict(random_lora())
    sd[key] = torch.zeros(2, 2)
    with pytest.raises(CheckpointError, match=kind):
        from_state_dict(sd)
