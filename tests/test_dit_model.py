"""WanDiT structure (checkpoint key layout, sizes of the real presets) and forward behaviour."""
import pytest
import torch

from libragen_core.errors import ConfigError, InputError
from libragen_core.models.presets import DIT_PRESETS, build_dit
from libragen_core.models.rope import apply_rope, rope_axes_dims, rope_frequencies
from libragen_core.models.wan_dit import WanDiT, WanDiTConfig

# Tensor and parameter counts of the released Wan2.1 T2V safetensors files.
REAL_FILES = {
    "wan2.1-t2v-1.3b": (825, 1_418_996_800),
    "wan2.1-t2v-14b": (1095, 14_288_491_584),
}

BLOCK_KEYS = {
    "modulation",
    *(f"{a}.{p}.{w}" for a in ("self_attn", "cross_attn") for p in "qkvo" for w in ("weight", "bias")),
    *(f"{a}.{n}.weight" for a in ("self_attn", "cross_attn") for n in ("norm_q", "norm_k")),
    "norm3.weight", "norm3.bias", "ffn.0.weight", "ffn.0.bias", "ffn.2.weight", "ffn.2.bias",
}
TOP_KEYS = {
    "patch_embedding.weight", "patch_embedding.bias",
    "text_embedding.0.weight", "text_embedding.0.bias", "text_embedding.2.weight", "text_embedding.2.bias",
    "time_embedding.0.weight", "time_embedding.0.bias", "time_embedding.2.weight", "time_embedding.2.bias",
    "time_projection.1.weight", "time_projection.1.bias",
    "head.modulation", "head.head.weight", "head.head.bias",
}


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_presets_match_released_files_on_meta(name):
    model = build_dit(name, device="meta")
    sd = model.state_dict()
    n_tensors, n_params = REAL_FILES[name]
    assert len(sd) == n_tensors
    assert sum(v.numel() for v in sd.values()) == n_params
    assert all(v.device.type == "meta" for v in sd.values())
    cfg = DIT_PRESETS[name]
    expected = TOP_KEYS | {f"blocks.{i}.{k}" for i in range(cfg.num_layers) for k in BLOCK_KEYS}
    assert set(sd) == expected
    assert sd["patch_embedding.weight"].shape == (cfg.dim, 16, 1, 2, 2)
    assert sd["blocks.0.modulation"].shape == (1, 6, cfg.dim)
    assert sd["head.modulation"].shape == (1, 2, cfg.dim)
    assert sd["head.head.weight"].shape == (64, cfg.dim)
    assert sd["blocks.0.ffn.0.weight"].shape == (cfg.ffn_dim, cfg.dim)


def test_tiny_preset_is_comfyui_compatible():
    cfg = DIT_PRESETS["tiny"]
    assert cfg.head_dim == 128 and cfg.text_dim == 4096 and cfg.num_heads == cfg.dim // 128


def test_rope_split_follows_wan():
    assert rope_axes_dims(128) == (44, 42, 42)
    assert sum(rope_axes_dims(64)) == 64


def test_rope_rotation_is_relative():
    # Attention scores with RoPE depend only on position differences: shifting every frame by the
    # same fractional offset must leave q.k unchanged, and rotation preserves norms.
    torch.manual_seed(0)
    q, k = torch.randn(1, 12, 2, 128), torch.randn(1, 12, 2, 128)
    pos = torch.tensor([0.0, 1.0, 2.0])
    f0 = rope_frequencies(pos, 2, 2, 128)
    f1 = rope_frequencies(pos + 0.37, 2, 2, 128)
    def scores(f):
        return torch.einsum("blhd,bmhd->bhlm", apply_rope(q, f), apply_rope(k, f))

    torch.testing.assert_close(scores(f0), scores(f1), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(scores(f0), torch.einsum("blhd,bmhd->bhlm", q, k), atol=1e-2)
    torch.testing.assert_close(apply_rope(q, f1).norm(dim=-1), q.norm(dim=-1))
    assert not torch.allclose(apply_rope(q, f0), apply_rope(q, f1))


def _inputs(b=2, f=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 16, f, h, w, generator=g), torch.tensor([250.0, 900.0][:b]),
            torch.randn(b, 7, 4096, generator=g))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_dit("tiny").eval()


