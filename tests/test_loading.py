"""Checkpoint identification and strict DiT loading, on small real safetensors files."""
import struct

import pytest
import torch

from libragen_core.errors import CheckpointError, ConfigError
from libragen_core.io.safetensors_file import load_state_dict, save_state_dict
from libragen_core.models.fp8 import Fp8Linear, quantize, weight_bytes
from libragen_core.models.loading import inspect_checkpoint, load_dit, save_dit
from libragen_core.models.presets import build_dit
from libragen_core.models.wan_dit import WanDiT, WanDiTConfig

# head_dim 128 so the number of heads is detectable from shapes alone (dim // 128), as in real files
MICRO = WanDiTConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2, text_dim=64)


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return WanDiT(MICRO).eval()


def _sd(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _inputs(cfg=MICRO):
    g = torch.Generator().manual_seed(3)
    return (torch.randn(1, cfg.in_dim, 2, 4, 4, generator=g), torch.tensor([600.0]),
            torch.randn(1, 5, cfg.text_dim, generator=g))


def _run(model, cfg=MICRO):
    with torch.no_grad():
        return model(*_inputs(cfg)).float()


def test_roundtrip_fp32_bare_keys(tmp_path, micro):
    path = save_state_dict(_sd(micro), tmp_path / "wan.safetensors")
    info = inspect_checkpoint(path)
    assert info.family == "wan2.1-t2v" and info.loadable
    assert info.config == MICRO
    assert info.n_tensors == 15 + 27 * 2
    assert info.n_params == sum(p.numel() for p in micro.parameters())
    assert info.dtypes == {"F32": info.n_tensors} and not info.fp8_scaled and info.key_prefix == ""
    model = load_dit(path)
    assert model.patch_embedding.weight.dtype == torch.float32
    torch.testing.assert_close(_run(model), _run(micro))


@pytest.mark.parametrize("prefix", ["model.diffusion_model.", "diffusion_model."])
def test_prefixed_keys_load(tmp_path, micro, prefix):
    sd = {prefix + k: v for k, v in _sd(micro).items()}
    # an all-in-one file also carries other components; they are counted, not loaded
    sd["first_stage_model.decoder.conv_in.weight"] = torch.zeros(4, 4, 3, 3)
    path = save_state_dict(sd, tmp_path / "prefixed.safetensors")
    info = inspect_checkpoint(path)
    assert info.key_prefix == prefix and info.family == "wan2.1-t2v" and info.other_keys == 1
    torch.testing.assert_close(_run(load_dit(path)), _run(micro))


@pytest.mark.parametrize("dtype,name", [(torch.bfloat16, "BF16"), (torch.float16, "F16")])
def test_half_precision_files(tmp_path, micro, dtype, name):
    path = save_state_dict({k: v.to(dtype) for k, v in _sd(micro).items()}, tmp_path / f"{name}.safetensors")
    info = inspect_checkpoint(path)
    assert info.dtypes == {name: info.n_tensors}
    model = load_dit(path)
    assert {p.dtype for p in model.parameters()} == {dtype}
    out = _run(model)
    ref = _run(micro)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    as32 = load_dit(path, dtype=torch.float32)
    assert {p.dtype for p in as32.parameters()} == {torch.float32}
    assert {p.dtype for p in load_dit(path, dtype="fp32").parameters()} == {torch.float32}
    with pytest.raises(ConfigError, match="unknown weight dtype"):
        load_dit(path, dtype="fp64x")


def _fp8_scaled_file(tmp_path, micro):
    sd = {}
    for k, v in _sd(micro).items():
        if k.endswith(".weight") and v.ndim == 2 and (k.startswith("blocks.") or k.startswith("text_embedding")):
            q, scale = quantize(v)
            sd[k], sd[k[: -len("weight")] + "scale_weight"] = q, scale.reshape(1)
        else:
            sd[k] = v.to(torch.bfloat16)
    sd["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return save_state_dict(sd, tmp_path / "wan_fp8_e4m3fn_scaled.safetensors")


def test_fp8_scaled_file_dequantizes_when_asked_for_bf16(tmp_path, micro):
    path = _fp8_scaled_file(tmp_path, micro)
    info = inspect_checkpoint(path)
    assert info.fp8_scaled and info.family == "wan2.1-t2v"
    assert info.n_tensors == 69 and "F8_E4M3" in info.dtypes and "(fp8 scaled)" in info.summary()
    model = load_dit(path, dtype="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ref = _run(micro)
    assert (_run(model) - ref).abs().max() < 0.1 * ref.abs().max()
    # dequantized weights equal fp8 * scale
    w = model.blocks[0].ffn[0].weight.float()
    assert (w - micro.blocks[0].ffn[0].weight).abs().max() < 0.07 * micro.blocks[0].ffn[0].weight.abs().max()


def test_fp8_scaled_file_kept_in_fp8(tmp_path, micro):
    path = _fp8_scaled_file(tmp_path, micro)
    model = load_dit(path, dtype=torch.float8_e4m3fn)
    lin = model.blocks[1].self_attn.q
    assert isinstance(lin, Fp8Linear) and lin.weight.dtype == torch.float8_e4m3fn
    assert lin.scale_weight.dtype == torch.float32 and lin.scale_weight.item() != 1.0
    assert model.head.head.weight.dtype == torch.bfloat16
    torch.testing.assert_close(_run(model), _run(load_dit(path, dtype="bf16")), atol=2e-2, rtol=2e-2)
    # a non-fp8 file asked for fp8 is quantized on load
    plain = save_state_dict(_sd(micro), tmp_path / "plain.safetensors")
    quantized = load_dit(plain, dtype=torch.float8_e4m3fn)
    assert quantized.blocks[0].ffn[2].weight.dtype == torch.float8_e4m3fn
    ref = _run(micro)
    assert (_run(quantized) - ref).abs().max() < 0.1 * ref.abs().max()


def _expect_error(path, *fragments):
    with pytest.raises(CheckpointError) as exc:
        load_dit(path)
    msg = str(exc.value)
    assert path.name in msg, msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in: {msg}"
    return msg


def test_i2v_file_is_named(tmp_path, micro):
    sd = _sd(micro)
    sd["img_emb.proj.0.weight"] = torch.zeros(8)
    sd["img_emb.proj.0.bias"] = torch.zeros(8)
    for i in range(2):
        sd[f"blocks.{i}.cross_attn.k_img.weight"] = torch.zeros(128, 128)
    path = save_state_dict(sd, tmp_path / "i2v.safetensors")
    assert inspect_checkpoint(path).family == "wan2.1-i2v"
    _expect_error(path, "image-to-video", "img_emb", "unexpected keys", "blocks.0.cross_attn.k_img.weight")


@pytest.mark.parametrize("family,keys,fragment", [
    ("sd1", {"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
             "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (8, 768),
             "first_stage_model.decoder.conv_in.weight": (8, 4, 3, 3)}, "Stable Diffusion 1.x"),
    ("sdxl", {"input_blocks.0.0.weight": (8, 4, 3, 3), "label_emb.0.0.weight": (8, 16)}, "Stable Diffusion XL"),
    ("flux", {"double_blocks.0.img_attn.qkv.weight": (24, 8), "single_blocks.0.linear1.weight": (8, 8),
              "img_in.weight": (8, 64)}, "Flux"),
    ("image-vae", {"encoder.down.0.block.0.conv1.weight": (8, 8, 3, 3),
                   "decoder.up.0.block.0.conv1.weight": (8, 8, 3, 3)}, "image VAE"),
    ("wan-vae", {"encoder.downsamples.0.residual.2.weight": (8, 8, 3, 3, 3),
                 "decoder.upsamples.0.residual.2.weight": (8, 8, 3, 3, 3)}, "Wan video VAE"),
    ("umt5", {"shared.weight": (256384, 2), "encoder.block.0.layer.0.SelfAttention.q.weight": (4, 4)},
     "umT5 text encoder"),
    ("lora", {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": (4, 128),
              "diffusion_model.blocks.0.self_attn.q.lora_B.weight": (128, 4)}, "LoRA"),
    ("unknown", {"foo.weight": (4, 4), "bar.weight": (4, 4)}, "does not recognise"),
    ("not a model", {"step": (1,)}, "not a model"),
])
def test_other_families_are_named(tmp_path, family, keys, fragment):
    path = save_state_dict({k: torch.zeros(s, dtype=torch.float16) for k, s in keys.items()},
                           tmp_path / f"{family.replace(' ', '_')}.safetensors")
    info = inspect_checkpoint(path)
    assert info.family == family
    msg = _expect_error(path, "is not a Wan2.1 text-to-video DiT", fragment)
    if family != "not a model":
        assert "missing keys" in msg and "patch_embedding.weight" in msg


def test_wan22_i2v_channels_are_named(tmp_path):
    torch.manual_seed(0)
    model = WanDiT(WanDiTConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=1, text_dim=64, in_dim=36))
    path = save_state_dict(_sd(model), tmp_path / "wan22_i2v.safetensors")
    assert inspect_checkpoint(path).family == "wan2.2-i2v"
    _expect_error(path, "Wan2.2 image-to-video DiT (36 input channels")


def test_truncated_file(tmp_path, micro):
    path = save_state_dict(_sd(micro), tmp_path / "cut.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    _expect_error(path, "truncated")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    _expect_error(path, "empty")


def test_garbage_file(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(struct.pack("<Q", 12) + b"not json at all" * 10)
    _expect_error(path, "not a valid safetensors file")


def test_pickle_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"\x80\x04 pickle")
    _expect_error(path, "pickle")


def test_wrong_shape_tensor(tmp_path, micro):
    sd = _sd(micro)
    sd["blocks.1.ffn.0.weight"] = torch.zeros(300, 128)
    path = save_state_dict(sd, tmp_path / "shape.safetensors")
    _expect_error(path, "wrong shape", "blocks.1.ffn.0.weight is [300, 128], expected [256, 128]")


def test_missing_key(tmp_path, micro):
    sd = _sd(micro)
    del sd["blocks.1.self_attn.q.bias"]
    path = save_state_dict(sd, tmp_path / "missing.safetensors")
    _expect_error(path, "missing keys (1): blocks.1.self_attn.q.bias")


def test_extra_key(tmp_path, micro):
    sd = _sd(micro)
    sd["blocks.0.self_attn.extra.weight"] = torch.zeros(2)
    path = save_state_dict(sd, tmp_path / "extra.safetensors")
    _expect_error(path, "unexpected keys (1): blocks.0.self_attn.extra.weight")


def test_missing_size_tensor_is_named(tmp_path, micro):
    sd = _sd(micro)
    del sd["blocks.0.ffn.0.weight"]
    path = save_state_dict(sd, tmp_path / "noffn.safetensors")
    _expect_error(path, "blocks.0.ffn.0.weight")


def test_head_count_from_metadata(tmp_path):
    cfg = WanDiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=1, text_dim=32)
    torch.manual_seed(0)
    model = WanDiT(cfg).eval()
    saved = save_dit(model, tmp_path / "meta.safetensors")
    info = inspect_checkpoint(saved)
    assert info.config == cfg
    torch.testing.assert_close(_run(load_dit(saved), cfg), _run(model, cfg))
    bare = save_state_dict(_sd(model), tmp_path / "bare.safetensors")
    _expect_error(bare, "number of attention heads")
    hinted = save_state_dict(_sd(model), tmp_path / "hinted.safetensors", metadata={"num_heads": "2"})
    assert inspect_checkpoint(hinted).config == cfg


def test_tiny_preset_file_loads_strictly(tmp_path):
    torch.manual_seed(0)
    model = build_dit("tiny").eval()
    path = save_state_dict({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()},
                           tmp_path / "tiny.safetensors")
    info = inspect_checkpoint(path)
    assert info.config == model.config
    loaded = load_dit(path, dtype=torch.float32)
    x, t, ctx = torch.randn(1, 16, 2, 4, 4), torch.tensor([10.0]), torch.randn(1, 3, 4096)
    with torch.no_grad():
        ref = model(x, t, ctx)
        assert (loaded(x, t, ctx) - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.parametrize("scaled", [True, False], ids=["scaled", "unscaled"])
def test_default_dtype_keeps_an_fp8_file_in_fp8(tmp_path, micro, scaled):
    path = _fp8_scaled_file(tmp_path, micro)
    if not scaled:  # ComfyUI's plain *_fp8_e4m3fn files: fp8 weights, no scales
        sd = {k: v for k, v in load_state_dict(path).items() if not k.endswith("scale_weight") and k != "scaled_fp8"}
        path = save_state_dict(sd, tmp_path / "wan_fp8_e4m3fn.safetensors")
    default, explicit, bf16 = (load_dit(path, dtype=d) for d in (None, "fp8_e4m3fn", "bf16"))
    for name, p in default.state_dict().items():
        assert p.dtype == explicit.state_dict()[name].dtype, name
        torch.testing.assert_close(p.float(), explicit.state_dict()[name].float(), rtol=0, atol=0)
    lin = default.blocks[0].ffn[0]
    assert isinstance(lin, Fp8Linear) and lin.weight.dtype == torch.float8_e4m3fn
    assert (lin.scale_weight.item() != 1.0) == scaled
    # block linears take 1 byte per weight instead of 2
    assert weight_bytes(default) < 0.75 * weight_bytes(bf16)
    torch.testing.assert_close(_run(default), _run(bf16), atol=2e-2, rtol=2e-2)


def test_14b_memory_with_fp8_block_linears_on_the_meta_device():
    """What loading a 14B fp8 file costs with dtype default (fp8 kept) and with bf16 (dequantized):
    the same layouts load_dit builds, sized without allocating."""
    from libragen_core.models.fp8 import use_fp8_block_linears

    model = build_dit("wan2.1-t2v-14b", device="meta", dtype=torch.bfloat16)
    bf16 = weight_bytes(model) / 2**30
    use_fp8_block_linears(model)
    fp8 = weight_bytes(model) / 2**30
    print(f"\n14B DiT weights: bf16 {bf16:.1f} GiB, fp8 block linears {fp8:.1f} GiB")
    assert round(bf16, 1) == 26.6  # the figure the old default gave for a 14B fp8 file
    assert fp8 < 0.52 * bf16


def test_in_memory_fp8_matches_loaded_fp8(tmp_path, micro):
    import copy

    from libragen_core.models.fp8 import quantize_block_linears

    plain = save_state_dict(_sd(micro), tmp_path / "plain.safetensors")
    converted = quantize_block_linears(copy.deepcopy(micro))
    assert isinstance(converted.blocks[0].cross_attn.o, Fp8Linear)
    assert converted.blocks[0].cross_attn.o.weight.dtype == torch.float8_e4m3fn
    torch.testing.assert_close(_run(converted), _run(load_dit(plain, dtype=torch.float8_e4m3fn)))


@pytest.mark.parametrize("dtype", [None, torch.bfloat16, torch.float8_e4m3fn])
def test_meta_device_gives_the_loaded_layout_without_weights(tmp_path, micro, dtype):
    """What FSDP's other processes build (training/common/fsdp.py): the same names, shapes, dtypes,
    buffers (fp8 scales) and trainable flags as a real load, every tensor on the meta device."""
    path = _fp8_scaled_file(tmp_path, micro)
    real, meta = load_dit(path, dtype=dtype), load_dit(path, device="meta", dtype=dtype)

    def layout(m):
        return ({n: (tuple(p.shape), p.dtype, p.requires_grad) for n, p in m.named_parameters()},
                {n: (tuple(b.shape), b.dtype) for n, b in m.named_buffers()}, type(m.blocks[0].self_attn.q))

    assert layout(real) == layout(meta)
    assert all(t.is_meta for t in (*meta.parameters(), *meta.buffers()))
    assert not any(t.is_meta for t in (*real.parameters(), *real.buffers()))
