"""The whole pretraining chain at toy size: vae -> base -> export, and the folder generates."""
from __future__ import annotations

import json

import pytest
import torch

from libragen_core.models.bundle import load_model_folder
from libragen_core.pipeline import generate
from training.common.logs import read_metrics
from training.pretrain import main

CONFIG = """
[run]
out = "{out}"
threads = 1

[vae]
dim = 4
crop = 16
init_gain = 1.6
image_steps = 1
image_batch = 2
image_crop = 16
eval_clips = 1
stats_clips = 2
[vae.optim]
steps = 3
batch = 2
log_every = 1
validate_every = 1
[vae.data]
size = [32, 32]
frames = 5

[base]
encode_batch = 4
[base.dit]
dim = 64
ffn_dim = 128
num_heads = 2
num_layers = 1
[base.text]
text_dim = 32
num_layers = 1
num_heads = 2
[base.optim]
steps = 3
batch = 4
ema_decay = 0.9
log_every = 1
validate_every = 2
[base.validation]
prompts = 2
steps = 2
[base.probe]
every = 2
clips = 4
samples = 2
sample_steps = 2
[[base.phases]]
until_step = 3
clips = 8
[base.phases.data]
size = [32, 32]
frames = 5
motions = ["move_left", "move_right"]

[export]
steps = 2
"""


@pytest.mark.slow
def test_pretrain_chain_writes_a_loadable_model_folder(tmp_path):
    cfg = tmp_path / "toy.toml"
    cfg.write_text(CONFIG.format(out=tmp_path / "run"), encoding="utf-8")
    assert main(["--config", str(cfg)]) == 0
    run = tmp_path / "run"
    vae_metrics = read_metrics(run / "vae" / "metrics.jsonl")
    # step 1 is the image phase's end (validated as the VAE will be inflated), 2-3 after it
    psnr = {s: r["val/psnr"] for s, r in vae_metrics.items() if "val/psnr" in r}
    assert sorted(psnr) == [1, 2, 3] and min(psnr.values()) > 0
    assert all((run / "vae" / "samples" / f"recon-{s:08d}.png").is_file() for s in psnr)
    base_metrics = read_metrics(run / "base" / "metrics.jsonl")
    assert {"loss", "val/direction_ok", "val/real_via_codec_direction_ok", "val/text_gap_0.9"} <= set(base_metrics[2])
    assert (run / "base" / "samples" / "t2v-00000003.png").is_file()
    # the direction probe at step 0, every 2 steps and at the end, on the raw weights
    probed = {s: r for s, r in base_metrics.items() if "probe/dir_gap" in r}
    assert sorted(probed) == [0, 2, 3]
    assert {"probe/dir_gap_0.9", "probe/dir_share", "probe/dir_vdiff", "probe/dir_text_diff",
            "probe/dir_sample_ratio", "probe/dir_clips"} <= set(probed[3])
    assert probed[3]["probe/dir_clips"] == 4 and probed[3]["probe/dir_sample_ratio"] > 0
    # a new training writes the full text vocabulary (digits, punctuation) beside its text encoder
    from libragen_core.spriteworld.captions import text_vocabulary

    assert json.loads((run / "model" / "text.vocab.json").read_text())["words"][3:] == text_vocabulary()
    card = json.loads((run / "model" / "model.json").read_text())
    assert card["trained"] and card["tokenizer"] == "text.vocab.json" and card["defaults"]["frames"] == 5
    bundle = load_model_folder(run / "model")
    assert bundle.vae.latent_stats_from_file
    # the folder ships the prompt rewriter's guide for its own caption style
    from libragen_core.rewrite import resolve_style_guide

    assert card["style_guide"] == "style_guide.json"
    assert resolve_style_guide(str(bundle.style_guide_path())).hash == resolve_style_guide("spriteworld").hash
    out = generate(bundle, [], "Video: Ref 1[the red star] moves to the left on a plain white background.",
                   seed=0, steps=2)
    assert out.frames.shape == (5, 32, 32, 3)

    # a rerun of the finished VAE stage leaves its file alone (latent caches are keyed by its digest;
    # runs/sprite6 saw a resumed stage rewrite it with other bytes, and its caches re-encoded)
    vae_file = run / "vae" / "vae.safetensors"
    before = (vae_file.read_bytes(), vae_file.stat().st_mtime_ns)
    assert main(["--config", str(cfg), "--stages", "vae"]) == 0
    assert (vae_file.read_bytes(), vae_file.stat().st_mtime_ns) == before


