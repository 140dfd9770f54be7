"""Flow-DPO loss, its split backward, the reference model, and SFT condition dropout."""
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # training/ runs from the repo; it is not an installed package
    sys.path.insert(0, str(ROOT))

from libragen_core.errors import ConfigError  # noqa: E402
from libragen_core.lora import add_lora, disable_adapter, fold_adapters, lora_trainable_parameters  # noqa: E402
from libragen_core.models.wan_dit import WanDiT, WanDiTConfig  # noqa: E402
from training.common.losses import flow_matching_loss  # noqa: E402
from training.flow_dpo import (  # noqa: E402
    DPOBatch,
    condition_dropout,
    flow_dpo_backward,
    flow_dpo_loss,
    split_weights,
)

CFG = WanDiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=2, in_dim=4, out_dim=4, text_dim=8)


def _randomize_adapter(model, name, scale=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_trainable_parameters(model, name):
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def _setup(seed=0, b=2, refs=1):
    torch.manual_seed(seed)
    model = WanDiT(CFG)
    add_lora(model, rank=4, adapter_name="sft")
    _randomize_adapter(model, "sft", seed=seed + 1)
    fold_adapters(model)
    add_lora(model, rank=4, adapter_name="dpo")
    _randomize_adapter(model, "dpo", seed=seed + 2)
    g = torch.Generator().manual_seed(seed + 3)
    shape = (b, 4, 3, 4, 4)
    batch = DPOBatch(winner=torch.randn(shape, generator=g), loser=torch.randn(shape, generator=g),
                     context=torch.randn(b, 5, 8, generator=g),
                     refs=torch.randn(b, 4, refs, 4, 4, generator=g) if refs else None)
    eps = torch.randn(shape, generator=g)
    sigma = torch.rand(b, generator=g) * 0.9 + 0.05
    return model, batch, eps, sigma


def test_loss_on_hand_made_example():
    lw, rw, ll, rl = (torch.tensor([x]) for x in (0.1, 0.2, 0.3, 0.25))
    loss, inside = flow_dpo_loss(lw, rw, ll, rl, beta=10.0)
    # inside = -5 * ((0.1 - 0.2) - (0.3 - 0.25)) = 0.75
    assert inside.item() == pytest.approx(0.75)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.75)))
    # the policy prefers the loser: negative inside, loss above log 2
    loss2, inside2 = flow_dpo_loss(ll, rw, lw, rl, beta=10.0)
    assert inside2.item() < 0 and loss2.item() > math.log(2)


