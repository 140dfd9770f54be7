"""The direction-sensitivity probe (training/direction_probe.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from libragen_core.models.wan_dit import WanDiT, WanDiTConfig
from training.direction_probe import combine, directional, flat, loss_probe, sample_probe, swap_directions

CAPTIONS = [
    "Ref 1: a large red square with a white outline.\nVideo: Ref 1[the red square] moves to the left on a plain "
    "sand background.",
    "Ref 1: a large red square with a blue outline.\nVideo: Ref 1[the red square] moves to the right on a sand "
    "gradient.",
]


def test_swap_directions_mirrors_motion_words_and_nothing_else():
    assert swap_directions(CAPTIONS[0]) == CAPTIONS[0].replace("to the left", "to the right")
    assert swap_directions("Ref 2[the blue star] zig-zags to the right; the camera pans left.") == \
        "Ref 2[the blue star] zig-zags to the left; the camera pans right."
    assert swap_directions("it spins counterclockwise, then clockwise") == "it spins clockwise, then counterclockwise"
    assert swap_directions("circle counter-clockwise") == "circle clockwise"
    assert swap_directions("go diagonally up-left towards the top left") == \
        "go diagonally down-right towards the bottom right"
    assert swap_directions("Left it goes, Upward") == "Right it goes, Downward"
    # a bounce is its own mirror image; words that merely contain a direction stay
    same = "Ref 1[the red circle] bounces up and down on a bright downtown background; the light brightens."
    assert swap_directions(same) == same
    assert directional([same, CAPTIONS[1], "", "the red square grows"]) == [1]


class _DirectionReader(nn.Module):
    """A model that knows the true clip of each direction and reads the direction from its text:
    feature 0 of the first token is +1 for 'right', -1 for 'left' (0 = no direction read)."""

    def __init__(self, x_right: torch.Tensor):
        super().__init__()
        self.x_right = nn.Parameter(x_right, requires_grad=False)

    def forward(self, xt, t, context, frame_pos=None):
        sigma = (t / 1000.0).view(-1, 1, 1, 1, 1)
        sign = context[:, 0, 0].view(-1, 1, 1, 1, 1)
        x0 = torch.where(sign > 0, self.x_right, self.x_right.flip(-1)) * sign.abs()
        return (xt - x0) / sigma  # v = eps - x0 when x0 is right


def _encode_direction(captions):
    out = torch.zeros(len(captions), 4, 8)
    for i, c in enumerate(captions):
        out[i, 0, 0] = 1.0 if "right" in c else (-1.0 if "left" in c else 0.0)
        out[i, 1, 1] = float(len(c) % 7)  # the rest of the caption
    return out


def test_a_model_that_reads_direction_has_a_positive_gap_and_one_that_does_not_has_none():
    torch.manual_seed(0)
    x_right = torch.randn(1, 4, 3, 4, 4)
    latents = torch.cat([x_right.flip(-1), x_right, x_right])
    captions = [CAPTIONS[0], CAPTIONS[1], "Ref 1: a red square.\nVideo: Ref 1[the red square] grows on a sand gradient."]
    reader = _DirectionReader(x_right)
    res = loss_probe(reader, _encode_direction, latents, captions, sigmas=(0.5, 0.9), batch=1)
    assert res["clips"] == 2  # the third caption names no direction
    for s in ("0.5", "0.9"):
        assert res[s]["own"] < 1e-8 < res[s]["swapped"]
        # share > 1: the mirrored clip is further from the truth than no caption (a zero clip)
        assert res[s]["gap"] > 0.1 and res[s]["share"] > 1.0
    assert res["vdiff"] > 0.5 and res["text_diff"] > 0
    assert res["gap_se"] < 0.01 * res["gap"]  # a mirrored clip costs the same whatever the noise

    # a real DiT fed features in which left and right are the same: no gap at all, bit for bit
    dit = WanDiT(WanDiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=4, out_dim=4, text_dim=8))
    dit.train()

    def blind(captions):
        return _encode_direction([c.replace("left", "right") for c in captions])

    res = loss_probe(dit, blind, latents, captions, sigmas=(0.6,))
    assert res["gap"] == 0.0 and res["gap_se"] == 0.0 and res["vdiff"] == 0.0 and res["text_diff"] == 0.0
    assert res["0.6"]["empty"] != res["0.6"]["own"]
    assert dit.training  # the training flag is restored
    seeing = loss_probe(dit, _encode_direction, latents, captions, sigmas=(0.6,))
    assert seeing["vdiff"] > 0 and seeing["gap"] != 0.0 and seeing["gap_se"] > 0
    assert {"dir_gap", "dir_gap_0.6", "dir_share_0.6", "dir_vdiff", "dir_clips"} <= set(flat(seeing))
    assert loss_probe(dit, blind, latents[2:], captions[2:]) == {"clips": 0}


def test_combine_pools_groups_of_clips_weighted_by_clips():
    """Clips of other shapes go through loss_probe in separate groups (SFT buckets); the pooled
    gap is the clip-weighted mean and gap_se comes from every clip's gap, not from the groups'
    (a group of one clip has no spread of its own)."""
    torch.manual_seed(0)
    dit = WanDiT(WanDiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=4, out_dim=4, text_dim=8))
    small, large = torch.randn(2, 4, 3, 4, 4), torch.randn(1, 4, 3, 4, 6)
    parts = [loss_probe(dit, _encode_direction, small, CAPTIONS, sigmas=(0.6,)),
             loss_probe(dit, _encode_direction, large, CAPTIONS[:1], sigmas=(0.6,))]
    assert parts[1]["gap_se"] == 0.0  # one clip
    out = combine(parts + [{"clips": 0}])
    assert out["clips"] == 3
    assert out["gap"] == pytest.approx((2 * parts[0]["gap"] + parts[1]["gap"]) / 3, rel=1e-12)
    gaps = np.array(parts[0]["clip_gaps"] + parts[1]["clip_gaps"])
    assert out["gap_se"] == pytest.approx(gaps.std(ddof=1) / 3 ** 0.5, rel=1e-12) and out["gap_se"] > 0
    assert out["0.6"]["own"] == pytest.approx((2 * parts[0]["0.6"]["own"] + parts[1]["0.6"]["own"]) / 3, rel=1e-12)
    assert combine([{"clips": 0}]) == {"clips": 0}


def test_sample_probe_compares_the_direction_swap_with_another_noise():
    def generate(captions, seed):
        rng = np.random.default_rng(seed)
        base = rng.normal(size=(len(captions), 6))
        return base + np.array([[3.0 if "left" in c else 0.0] for c in captions])

    res = sample_probe(generate, CAPTIONS + ["the red square grows"], seed=4)
    assert res["sample_clips"] == 2
    assert abs(res["sample_diff"] - 3.0) < 1e-9 and res["noise_diff"] > 0
    assert res["sample_ratio"] == res["sample_diff"] / res["noise_diff"]
    blind = sample_probe(lambda caps, seed: np.random.default_rng(seed).normal(size=(len(caps), 6)), CAPTIONS, seed=4)
    assert blind["sample_diff"] == 0.0 and blind["sample_ratio"] == 0.0


def test_the_curves_of_runs_plot_from_their_metrics(tmp_path):
    import json

    from PIL import Image

    from training.direction_probe import main

    for name, gap in (("a", 0.0), ("b", 2e-4)):
        folder = tmp_path / name / "base"
        folder.mkdir(parents=True)
        rows = [{"step": s, "probe/dir_gap": gap * s, "probe/dir_text_diff": 0.2 / (1 + s), "probe/dir_share": 0.0,
                 "probe/dir_vdiff": 0.01 * s, "probe/dir_sample_ratio": 0.001 * s} for s in (0, 100, 200)]
        rows += [{"step": s, "loss": 1.0 / s} for s in (25, 50, 200)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "curves.png"
    assert main(["--out", str(out), f"as shipped={tmp_path / 'a'}", f"pooled={tmp_path / 'b'}"]) == 0
    img = Image.open(out)
    assert img.size == (1050, 640) and len(img.getcolors(1 << 16)) > 20
    assert main(["--out", str(out), str(tmp_path / "missing")]) == 2
