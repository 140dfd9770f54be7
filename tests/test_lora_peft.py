"""peft adapters on the tiny Wan DiT: switching off, folding into weights, undo, extract/save/load."""
from __future__ import annotations

import pytest
import torch

from libragen_core.errors import CheckpointError, ConfigError
from libragen_core.lora import (
    DEFAULT_TARGETS,
    LoraFactors,
    LoraWeights,
    adapter_names,
    add_lora,
    base_state_dict,
    disable_adapter,
    extract_lora,
    fold_adapters,
    from_state_dict,
    load_into_adapter,
    load_lora,
    lora_state_dict,
    lora_trainable_parameters,
    merge_lora_into,
    merge_loras,
    merged_state_dict,
    remove_lora,
    save_lora,
)
from libragen_core.models.presets import build_dit


def tiny(seed=0):
    torch.manual_seed(seed)
    return build_dit("tiny").eval()


def inputs(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    return (torch.randn(1, c.in_dim, 2, 4, 4, generator=g), torch.tensor([700.0]),
            torch.randn(1, 6, c.text_dim, generator=g))


def randomize_adapter(model, name="default", seed=2, std=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_trainable_parameters(model, name):
            p.copy_(torch.randn(p.shape, generator=g) * std)


@torch.no_grad()
def run(model, x):
    return model(*x)


def test_add_lora_keeps_names_freezes_base_and_starts_as_identity():
    model = tiny()
    x = inputs(model)
    base = run(model, x)
    keys_before = set(model.state_dict())
    add_lora(model, rank=4, alpha=8)
    assert type(model).__name__ == "WanDiT"
    assert torch.equal(run(model, x), base)  # lora_B starts at zero
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A.default." in n or ".lora_B.default." in n for n in trainable)
    assert len(trainable) == 2 * len(DEFAULT_TARGETS) * model.config.num_layers
    assert set(base_state_dict(model)) == keys_before
    lora = extract_lora(model)
    assert "blocks.1.cross_attn.o" in lora.factors and "head.head" not in lora.factors
    assert lora.factors["blocks.0.ffn.0"].down.shape == (4, model.config.dim)
    assert lora.factors["blocks.0.ffn.0"].scale == 2.0


def test_adapter_changes_output_and_disable_gives_base_exactly():
    model = tiny()
    x = inputs(model)
    base = run(model, x)
    add_lora(model, rank=4, alpha=4)
    randomize_adapter(model)
    adapted = run(model, x)
    assert (adapted - base).abs().max() > 1e-3
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    with disable_adapter(model):
        assert torch.equal(run(model, x), base)
    assert torch.equal(run(model, x), adapted)
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}


def test_disable_adapter_keeps_gradients_flowing_afterwards():
    model = tiny()
    x = inputs(model)
    add_lora(model, rank=2)
    randomize_adapter(model)
    with torch.no_grad(), disable_adapter(model):
        ref = model(*x)
    loss = (model(*x) - ref).square().mean()
    loss.backward()
    grads = [p.grad for p in lora_trainable_parameters(model)]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_folded_model_equals_adapter_model_and_restore_is_exact():
    model = tiny()
    x = inputs(model)
    add_lora(model, rank=4, alpha=8)
    randomize_adapter(model)
    adapted = run(model, x)
    lora = extract_lora(model)
    remove_lora(model)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    backup = merge_lora_into(model, lora, strength=1.0)
    assert len(backup) == len(lora)
    torch.testing.assert_close(run(model, x), adapted, atol=1e-5, rtol=1e-5)
    backup.restore()
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


def test_strength_scales_the_delta_and_merged_state_dict_agrees():
    model = tiny()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(3)
    d = model.config.dim
    lora = LoraWeights({"blocks.0.self_attn.q": LoraFactors(torch.randn(2, d, generator=g),
                                                            torch.randn(d, 2, generator=g), 4.0)})
    merge_lora_into(model, lora, strength=0.5)
    w = model.state_dict()["blocks.0.self_attn.q.weight"]
    torch.testing.assert_close(w, sd["blocks.0.self_attn.q.weight"] + 0.5 * lora.delta("blocks.0.self_attn.q"))
    assert torch.equal(merged_state_dict(sd, lora, 0.5)["blocks.0.self_attn.q.weight"], w)


def test_bf16_fold_rounds_once_and_restores_bitwise():
    model = tiny().to(torch.bfloat16)
    lora = LoraWeights({"blocks.1.ffn.2": LoraFactors(torch.randn(3, model.config.ffn_dim) * 0.01,
                                                      torch.randn(model.config.dim, 3) * 0.01, 3.0)})
    w0 = model.blocks[1].ffn[2].weight.detach().clone()
    backup = merge_lora_into(model, lora)
    want = (w0.float() + lora.delta("blocks.1.ffn.2")).to(torch.bfloat16)
    assert torch.equal(model.blocks[1].ffn[2].weight, want)
    backup.restore()
    assert torch.equal(model.blocks[1].ffn[2].weight, w0)


def test_merging_two_adapters_then_folding_equals_weighted_adapters():
    """The SFT merge end to end: two trained LoRAs, concatenated exactly, folded into the base."""
    model = tiny()
    x = inputs(model)
    add_lora(model, rank=4, alpha=4, adapter_name="in_pair")
    randomize_adapter(model, "in_pair", seed=5)
    add_lora(model, rank=2, alpha=4, adapter_name="cross_pair", targets=("self_attn.q", "ffn.0"))
    randomize_adapter(model, "cross_pair", seed=6)
    assert adapter_names(model) == ["cross_pair", "in_pair"]
    assert all(p.requires_grad == (".cross_pair." in n) for n, p in model.named_parameters())
    lin, cross = extract_lora(model, "in_pair"), extract_lora(model, "cross_pair")
    stacked = run(model, x)  # both adapters active at full strength
    a = 0.4
    merged = merge_loras([cross, lin], [a, 1 - a], "concat").lora
    remove_lora(model)
    base = run(model, x)
    # reference: the two LoRAs folded one after the other with strengths a and 1-a
    backup = merge_lora_into(model, cross, a)
    merge_lora_into(model, lin, 1 - a, backup=backup)
    want = run(model, x)
    backup.restore()
    assert torch.equal(run(model, x), base)
    backup = merge_lora_into(model, merge_loras([cross, lin], [1.0, 1.0]).lora)
    torch.testing.assert_close(run(model, x), stacked, atol=1e-5, rtol=1e-5)
    backup.restore()
    merge_lora_into(model, merged)
    torch.testing.assert_close(run(model, x), want, atol=1e-5, rtol=1e-5)


def test_extract_save_load_into_a_fresh_adapter(tmp_path):
    model = tiny()
    x = inputs(model)
    add_lora(model, rank=4, alpha=16, dropout=0.1)
    randomize_adapter(model)
    want = run(model, x)  # eval mode: dropout off
    path = save_lora(extract_lora(model), tmp_path / "sft.safetensors", method="sft")
    assert set(load_lora(path).factors) == set(extract_lora(model).factors)
    other = tiny()
    add_lora(other, rank=4, alpha=1)  # alpha differs: the file's alpha/rank must win
    load_into_adapter(other, load_lora(path))
    torch.testing.assert_close(run(other, x), want, atol=1e-6, rtol=1e-6)


def test_lora_state_dict_uses_comfyui_names():
    model = tiny()
    add_lora(model, rank=2, targets=("cross_attn.k",))
    sd = lora_state_dict(model)
    assert sorted(sd) == sorted(
        f"diffusion_model.blocks.{b}.cross_attn.k.{s}"
        for b in range(model.config.num_layers) for s in ("lora_A.weight", "lora_B.weight", "alpha"))


def test_rslora_scale_is_carried_in_alpha():
    model = tiny()
    add_lora(model, rank=4, alpha=8, use_rslora=True, targets=("ffn.0",))
    f = extract_lora(model).factors["blocks.0.ffn.0"]
    assert f.scale == pytest.approx(8 / 2)  # alpha / sqrt(rank)


def test_errors_name_the_problem():
    model = tiny()
    with pytest.raises(ConfigError, match="self_attn.qq"):
        add_lora(model, rank=2, targets=("self_attn.qq",))
    with pytest.raises(ConfigError, match="positive integer"):
        add_lora(model, rank=0)
    add_lora(model, rank=2)
    with pytest.raises(ConfigError, match="already has"):
        add_lora(model, rank=2)
    wrong = LoraWeights({"blocks.0.self_attn.q": LoraFactors(torch.zeros(2, 64), torch.zeros(64, 2), 2)})
    with pytest.raises(CheckpointError, match="another size"):
        merge_lora_into(model, wrong)
    deeper = LoraWeights({"blocks.7.self_attn.q": LoraFactors(torch.zeros(2, 256), torch.zeros(256, 2), 2)})
    with pytest.raises(CheckpointError, match="blocks.7.self_attn.q"):
        merge_lora_into(model, deeper)


def test_fold_into_scaled_fp8_linear_keeps_scale_and_restores():
    from libragen_core.models.fp8 import Fp8Linear, dequantize, quantize

    g = torch.Generator().manual_seed(4)
    dense = torch.randn(32, 16, generator=g) * 0.2
    layer = Fp8Linear(16, 32, bias=False)
    q, scale = quantize(dense)
    with torch.no_grad():
        layer.weight.copy_(q)
        layer.scale_weight.copy_(scale)
    holder = torch.nn.Module()
    holder.blocks = torch.nn.ModuleList([torch.nn.Module()])
    holder.blocks[0].ffn = torch.nn.Sequential(layer)
    lora = LoraWeights({"blocks.0.ffn.0": LoraFactors(torch.randn(2, 16, generator=g) * 0.1,
                                                      torch.randn(32, 2, generator=g) * 0.1, 2.0)})
    w0 = layer.weight.detach().clone()
    backup = merge_lora_into(holder, lora)
    assert layer.weight.dtype == torch.float8_e4m3fn and torch.equal(layer.scale_weight, scale)
    real = dequantize(layer.weight, layer.scale_weight, torch.float32)
    want = dequantize(w0, scale, torch.float32) + lora.delta("blocks.0.ffn.0")
    assert (real - want).abs().max() <= 0.07 * want.abs().max()  # fp8 e4m3 has a 3-bit mantissa
    assert (real - dequantize(w0, scale, torch.float32)).abs().max() > 0.01
    backup.restore()
    assert torch.equal(layer.weight.view(torch.uint8), w0.view(torch.uint8))


def test_fold_adapters_then_a_dpo_adapter_on_top():
    model = tiny()
    x = inputs(model)
    add_lora(model, rank=4, adapter_name="sft")
    randomize_adapter(model, "sft")
    sft_out = run(model, x)
    backup = fold_adapters(model)
    assert adapter_names(model) == [] and type(model.blocks[0].self_attn.q) is torch.nn.Linear
    torch.testing.assert_close(run(model, x), sft_out, atol=1e-5, rtol=1e-5)
    add_lora(model, rank=2, adapter_name="dpo")
    randomize_adapter(model, "dpo", seed=9)
    with disable_adapter(model):  # the DPO reference is the SFT model
        torch.testing.assert_close(run(model, x), sft_out, atol=1e-5, rtol=1e-5)
    remove_lora(model)
    backup.restore()
    with torch.no_grad():
        assert torch.equal(run(model, x), run(tiny(), x))


def test_reads_what_peft_itself_exports():
    from peft import get_peft_model_state_dict

    model = tiny()
    add_lora(model, rank=4, alpha=12)
    randomize_adapter(model)
    exported = get_peft_model_state_dict(model)  # peft's own export of an injected adapter
    assert any(k.endswith(".lora_A.weight") for k in exported)
    theirs = from_state_dict(exported, alpha=12)  # peft keeps alpha in its config
    ours = extract_lora(model)
    assert theirs.layer_names() == ours.layer_names()
    for n in ours.layer_names():
        torch.testing.assert_close(theirs.delta(n), ours.delta(n))