def test_forward_shape_dtype_and_nontrivial(tiny):
    x, t, ctx = _inputs()
    with torch.no_grad():
        v = tiny(x, t, ctx)
    assert v.shape == x.shape and v.dtype == x.dtype
    assert torch.isfinite(v).all() and v.std() > 1e-2


def test_batch_items_are_independent(tiny):
    x, t, ctx = _inputs()
    with torch.no_grad():
        both = tiny(x, t, ctx)
        one = tiny(x[1:], t[1:], ctx[1:])
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=1e-5)


def test_frame_pos_default_explicit_and_fractional(tiny):
    x, t, ctx = _inputs()
    with torch.no_grad():
        v = tiny(x, t, ctx)
        v_explicit = tiny(x, t, ctx, frame_pos=torch.arange(3))
        v_batched = tiny(x, t, ctx, frame_pos=torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 7.5]]))
        v_frac = tiny(x, t, ctx, frame_pos=torch.tensor([0.0, 1.0, 2.5]))
    torch.testing.assert_close(v, v_explicit)
    torch.testing.assert_close(v_batched[0], v[0])
    assert not torch.allclose(v_batched[1], v[1], atol=1e-4)
    assert not torch.allclose(v_frac, v, atol=1e-4)
    # a common shift of every temporal position changes nothing (RoPE is relative)
    with torch.no_grad():
        shifted = tiny(x, t, ctx, frame_pos=torch.arange(3) + 4.25)
    torch.testing.assert_close(shifted, v, atol=1e-4, rtol=1e-4)


def test_non_contiguous_latents(tiny):
    x, t, ctx = _inputs(h=8, w=8)
    xt = x.transpose(3, 4)
    assert not xt.is_contiguous()
    with torch.no_grad():
        torch.testing.assert_close(tiny(xt, t, ctx), tiny(xt.contiguous(), t, ctx))
        torch.testing.assert_close(tiny(x[:, :, :2], t, ctx), tiny(x[:, :, :2].contiguous(), t, ctx))


def test_odd_sizes_are_padded_and_cropped(tiny):
    x, t, ctx = _inputs(h=9, w=7)
    with torch.no_grad():
        v = tiny(x, t, ctx)
    assert v.shape == x.shape


SMALL = WanDiTConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2, text_dim=64)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(1)
    model = build_dit(SMALL).train()
    x, t, ctx = _inputs(b=1, f=2)
    ctx = ctx[..., :64]
    grads = []
    for ckpt in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = ckpt
        model(x, t, ctx).square().mean().backward()
        grads.append(model.blocks[0].self_attn.q.weight.grad.clone())
    assert model.gradient_checkpointing is True
    torch.testing.assert_close(grads[0], grads[1])


def test_bf16_model_keeps_caller_dtype():
    torch.manual_seed(2)
    ref = build_dit(SMALL).eval()
    model = build_dit(SMALL, dtype=torch.bfloat16).eval()
    model.load_state_dict(ref.state_dict())
    assert model.blocks[0].ffn[0].weight.dtype == torch.bfloat16
    x, t, ctx = _inputs()
    ctx = ctx[..., :64]
    with torch.no_grad():
        v16 = model(x, t, ctx)
        v32 = ref(x, t, ctx)
    assert v16.dtype == torch.float32
    assert (v16 - v32).abs().max() < 0.1 * v32.abs().max()


def test_bad_inputs_and_configs_are_named(tiny):
    x, t, ctx = _inputs()
    with pytest.raises(InputError, match="latents"):
        tiny(x[:, :4], t, ctx)
    with pytest.raises(InputError, match="text features"):
        tiny(x, t, ctx[..., :100])
    with pytest.raises(InputError, match="frame_pos"):
        tiny(x, t, ctx, frame_pos=torch.arange(5))
    with pytest.raises(InputError, match="frame_pos"):
        tiny(x, t, ctx, frame_pos=torch.tensor(0.0))
    with pytest.raises(ConfigError, match="num_heads"):
        WanDiTConfig(dim=100, ffn_dim=10, num_heads=3, num_layers=1)
    with pytest.raises(ConfigError, match="unknown DiT preset"):
        build_dit("wan9")


