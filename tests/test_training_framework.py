"""Training framework pieces: strict configs, checkpoint round trip, losses, init, EMA, schedule."""
from __future__ import annotations

import random
import zlib

import numpy as np
import pytest
import torch

from libragen_core.errors import ConfigError
from libragen_core.models.wan_dit import WanDiT, WanDiTConfig
from training.common.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from training.common.config import load_config
from training.common.ema import EMA
from training.common.init import adaln_zero_init
from training.common.losses import flow_matching_loss, noisy_input, sample_sigmas
from training.common.schedule import lr_at
from training.common.schema import ChainConfig


def _load(tmp_path, text: str, overrides=()):
    p = tmp_path / "x.toml"
    p.write_text(text, encoding="utf-8")
    return load_config(ChainConfig, p, overrides)


def test_shipped_config_is_valid():
    from training.common.schema import PostChainConfig

    cfg = load_config(PostChainConfig, "training/configs/spriteworld.toml")
    assert cfg.vae.crop_frames == 17 and cfg.base.phases and cfg.sft_in.enabled


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, "[base.optim]\nlrr = 1e-3\n")
    msg = str(e.value)
    assert "x.toml" in msg and "[base.optim] unknown key 'lrr'" in msg and "did you mean 'lr'?" in msg


def test_wrong_type_and_bad_choice_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"base\.optim\.steps must be an integer, got '10'"):
        _load(tmp_path, '[base.optim]\nsteps = "10"\n')
    with pytest.raises(ConfigError, match=r"base\.sigma_sampling must be .*did you mean 'logit_normal'"):
        _load(tmp_path, '[base]\nsigma_sampling = "logit_norml"\n')
    with pytest.raises(ConfigError, match=r"base\.phases\[0\]\.data\.size must be a list of 2 values"):
        _load(tmp_path, "[[base.phases]]\nuntil_step = 5\n[base.phases.data]\nsize = [64, 64, 3]\n")
    with pytest.raises(ConfigError, match="missing the required key 'until_step'"):
        _load(tmp_path, "[[base.phases]]\nclips = 5\n")
    with pytest.raises(ConfigError, match="crop_frames must be 4k\\+1"):
        _load(tmp_path, "[vae]\ncrop_frames = 4\n")


def test_overrides_apply_and_are_validated(tmp_path):
    cfg = _load(tmp_path, "[base.optim]\nsteps = 10\n", ["base.optim.steps=20", "run.out=/tmp/somewhere"])
    assert cfg.base.optim.steps == 20 and cfg.run.out == "/tmp/somewhere"
    with pytest.raises(ConfigError, match="unknown key 'stepz'"):
        _load(tmp_path, "", ["base.optim.stepz=3"])


def _tiny_dit():
    return WanDiT(WanDiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, text_dim=16, in_dim=4, out_dim=4))


def test_checkpoint_round_trip_restores_everything(tmp_path):
    torch.manual_seed(0)
    dit = _tiny_dit()
    opt = torch.optim.AdamW(dit.parameters(), lr=1e-3)
    ema = EMA(dit, 0.9)
    gen = torch.Generator().manual_seed(5)
    x, c = torch.randn(2, 4, 1, 4, 4), torch.randn(2, 3, 16)
    dit(x, torch.tensor([100.0, 500.0]), c).pow(2).mean().backward()
    opt.step()
    ema.update(dit)
    random.seed(1)
    np.random.seed(2)
    save_checkpoint(tmp_path, 7, modules={"dit": dit}, optimizer=opt, ema={"dit": ema}, generators={"g": gen},
                    state={"data": {"epoch": 1}})
    expect = (random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=gen))

    torch.manual_seed(99)
    dit2 = _tiny_dit()
    opt2 = torch.optim.AdamW(dit2.parameters(), lr=1e-3)
    ema2 = EMA(dit2, 0.9)
    gen2 = torch.Generator()
    info = load_checkpoint(latest_checkpoint(tmp_path), modules={"dit": dit2}, optimizer=opt2, ema={"dit": ema2},
                           generators={"g": gen2})
    assert info == {"step": 7, "state": {"data": {"epoch": 1}}}
    assert all(torch.equal(a, b) for a, b in zip(dit.state_dict().values(), dit2.state_dict().values()))
    assert ema2.updates == 1 and all(torch.equal(ema.shadow[k], ema2.shadow[k]) for k in ema.shadow)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[i]["exp_avg_sq"], s2[i]["exp_avg_sq"]) for i in s1)
    got = (random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=gen2))
    assert got[0] == expect[0] and got[1] == expect[1]
    assert torch.equal(got[2], expect[2]) and torch.equal(got[3], expect[3])


def test_checkpoints_keep_the_newest_and_ignore_partial_folders(tmp_path):
    dit = _tiny_dit()
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, modules={"dit": dit}, keep=2)
    (tmp_path / "step-00000008").mkdir()  # a folder without state.json is never a checkpoint
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 6]
    assert latest_checkpoint(tmp_path).name == "step-00000006"


