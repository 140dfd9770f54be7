"""Consis-DPO and Real-Fake pair generation, the automatic and manual filters, pair storage."""
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from libragen_core.conditioning.subjects import Subjects  # noqa: E402
from libragen_core.errors import ConfigError  # noqa: E402
from libragen_core.models.wan_dit import WanDiT, WanDiTConfig  # noqa: E402
from libragen_core.sampling.sampler import initial_noise, sample  # noqa: E402
from libragen_core.spriteworld.identity import sample_identity  # noqa: E402
from libragen_core.spriteworld.render import render_scene  # noqa: E402
from libragen_core.spriteworld.scene import sample_scene  # noqa: E402
from training.common.schema import SamplerConfig  # noqa: E402
from training.pairs import (  # noqa: E402
    FilterSettings,
    Triplet,
    consis_pair,
    generate_pairs,
    judge,
    load_pairs,
    read_records,
    realfake_pair,
)
from training.spriteworld.validation import pair_metrics  # noqa: E402

CFG = WanDiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=2, in_dim=4, out_dim=4, text_dim=8)
FAST = SamplerConfig(steps=2, shift=3.0, solver="euler", cfg="phantom")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return WanDiT(CFG).eval()


def _triplet(i=0, refs=2):
    g = torch.Generator().manual_seed(100 + i)
    return Triplet(id=f"{i:04d}", context=torch.randn(5, 8, generator=g),
                   refs=torch.randn(refs, 4, 1, 4, 4, generator=g), latents=torch.randn(4, 3, 4, 4, generator=g),
                   caption=f"clip {i}")


NEG = torch.zeros(1, 5, 8)


def test_consis_pair_differs_only_through_rope_offsets(model):
    t = _triplet()
    w0, l0 = consis_pair(model, t, NEG, (4, 3, 4, 4), seed=7, rope_offsets=[0.0, 0.0], settings=FAST)
    assert torch.equal(w0, l0)  # same noise, text, refs: offset 0 gives the very same video
    w, lo = consis_pair(model, t, NEG, (4, 3, 4, 4), seed=7, rope_offsets=[6.0], settings=FAST)
    assert torch.equal(w, w0)
    assert (w - lo).abs().max() > 1e-3
    # the loser is exactly the sampler run with shifted offsets from the same noise
    expect = sample(model, initial_noise((1, 4, 3, 4, 4), 7), t.context[None], NEG,
                    Subjects(t.refs).with_rope_offsets([6.0, 6.0]), steps=2, shift=3.0, solver="euler",
                    cfg="phantom")[0]
    assert torch.equal(lo, expect)


def test_realfake_pair_winner_is_the_real_clip(model):
    t = _triplet(1)
    w, lo = realfake_pair(model, t, NEG, seed=3, settings=FAST)
    assert torch.equal(w, t.latents)
    assert lo.shape == t.latents.shape and not torch.equal(lo, w)


def test_filter_on_rendered_clips():
    """The identity metric ranks the true subject above a different one on the same motion."""
    rng = np.random.default_rng(0)
    scene = sample_scene(rng, n_subjects=1, size=(64, 64), n_frames=9)
    other = dataclasses.replace(scene, subjects=[
        dataclasses.replace(scene.subjects[0], identity=sample_identity(np.random.default_rng(5)))])
    assert other.subjects[0].identity != scene.subjects[0].identity
    real, wrong = render_scene(scene).frames, render_scene(other).frames
    m = pair_metrics(real, wrong, scene.to_dict())
    assert m["identity_winner"] > 0.8 > 0.2 > m["identity_loser"]
    assert judge(m, FilterSettings(min_identity_margin=0.3, max_motion_gap=None)) == (True, "")
    same = pair_metrics(real, real, scene.to_dict())
    assert same["motion_gap"] == 0.0
    kept, reason = judge(same, FilterSettings(min_identity_margin=0.05))
    assert not kept and "identity margin" in reason
    kept, reason = judge(m, FilterSettings(min_identity_margin=0.3, max_motion_gap=0.01))
    assert not kept and "motion gap" in reason


def test_generate_store_resume_and_manual_rejections(model, tmp_path):
    triplets = [_triplet(i) for i in range(3)]
    recs = generate_pairs(model, triplets, tmp_path, "consis", NEG, seed=1, settings=FAST, rope_offsets=[5.0])
    assert [r.id for r in recs] == ["consis-0000", "consis-0001", "consis-0002"] and all(r.kept for r in recs)
    before = (tmp_path / "pairs" / "consis-0001.safetensors").read_bytes()
    decisions = tmp_path / "decisions.json"
    decisions.write_text(json.dumps({"rejected": ["consis-0001"]}))
    recs = generate_pairs(model, triplets, tmp_path, "consis", NEG, seed=1, settings=FAST, rope_offsets=[5.0],
                          decisions=decisions)
    assert (tmp_path / "pairs" / "consis-0001.safetensors").read_bytes() == before  # reused, not redone
    assert [r.kept for r in read_records(tmp_path)] == [True, False, True]
    assert read_records(tmp_path)[1].reason == "rejected in manual review"
    pairs = load_pairs(tmp_path)
    assert [p["id"] for p in pairs] == ["consis-0000", "consis-0002"]
    assert set(pairs[0]) == {"id", "winner", "loser", "context", "refs"}
    decisions.write_text(json.dumps(["consis-0000", "consis-0002"]))
    assert load_pairs(tmp_path, decisions) == []
    decisions.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_pairs(tmp_path, decisions)
