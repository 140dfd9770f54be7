"""Merging LoRAs: exact concatenation, SVD truncation, TIES, DARE, and why naive A/B averaging is wrong."""
from __future__ import annotations

import pytest
import torch

from libragen_core.errors import ConfigError, InputError
from libragen_core.lora import LoraFactors, LoraWeights, dare_merge, merge_loras, merged_delta, ties_merge

LAYERS = {"blocks.0.self_attn.q": (24, 24), "blocks.0.ffn.0": (40, 24), "blocks.1.ffn.2": (24, 40)}


def random_lora(rank, alpha, seed, layers=LAYERS) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    return LoraWeights({n: LoraFactors(torch.randn(rank, i, generator=g), torch.randn(o, rank, generator=g), alpha)
                        for n, (o, i) in layers.items()})


@pytest.fixture
def pair():
    # different ranks and alphas, like an in-pair and a cross-pair SFT LoRA
    return random_lora(4, 8.0, seed=1), random_lora(6, 3.0, seed=2)


@pytest.mark.parametrize("method", ["linear", "concat"])
def test_concat_merge_is_the_exact_weighted_sum(pair, method):
    a = 0.3
    res = merge_loras(pair, [a, 1 - a], method)
    for n in LAYERS:
        f = res.lora.factors[n]
        assert f.rank == 10 and f.scale == 1.0
        want = a * pair[0].delta(n, torch.float64) + (1 - a) * pair[1].delta(n, torch.float64)
        assert (f.delta(torch.float64) - want).abs().max() <= 1e-6 * max(1.0, want.abs().max())
        torch.testing.assert_close(f.delta(), merged_delta(pair, [a, 1 - a], n), atol=1e-5, rtol=1e-6)
    assert res.total_rel_error == 0.0


def test_layer_present_in_only_one_lora(pair):
    extra = random_lora(2, 2.0, seed=3, layers={"blocks.3.self_attn.k": (24, 24)})
    res = merge_loras([pair[0], extra], [0.5, 0.25])
    torch.testing.assert_close(res.lora.delta("blocks.3.self_attn.k"), 0.25 * extra.delta("blocks.3.self_attn.k"))
    torch.testing.assert_close(res.lora.delta("blocks.0.ffn.0"), 0.5 * pair[0].delta("blocks.0.ffn.0"))


def test_svd_error_falls_with_rank_and_is_zero_at_full_rank(pair):
    w = [0.6, 0.4]
    errors = []
    for r in (1, 2, 4, 7, 10):
        res = merge_loras(pair, w, "svd", rank=r)
        # the reported error is the true one
        for n in LAYERS:
            exact = merged_delta(pair, w, n).double()
            true = ((res.lora.delta(n, torch.float64) - exact).norm() / exact.norm()).item()
            assert abs(true - res.rel_errors[n]) < 1e-5
        errors.append(res.total_rel_error)
    assert all(e1 > e2 for e1, e2 in zip(errors, errors[1:]))
    assert errors[-1] < 1e-6  # rank 10 = sum of ranks: the sum is exactly representable
    full = merge_loras(pair, w, "svd", rank=64)  # more than needed: capped, still exact
    assert max(f.rank for f in full.lora.factors.values()) <= 24 and full.total_rel_error < 1e-6


def test_svd_matches_a_direct_svd_of_the_full_sum(pair):
    n, r = "blocks.0.ffn.0", 3
    exact = merged_delta(pair, [1.0, 1.0], n).double()
    u, s, vh = torch.linalg.svd(exact, full_matrices=False)
    best = (u[:, :r] * s[:r]) @ vh[:r]
    res = merge_loras(pair, [1.0, 1.0], "svd", rank=r)
    torch.testing.assert_close(res.lora.delta(n, torch.float64), best, atol=1e-4, rtol=1e-4)


def test_naive_averaging_adds_cross_terms():
    x, y = random_lora(4, 4.0, seed=5), random_lora(4, 4.0, seed=6)
    naive = merge_loras([x, y], [0.5, 0.5], "naive")
    n = "blocks.0.self_attn.q"
    exact = merged_delta([x, y], [0.5, 0.5], n)
    got = naive.lora.delta(n)
    # (u1+u2)/2 (d1+d2)/2 = (u1 d1 + u2 d2)/4 + (u1 d2 + u2 d1)/4: the second part is the error
    fx, fy = x.factors[n], y.factors[n]
    cross = 0.25 * (fx.up @ fy.down + fy.up @ fx.down)
    torch.testing.assert_close(got, 0.5 * exact + cross, atol=1e-4, rtol=1e-4)
    assert (got - exact).norm() / exact.norm() > 0.3
    assert abs(naive.rel_errors[n] - ((got - exact).norm() / exact.norm()).item()) < 1e-4