def test_bad_stage_and_config_errors_exit_with_a_message(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[base.optim]\nlrr = 1\n", encoding="utf-8")
    assert main(["--config", str(cfg)]) == 2
    assert "unknown key 'lrr' (did you mean 'lr'?)" in capsys.readouterr().err
    cfg.write_text("", encoding="utf-8")
    assert main(["--config", str(cfg), "--stages", "sft"]) == 2
    assert "unknown stage(s) ['sft']" in capsys.readouterr().err


def test_vae_decoder_phase_leaves_the_encoder_as_it_was(tmp_path):
    from libragen_core.io.safetensors_file import load_state_dict

    cfg = tmp_path / "toy.toml"
    cfg.write_text(CONFIG.format(out=tmp_path / "run"), encoding="utf-8")
    # steps 0 image, 1 video (whole VAE), 2-3 decoder only
    assert main(["--config", str(cfg), "--stages", "vae", "--set", "vae.optim.steps=4",
                 "--set", "vae.decoder_steps=2", "--set", "vae.optim.checkpoint_every=1",
                 "--set", "vae.optim.keep_checkpoints=10"]) == 0
    folder = tmp_path / "run" / "vae"
    before = load_state_dict(folder / "checkpoints" / "step-00000002" / "model-vae.safetensors")
    after = load_state_dict(folder / "vae.safetensors")
    enc = [k for k in before if k.startswith(("encoder.", "conv1."))]
    dec = [k for k in before if k.startswith("decoder.")]
    assert enc and dec
    assert all(torch.equal(before[k], after[k]) for k in enc)
    assert any(not torch.equal(before[k], after[k]) for k in dec)


def test_subject_loss_weight_covers_the_sprite_and_its_outline():
    import numpy as np

    from training.pretrain.vae import image_grad_l1, subject_loss_weight
    from training.spriteworld.clips import ClipSpec, ProceduralClips

    masks = np.zeros((1, 2, 6, 6), dtype=bool)
    masks[0, 1, 2, 3] = True
    w = subject_loss_weight(masks, 4.0)
    assert w.shape == (1, 1, 2, 6, 6) and (w[0, 0, 0] == 1).all()
    assert (w[0, 0, 1, 1:4, 2:5] == 5).all() and w[0, 0, 1].sum() == 36 + 9 * 4
    assert (subject_loss_weight(masks, 0.0) == 1).all()
    a, b = torch.rand(1, 3, 2, 6, 6), torch.rand(1, 3, 2, 6, 6)
    assert torch.equal(image_grad_l1(a, b, subject_loss_weight(masks, 0.0)), image_grad_l1(a, b))

    clip = ProceduralClips(ClipSpec(seed=3, n_subjects=2))[0]
    assert clip.subject_mask.shape == clip.frames.shape[:3] and clip.subject_mask.any()


def test_frame_diff_loss_sees_motion_not_a_constant_offset():
    from training.pretrain.vae import frame_diff_l1

    x = torch.zeros(1, 3, 3, 4, 4)
    x[:, :, 1, 1, 1] = 1.0  # a dot that appears in frame 1 only
    w = torch.ones(1, 1, 3, 4, 4)
    assert frame_diff_l1(x + 0.5, x, w) == 0  # a steady colour error is not motion
    assert frame_diff_l1(torch.zeros_like(x), x, w) > 0  # losing the dot is
    assert frame_diff_l1(x[:, :, :1], x[:, :, :1], w[:, :, :1]) == 0  # one frame: nothing to compare


def test_adversarial_terms_move_only_their_own_side():
    from training.common.vae_adversarial import PatchDiscriminator, adversarial_losses

    torch.manual_seed(0)
    disc = PatchDiscriminator(8)
    real = torch.rand(2, 3, 2, 16, 16) * 2 - 1
    gen_param = torch.zeros(1, requires_grad=True)  # stands in for the VAE's weights
    fake = real.flip(-1) + gen_param
    g_loss, d_loss = adversarial_losses(disc, disc, real, fake)
    assert disc(real).shape == (4, 1, 4, 4)  # one logit per patch of every frame
    g_loss.backward(retain_graph=True)
    assert gen_param.grad is not None and gen_param.grad.abs().sum() > 0
    assert all(p.grad is None for p in disc.parameters())  # the generator term leaves the critic alone
    gen_param.grad = None
    d_loss.backward()
    assert gen_param.grad is None  # the critic's hinge loss leaves the generator alone
    assert all(p.grad is not None for p in disc.parameters())


@pytest.mark.slow
def test_vae_stage_with_the_adversarial_term_trains_and_checkpoints_the_discriminator(tmp_path):
    from libragen_core.io.safetensors_file import load_state_dict

    cfg = tmp_path / "toy.toml"
    cfg.write_text(CONFIG.format(out=tmp_path / "run"), encoding="utf-8")
    assert main(["--config", str(cfg), "--stages", "vae", "--set", "vae.adversarial=0.1",
                 "--set", "vae.adversarial_start=1", "--set", "vae.disc_dim=8",
                 "--set", "vae.optim.checkpoint_every=1", "--set", "vae.optim.keep_checkpoints=10"]) == 0
    ckpts = tmp_path / "run" / "vae" / "checkpoints"
    d1 = load_state_dict(ckpts / "step-00000001" / "model-disc.safetensors")  # before the term is on
    d3 = load_state_dict(ckpts / "step-00000003" / "model-disc.safetensors")
    assert any(not torch.equal(d1[k], d3[k]) for k in d1)
    steps = [s for s, r in read_metrics(tmp_path / "run" / "vae" / "metrics.jsonl").items() if "adv_d" in r]
    assert steps == [2, 3]
    assert "disc" not in json.dumps(list(load_state_dict(tmp_path / "run" / "vae" / "vae.safetensors")))


def test_text_path_groups_split_every_parameter_once():
    from training.common.schema import BaseStageConfig, DiTShape, TextShape
    from training.pretrain.base import build_dit, build_text, text_path_groups

    bc = BaseStageConfig(dit=DiTShape(dim=32, ffn_dim=64, num_heads=2, num_layers=2), text=TextShape(text_dim=16))
    dit, text = build_dit(bc, 4), build_text(bc)
    rest, path = text_path_groups(dit, text, 0.25)
    assert path["lr_scale"] == 0.25 and "lr_scale" not in rest
    every = list(dit.parameters()) + list(text.parameters())
    assert sorted(map(id, rest["params"] + path["params"])) == sorted(map(id, every))
    cross = {id(p) for b in dit.blocks for p in b.cross_attn.parameters()}
    assert cross | {id(p) for p in text.parameters()} | {id(p) for p in dit.text_embedding.parameters()} == \
        {id(p) for p in path["params"]}
    assert not cross & {id(p) for p in rest["params"]}