def test_gradient_checkpointing_defaults_off():
    assert WanDiT(DIT_PRESETS["tiny"]).gradient_checkpointing is False


def test_compacted_padding_is_exact(tiny, monkeypatch):
    import libragen_core.models.wan_dit as wan_dit

    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 16, 2, 4, 4, generator=g)
    ctx = torch.zeros(3, 40, 4096)
    ctx[0, :7] = torch.randn(7, 4096, generator=g)
    ctx[1, :19] = torch.randn(19, 4096, generator=g)  # item 2 stays all zeros (a dropped prompt)
    ctx[1, 3] = 0.0  # a zero row among the real ones is a duplicate key like any other
    t = torch.tensor([100.0, 500.0, 900.0])
    compact, bias = wan_dit.compact_padding(ctx)
    assert compact.shape[1] == 18 + 1 and bias.shape == (3, 1, 1, 19)
    with torch.no_grad():
        fast = tiny(x, t, ctx)
        monkeypatch.setattr(wan_dit, "compact_padding", lambda c: (c, None))
        full = tiny(x, t, ctx)
    torch.testing.assert_close(fast, full, atol=2e-5, rtol=1e-5)


def test_unpadded_context_is_left_alone():
    from libragen_core.models.wan_dit import compact_padding

    ctx = torch.randn(2, 5, 8)
    ctx[0, 4] = 0.0
    out, bias = compact_padding(ctx)
    assert out is ctx and bias is None


def test_build_dtype_names():
    assert build_dit(SMALL, device="meta", dtype="bf16").head.head.weight.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="fp8 weights come from a file"):
        build_dit(SMALL, device="meta", dtype="fp8")


def test_pooled_text_option_starts_as_the_plain_model_then_reads_the_caption(tmp_path):
    """pooled_text (issue 21): the caption's mean token joins the adaLN modulation; its output layer
    starts at zero, its keys round-trip through a file without metadata."""
    from libragen_core.io.safetensors_file import save_state_dict
    from libragen_core.models.loading import inspect_checkpoint, load_dit

    cfg = dict(dim=32, ffn_dim=64, num_heads=2, num_layers=2, in_dim=4, out_dim=4, text_dim=8)
    torch.manual_seed(0)
    plain = WanDiT(WanDiTConfig(**cfg)).eval()
    pooled = WanDiT(WanDiTConfig(**cfg, pooled_text=True)).eval()
    missing, unexpected = pooled.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == ["pooled_text_embedding.0.bias", "pooled_text_embedding.0.weight",
                                                  "pooled_text_embedding.2.bias", "pooled_text_embedding.2.weight"]
    x = torch.randn(2, 4, 3, 4, 4)
    ctx = torch.zeros(2, 6, 8)
    ctx[:, :3] = torch.randn(2, 3, 8)
    with torch.no_grad():
        assert torch.equal(plain(x, torch.tensor([500.0, 900.0]), ctx), pooled(x, torch.tensor([500.0, 900.0]), ctx))
        torch.nn.init.normal_(pooled.pooled_text_embedding[2].weight)
        a = pooled(x, torch.tensor([500.0, 900.0]), ctx)
        # padding rows do not count in the mean
        more = torch.cat([ctx, torch.zeros(2, 4, 8)], dim=1)
        assert torch.equal(pooled._pooled_text(more), pooled._pooled_text(ctx))
        assert not torch.allclose(a, plain(x, torch.tensor([500.0, 900.0]), ctx))
    path = tmp_path / "pooled.safetensors"
    save_state_dict(pooled.state_dict(), path, metadata={"num_heads": "2"})  # config from the keys
    info = inspect_checkpoint(path)
    assert info.config.pooled_text
    back = load_dit(path)
    with torch.no_grad():
        torch.testing.assert_close(back(x, torch.tensor([500.0, 900.0]), ctx), a)