def test_ties_sign_election_on_a_hand_made_example():
    t1 = torch.tensor([[3.0, -1.0, 0.5, 2.0]])
    t2 = torch.tensor([[1.0, -4.0, -2.0, 0.1]])
    t3 = torch.tensor([[-1.0, 2.0, -0.5, 0.2]])
    out = ties_merge([t1, t2, t3], [1 / 3] * 3, density=1.0)
    # entry 0: sum +3 -> keep 3 and 1, mean 2; entry 1: sum -3 -> keep -1, -4 -> -2.5
    # entry 2: sum -2 -> keep -2, -0.5 -> -1.25; entry 3: all positive -> mean 0.7667
    torch.testing.assert_close(out, torch.tensor([[2.0, -2.5, -1.25, 2.3 / 3]]))
    # trimming to the top half of each tensor: t1 keeps 3, 2; t2 keeps -4, -2; t3 keeps -1, 2
    out = ties_merge([t1, t2, t3], [1 / 3] * 3, density=0.5)
    torch.testing.assert_close(out, torch.tensor([[3.0, -4.0, -2.0, 2.0]]))


def test_ties_weights_vote_and_one_sided_weights_give_that_lora():
    t1 = torch.tensor([1.0, 1.0, -1.0])
    t2 = torch.tensor([-3.0, 2.0, 2.0])
    # with weight 0.9 on t1 its signs win even where t2 is bigger
    out = ties_merge([t1, t2], [0.9, 0.1], density=1.0)
    torch.testing.assert_close(out, torch.tensor([1.0, (0.9 + 0.2) / 1.0, -1.0]))
    torch.testing.assert_close(ties_merge([t1, t2], [1.0, 0.0], density=1.0), t1)


def test_ties_equals_peft_ties_for_uniform_weights():
    from peft.utils import merge_utils

    g = torch.Generator().manual_seed(0)
    ts = [torch.randn(16, 12, generator=g) for _ in range(3)]
    ours = ties_merge(ts, [1 / 3] * 3, density=0.4)
    # peft's disjoint merge divides by the number of agreeing tensors with raw weights 1
    ref = merge_utils.ties(ts, torch.ones(3), density=0.4)
    torch.testing.assert_close(ours, ref)


def test_ties_without_trim_or_conflict_is_linear():
    x = random_lora(3, 3.0, seed=7)
    y = LoraWeights({n: LoraFactors(f.down.clone(), f.up * 2, f.alpha) for n, f in x.factors.items()})
    res = merge_loras([x, y], [0.3, 0.7], "ties", density=1.0)
    for n in LAYERS:
        torch.testing.assert_close(res.lora.diffs[n], merged_delta([x, y], [0.3, 0.7], n), atol=1e-5, rtol=1e-5)


def test_ties_and_dare_to_a_rank(pair):
    res = merge_loras(pair, [0.5, 0.5], "ties", density=0.3, rank=5)
    assert all(f.rank == 5 for f in res.lora.factors.values()) and not res.lora.diffs
    assert 0 < res.total_rel_error < 1
    res = merge_loras(pair, [0.5, 0.5], "dare", drop_rate=0.3, rank=5, seed=1)
    assert all(f.rank == 5 for f in res.lora.factors.values())


def test_dare_p0_is_linear_and_seeded(pair):
    w = [0.7, 0.3]
    d0 = merge_loras(pair, w, "dare", drop_rate=0.0)
    for n in LAYERS:
        torch.testing.assert_close(d0.lora.diffs[n], merged_delta(pair, w, n), atol=1e-5, rtol=1e-5)
    a = merge_loras(pair, w, "dare", drop_rate=0.5, seed=11)
    b = merge_loras(pair, w, "dare", drop_rate=0.5, seed=11)
    c = merge_loras(pair, w, "dare", drop_rate=0.5, seed=12)
    for n in LAYERS:
        assert torch.equal(a.lora.diffs[n], b.lora.diffs[n])
        assert not torch.equal(a.lora.diffs[n], c.lora.diffs[n])


def test_dare_drops_the_right_fraction_and_rescales():
    big = torch.full((200, 200), 2.0)
    out = dare_merge([big], [1.0], drop_rate=0.25, seed=3)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    assert torch.allclose(out[kept], torch.tensor(2.0 / 0.75))
    # unbiased: the mean is preserved in expectation
    assert abs(out.mean().item() - 2.0) < 0.03


def test_merge_argument_errors(pair):
    with pytest.raises(ConfigError, match="unknown merge method"):
        merge_loras(pair, [0.5, 0.5], "slerp")
    with pytest.raises(InputError, match="one weight per LoRA"):
        merge_loras(pair, [1.0])
    with pytest.raises(ConfigError, match="needs a target rank"):
        merge_loras(pair, method="svd")
    with pytest.raises(ConfigError, match="use method='svd'"):
        merge_loras(pair, method="linear", rank=4)
    with pytest.raises(ConfigError, match="drop_rate"):
        merge_loras(pair, method="dare", drop_rate=1.0)
    with pytest.raises(ConfigError, match="one rank"):
        merge_loras(pair, method="naive")
    other = random_lora(2, 2.0, seed=9, layers={"blocks.0.ffn.0": (24, 24)})
    with pytest.raises(InputError, match="different models"):
        merge_loras([pair[0], other])