def test_split_weights_are_the_loss_gradient():
    g = torch.Generator().manual_seed(0)
    lw, rw, ll, rl = (torch.rand(5, generator=g, dtype=torch.float64) for _ in range(4))
    lw.requires_grad_(True)
    ll.requires_grad_(True)
    loss, inside = flow_dpo_loss(lw, rw, ll, rl, beta=300.0)
    (loss + 0.5 * lw.mean()).backward()
    g_w, g_l = split_weights(inside, 300.0, sft_weight=0.5)
    torch.testing.assert_close(lw.grad, g_w, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(ll.grad, g_l, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("sft_weight", [0.0, 0.3])
def test_split_backward_equals_joint_backward(sft_weight):
    model, batch, eps, sigma = _setup()
    params = lora_trainable_parameters(model, "dpo")
    stats = {}
    grads = {}
    for split in (True, False):
        for p in params:
            p.grad = None
        stats[split] = flow_dpo_backward(model, batch, eps, sigma, beta=500.0, sft_weight=sft_weight, split=split)
        grads[split] = [p.grad.clone() for p in params]
    assert stats[True].loss == pytest.approx(stats[False].loss, rel=1e-6)
    assert stats[True].accuracy == stats[False].accuracy
    norm = max(float(g.abs().max()) for g in grads[False])
    assert norm > 1e-4  # a real gradient, not zeros compared with zeros
    for a, b in zip(grads[True], grads[False]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6 * max(1.0, norm))
    # only the DPO adapter receives gradients; the base and the folded SFT stay frozen
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n or ".dpo" not in n)


def test_reference_is_the_folded_base_exactly():
    torch.manual_seed(0)
    model = WanDiT(CFG)
    add_lora(model, rank=4, adapter_name="sft")
    _randomize_adapter(model, "sft")
    x = torch.randn(1, 4, 4, 4, 4)
    ctx = torch.randn(1, 5, 8)
    t = torch.tensor([400.0])
    with torch.no_grad():
        sft_out = model(x, t, ctx)
    fold_adapters(model)
    with torch.no_grad():
        folded_out = model(x, t, ctx)
    add_lora(model, rank=4, adapter_name="dpo")
    _randomize_adapter(model, "dpo", seed=5)
    with torch.no_grad():
        policy_out = model(x, t, ctx)
        with disable_adapter(model):
            ref_out = model(x, t, ctx)
    torch.testing.assert_close(folded_out, sft_out, rtol=0, atol=1e-5)  # fold = adapter, up to fp32 rounding
    assert torch.equal(ref_out, folded_out)  # the reference IS the folded model, bit for bit
    assert (policy_out - ref_out).abs().max() > 1e-3
    assert all(p.requires_grad for p in lora_trainable_parameters(model, "dpo"))


def test_identical_pair_has_zero_inside_and_no_gradient():
    """Winner and loser share eps and sigma: the same clip on both sides cancels exactly."""
    model, batch, eps, sigma = _setup()
    same = DPOBatch(winner=batch.winner, loser=batch.winner.clone(), context=batch.context, refs=batch.refs)
    stats = flow_dpo_backward(model, same, eps, sigma, beta=1000.0)
    assert stats.inside == 0.0 and stats.accuracy == 0.0
    assert stats.loss == pytest.approx(math.log(2))
    assert max(float(p.grad.abs().max()) for p in lora_trainable_parameters(model, "dpo")) < 1e-9


def test_policy_equal_to_reference_gives_log2():
    model, batch, eps, sigma = _setup()
    with torch.no_grad():
        for p in lora_trainable_parameters(model, "dpo"):
            if p.shape[1] == 4:  # lora_B [out, rank] back to zero: adapter is a no-op
                p.zero_()
    stats = flow_dpo_backward(model, batch, eps, sigma, beta=1000.0)
    assert stats.loss == pytest.approx(math.log(2), abs=1e-6)


def test_velocity_loss_ignores_reference_frames_and_sees_them():
    model, batch, eps, sigma = _setup(refs=2)
    with torch.no_grad():
        a, b, c = (flow_matching_loss(model, batch.winner, batch.context, sigma, eps, refs=r, reduce=False)
                   for r in (batch.refs, torch.zeros_like(batch.refs), None))
    assert a.shape == (2,) and not torch.allclose(a, b) and not torch.allclose(b, c)


def test_bad_beta_is_named():
    model, batch, eps, sigma = _setup()
    with pytest.raises(ConfigError, match="beta"):
        flow_dpo_backward(model, batch, eps, sigma, beta=0.0)


def test_condition_dropout():
    g = torch.Generator().manual_seed(0)
    refs = torch.randn(400, 2, 1, 2, 2) + 3.0
    ctx = torch.randn(400, 3, 4) + 3.0
    null = torch.zeros(1, 2, 4)
    null[0, 0] = 1.0
    r, c, dr, dt = condition_dropout(refs, ctx, null, p_refs=0.25, p_text=0.1, generator=g)
    assert 60 < int(dr.sum()) < 140 and 15 < int(dt.sum()) < 70
    assert torch.all(r[dr] == 0) and torch.equal(r[~dr], refs[~dr])
    assert torch.equal(c[dt][:, :2], null.expand(int(dt.sum()), -1, -1)) and torch.all(c[dt][:, 2:] == 0)
    assert torch.equal(c[~dt], ctx[~dt])
    r, c, dr, dt = condition_dropout(refs, ctx, null, p_refs=0.0, p_text=0.0, generator=g)
    assert torch.equal(r, refs) and torch.equal(c, ctx) and not dr.any()
    r, c, dr, dt = condition_dropout(refs, ctx, null, p_refs=1.0, p_text=1.0, generator=g)
    assert torch.all(r == 0) and dt.all()
    with pytest.raises(ConfigError, match="ref_dropout"):
        condition_dropout(refs, ctx, null, p_refs=1.5, p_text=0.0)


@pytest.mark.parametrize("split", [True, False])
def test_fp16_loss_scaling_is_refused_for_dpo_split_or_joint(tmp_path, split):
    """Both forms run their own backward passes: a loss scaler would unscale gradients it never
    scaled (the joint form used to be let through)."""
    from training.common.config import load_config
    from training.common.schema import PostChainConfig
    from training.dpo import run_dpo

    config = Path(__file__).resolve().parents[1] / "training" / "configs" / "cpu-smoke.toml"
    cfg = load_config(PostChainConfig, config,
                      [f"run.out={tmp_path}", "run.mixed_precision=fp16", f"dpo_consis.split_backward={str(split).lower()}"])
    with pytest.raises(ConfigError, match="fp16 loss scaling"):
        run_dpo(cfg, "dpo_consis")