def test_adaln_zero_blocks_start_as_identity_and_output_zero():
    torch.manual_seed(0)
    dit = adaln_zero_init(_tiny_dit())
    x, c = torch.randn(2, 4, 2, 4, 4), torch.randn(2, 3, 16)
    assert torch.equal(dit(x, torch.tensor([10.0, 900.0]), c), torch.zeros_like(x))
    tokens = torch.randn(2, 8, 32)
    blk = dit.blocks[0]
    from libragen_core.models.rope import rope_frequencies

    freqs = rope_frequencies(torch.arange(2), 2, 2, 16, 10000.0)
    e0 = torch.randn(2, 6, 32)
    e0[:, 2] = 0
    e0[:, 5] = 0
    assert torch.allclose(blk(tokens, e0, freqs, dit.text_embedding(c)), tokens)
    # and it still learns: the head and gates get gradients
    dit(x, torch.tensor([10.0, 900.0]), c).sub(x).pow(2).mean().backward()
    assert dit.head.head.weight.grad.abs().sum() > 0


def test_from_scratch_init_gives_the_text_a_usable_scale():
    # the release's N(0, 0.02) text MLP turns unit-scale features into a context of std ~0.02
    torch.manual_seed(0)
    c = torch.randn(4, 8, 16)
    released = _tiny_dit().text_embedding(c).std()
    fresh = adaln_zero_init(_tiny_dit()).text_embedding(c).std()
    assert released < 0.05 and fresh > 0.2


def test_text_probe_tells_a_text_blind_model_from_one_that_reads_text():
    from training.text_probe import probe

    class Text(torch.nn.Module):  # a word-hash encoder: different captions, different features
        max_length = 4

        def tokenize(self, prompts):
            ids = torch.tensor([[zlib.crc32(w.encode()) % 97 + 1 if w else 0 for w in (p.split() + [""] * 4)[:4]]
                                for p in prompts])
            return ids, (ids > 0).float()

        def forward(self, ids, mask):
            g = torch.Generator().manual_seed(1)
            table = torch.randn(100, 16, generator=g)
            return table[ids] * mask[..., None]

    latents = torch.randn(6, 4, 2, 4, 4)
    captions = [f"a {c} star moves {d}" for c, d in zip("rgbrgb", ["left", "up", "down"] * 2)]
    torch.manual_seed(0)
    blind = adaln_zero_init(_tiny_dit())  # cross-attention output zero: the caption cannot matter
    for blk in blind.blocks:
        torch.nn.init.normal_(blk.modulation, std=0.1)
    torch.nn.init.normal_(blind.head.head.weight, std=0.1)
    r = probe(blind, Text(), latents, captions, [0.9])["0.9"]
    assert r["content_gap"] == 0.0 and r["own"] == r["shuffled"]
    reader = _tiny_dit()  # the release init: random cross-attention, the output depends on the words
    for blk in reader.blocks:  # made loud enough to stand far above float32 rounding of a ~2.0 loss
        torch.nn.init.normal_(blk.cross_attn.o.weight, std=0.5)
    torch.nn.init.normal_(reader.head.head.weight, std=0.1)
    r = probe(reader, Text(), latents, captions, [0.9])["0.9"]
    assert abs(r["content_gap"]) > 1e-4, r


def test_sigma_sampling_and_flow_matching_target():
    g = torch.Generator().manual_seed(0)
    for kind in ("logit_normal", "shifted", "uniform"):
        s = sample_sigmas(4000, kind, shift=3.0, generator=g)
        assert 0 < s.min() and s.max() < 1
    ln = sample_sigmas(4000, "logit_normal", generator=g)
    assert abs(float(ln.median()) - 0.5) < 0.03
    sh = sample_sigmas(4000, "shifted", shift=3.0, generator=g)
    assert float(sh.median()) > 0.7  # shift 3 moves the uniform median 0.5 to 0.75
    x0, eps = torch.randn(3, 4, 2, 4, 4), torch.randn(3, 4, 2, 4, 4)
    sig = torch.tensor([0.1, 0.5, 0.9])
    xt = noisy_input(x0, sig, eps)
    assert torch.allclose(xt[1], 0.5 * eps[1] + 0.5 * x0[1])
    oracle = lambda x, t, ctx, **kw: eps - x0  # noqa: E731  the true velocity: zero loss
    assert float(flow_matching_loss(oracle, x0, None, sig, eps)) == 0.0
    wrong = lambda x, t, ctx, **kw: torch.zeros_like(x)  # noqa: E731
    per = flow_matching_loss(wrong, x0, None, sig, eps, reduce=False)
    assert per.shape == (3,) and torch.allclose(per, (eps - x0).pow(2).flatten(1).mean(1))


def test_lr_warmup_and_cosine():
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(50, 1.0, 10, 100) == 1.0
    assert lr_at(100, 1.0, 10, 100, "cosine", 0.1) == pytest.approx(0.1)


def test_ema_tracks_weights_with_warmup():
    lin = torch.nn.Linear(2, 2)
    ema = EMA(lin, 0.99)
    with torch.no_grad():
        lin.weight.add_(1.0)
    ema.update(lin)  # first update uses decay 1/10: the shadow moves 90% of the way
    assert torch.allclose(ema.shadow["weight"], lin.weight - 0.1)
    with ema.applied(lin):
        assert torch.equal(lin.weight, ema.shadow["weight"])
    assert not torch.equal(lin.weight, ema.shadow["weight"])
