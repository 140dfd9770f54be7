"""Post-training stages end to end at tiny size: SFT x2 -> merge -> DPO x2 -> merge -> final folder."""
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from libragen_core.errors import ConfigError  # noqa: E402
from libragen_core.lora import load_lora, merged_state_dict  # noqa: E402
from libragen_core.models.bundle import load_model_folder  # noqa: E402
from libragen_core.models.wan_vae import VAEConfig, WanVAE  # noqa: E402
from libragen_core.pipeline import generate  # noqa: E402
from tests.tiny_models import tiny_model_folder  # noqa: E402
from training.common.config import from_dict, load_config  # noqa: E402
from training.common.schema import PostChainConfig  # noqa: E402
from training.pipeline import run_pipeline  # noqa: E402

DATA = {"size": [32, 32], "frames": 5}
OPTIM = {"steps": 2, "batch": 2, "log_every": 1, "checkpoint_every": 1}


def _config(tmp: Path) -> dict:
    stage_sft = {"clips": 2, "data": DATA, "lora": {"rank": 2, "alpha": 2.0}, "optim": OPTIM,
                 "validation": {"clips": 0}}
    stage_dpo = {"pairs": 2, "lora": {"rank": 2, "alpha": 2.0}, "optim": OPTIM, "sampler": {"steps": 2, "solver": "euler"},
                 "validation": {"clips": 0}}
    return {
        "run": {"out": str(tmp / "run"), "threads": 2},
        "export": {"folder": str(tmp / "base_model")},
        "sft_in": {**stage_sft, "anonymous_refs": 1.0},
        # sft_cross on straight moves, with the direction probe at every step (issue 21)
        "sft_cross": {**stage_sft, "data": {**DATA, "motions": ["move_left", "move_right"]},
                      "probe": {"every": 1, "clips": 2, "samples": 1, "sample_steps": 1}},
        "merge_sft": {"method": "concat", "weight": 0.25, "sweep": [0.0, 1.0]},
        "dpo_consis": {**stage_dpo, "data": {**DATA, "seed": 200}, "rope_offset": 6.0, "filter": {"auto": False}},
        "dpo_realfake": {**stage_dpo, "data": {**DATA, "seed": 300}, "sft_weight": 0.1,
                         "filter": {"auto": True, "min_identity_margin": -1.0, "max_motion_gap": -1.0}},
        "merge_dpo": {"method": "concat", "weight": 0.25},
    }


@pytest.mark.slow
def test_tiny_chain_produces_a_loadable_model_folder(tmp_path, capsys):
    tiny_model_folder(tmp_path / "base_model")
    cfg = from_dict(PostChainConfig, _config(tmp_path))
    out = run_pipeline(cfg, start="sft_in")
    run = tmp_path / "run"
    assert out == run / "final"
    state = json.loads((run / "pipeline.json").read_text())
    assert state["done"] == ["vae", "base", "export", "sft_in", "sft_cross", "merge_sft", "dpo_consis", "dpo_realfake", "merge_dpo", "final"]

    # LoRA files in ComfyUI's Wan naming
    sft_in = load_lora(run / "sft_in" / "lora.safetensors")
    sft_cross = load_lora(run / "sft_cross" / "lora.safetensors")
    from safetensors import safe_open

    with safe_open(str(run / "sft_in" / "lora.safetensors"), "pt") as f:
        assert all(k.startswith("diffusion_model.blocks.0.") for k in f.keys())
    # merge: dW = a dW_cross + (1 - a) dW_in, exact; the sweep's ends are the single LoRAs
    merged = load_lora(run / "merge_sft" / "lora.safetensors")
    for name in sft_in.layer_names():
        want = 0.25 * sft_cross.delta(name) + 0.75 * sft_in.delta(name)
        torch.testing.assert_close(merged.delta(name), want, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(load_lora(run / "merge_sft" / "sweep" / "a0.00.safetensors").delta(name),
                                   sft_in.delta(name))
        assert float(sft_in.delta(name).abs().max()) > 0  # two optimizer steps moved lora_B off zero

    # sft_in trained on captions without the subjects' looks, sft_cross on the plain ones
    def logged_share(stage):
        rows = [json.loads(line) for line in (run / stage / "metrics.jsonl").read_text().splitlines()]
        return [r["anonymous"] for r in rows if "loss" in r]

    assert logged_share("sft_in") == [1.0, 1.0] and logged_share("sft_cross") == [0.0, 0.0]
    probe_rows = [json.loads(line) for line in (run / "sft_cross" / "metrics.jsonl").read_text().splitlines()]
    probe_rows = {r["step"]: r for r in probe_rows if "probe/dir_gap" in r}
    assert sorted(probe_rows) == [0, 1, 2]
    assert probe_rows[2]["probe/dir_clips"] == 2 and probe_rows[2]["probe/dir_sample_clips"] == 1
    assert probe_rows[2]["probe/dir_vdiff"] > 0 and probe_rows[2]["probe/dir_noise_diff"] > 0
    assert not any("probe/dir_gap" in json.loads(line)
                   for line in (run / "sft_in" / "metrics.jsonl").read_text().splitlines())
    # the reference probe reads the stage's cache and LoRA: references change the loss, both caption forms
    from training.ref_probe import run_probe

    probed = run_probe(cfg, "sft_in", clips=2, sigmas=(0.9,))
    for kind in ("caption", "anonymous"):
        row = probed[kind]["0.9"]
        assert row["refs"] != row["zero_refs"] and row["gain"] == pytest.approx(row["zero_refs"] - row["refs"])
    assert probed["caption"]["0.9"]["refs"] != probed["anonymous"]["0.9"]["refs"]

    # DPO stages: pairs stored, metrics logged, LoRAs written
    recs = [json.loads(line) for line in (run / "dpo_consis" / "pairs" / "pairs.jsonl").read_text().splitlines()]
    assert [r["rope_offsets"] for r in recs] == [[6.0], [6.0]]
    rf = [json.loads(line) for line in (run / "dpo_realfake" / "pairs" / "pairs.jsonl").read_text().splitlines()]
    assert all({"identity_winner", "identity_loser", "motion_gap"} <= set(r["metrics"]) for r in rf)
    logged = [json.loads(line) for line in (run / "dpo_realfake" / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in logged if "loss" in r]
    assert {"implicit_acc", "inside", "reward_margin", "sft_winner"} <= set(train_lines[-1])
    dpo_c, dpo_r = (load_lora(run / s / "lora.safetensors") for s in ("dpo_consis", "dpo_realfake"))

    # final = base + a (cross + consis) + (1 - a) (in + realfake), folded into the DiT
    bundle = load_model_folder(run / "final")
    from libragen_core.io.safetensors_file import load_state_dict

    base_sd = load_state_dict(tmp_path / "base_model" / "dit.safetensors")
    final_lora = load_lora(run / "final.lora.safetensors")
    expect = merged_state_dict(base_sd, final_lora)
    got = bundle.dit.state_dict()
    for k, v in expect.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=1e-6)
    name = sft_in.layer_names()[0]
    total = 0.25 * (sft_cross.delta(name) + dpo_c.delta(name)) + 0.75 * (sft_in.delta(name) + dpo_r.delta(name))
    torch.testing.assert_close(final_lora.delta(name), total, rtol=1e-5, atol=1e-7)
    frames = generate(bundle, [], "Video: a red circle moves left.", frames=5, height=32, width=32, steps=2, cfg="none").frames
    assert frames.shape == (5, 32, 32, 3)

    # rerun: every stage is skipped
    capsys.readouterr()
    run_pipeline(cfg)
    printed = capsys.readouterr().out
    assert printed.count("finished earlier, skipped") == 10 and "running" not in printed


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[sft_in.lora]\nrnak = 4\n")
    with pytest.raises(ConfigError, match=r"\[sft_in.lora\] unknown key 'rnak' \(did you mean 'rank'\?\)"):
        load_config(PostChainConfig, bad)
    bad.write_text("[merge_sft]\nweight = 1.5\n")
    with pytest.raises(ConfigError, match=r"merge_sft.*weight a is in \[0, 1\]"):
        load_config(PostChainConfig, bad)
    bad.write_text("[dpo_consis]\nbeta = -3\n")
    with pytest.raises(ConfigError, match=r"dpo_consis.*beta must be positive"):
        load_config(PostChainConfig, bad)
    bad.write_text("[dpo_realfake.filter]\ndecisions = 3\n")
    with pytest.raises(ConfigError, match=r"dpo_realfake.filter.decisions must be a string"):
        load_config(PostChainConfig, bad)
    bad.write_text("[merge_dpo]\nmethod = 'svd'\n")
    with pytest.raises(ConfigError, match="needs rank"):
        load_config(PostChainConfig, bad)
    with pytest.raises(ConfigError, match="not a stage"):
        run_pipeline(from_dict(PostChainConfig, {"run": {"out": str(tmp_path)}}), start="sft")


def test_sft_stage_refuses_a_missing_base(tmp_path):
    from libragen_core.errors import CheckpointError
    from training.sft import run_sft

    cfg = from_dict(PostChainConfig, {"run": {"out": str(tmp_path / "run")}, "export": {"folder": str(tmp_path / "x")}})
    with pytest.raises(CheckpointError, match="training.pretrain"):
        run_sft(cfg, "sft_in")


def test_shipped_config_holds_the_whole_chain(tmp_path):
    from training.post_common import load_layered

    over = tmp_path / "over.toml"
    over.write_text("[run]\nout = \"elsewhere\"\n")
    files = [ROOT / "training/configs/spriteworld.toml", over]
    cfg = load_layered(files, ["dpo_consis.beta=1000"])
    assert cfg.base.dit.dim == 256 and cfg.sft_in.data.seed == cfg.sft_cross.data.seed  # same clips, other refs
    assert cfg.dpo_consis.beta == 1000.0 and cfg.merge_sft.sweep == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert cfg.run.out == "elsewhere" and cfg.vae.crop_frames == 17  # a later file wins key by key; the rest stays
    with pytest.raises(ConfigError, match=r"\+ .*unknown key 'betta'"):
        load_layered(files, ["dpo_consis.betta=1000"])


def test_triplets_from_a_dataset_folder(tmp_path):
    import numpy as np

    from libragen_core.spriteworld.dataset import write_dataset
    from training.spriteworld.triplets import ManifestTriplets, ProceduralTriplets, TripletCache

    write_dataset(tmp_path / "cross", "cross_pair", 2, seed=3, size=(32, 32), n_frames=5, video_format="gif",
                  scene_options={"n_subjects": 1})
    src = ManifestTriplets(tmp_path / "cross", "cross_pair")
    frames, refs, caption, scene = src[1]
    assert frames.shape == (5, 32, 32, 3) and len(refs) == len(scene["subjects"]) and caption.startswith("Ref 1:")
    assert refs[0][0, 0].tolist() == [255, 255, 255]  # rendered on white
    with pytest.raises(ConfigError, match="--kind in_pair"):
        ManifestTriplets(tmp_path / "cross", "in_pair")
    # the cache holds one latent frame per reference, prepared as at inference
    vae = WanVAE(VAEConfig(dim=4, num_res_blocks=1))
    src_1 = ProceduralTriplets(src.spec.__class__(size=(32, 32), frames=5, n_subjects=1), "in_pair")
    for source in (src_1, src):
        cache = TripletCache.build(tmp_path / "cache", source, 2, lambda px: vae.encode(px, chunked=False), "x",
                                   progress=False)
        x0, r, caps = cache.batch([0, 1])
        assert x0.shape == (2, 16, 2, 4, 4) and r.shape == (2, 16, 1, 4, 4) and len(caps) == 2
        again = TripletCache.build(tmp_path / "cache", source, 2, None, "x", progress=False)  # loaded, not rebuilt
        assert torch.equal(again.refs, cache.refs) and again.scenes == cache.scenes
    assert np.asarray(frames).dtype == np.uint8


@pytest.mark.slow
def test_chain_goes_on_without_a_dpo_stage_whose_pairs_are_all_filtered_out(tmp_path, capsys):
    from libragen_core.errors import InputError
    from training.dpo import run_dpo

    tiny_model_folder(tmp_path / "base_model")
    raw = _config(tmp_path)
    # no pair can beat an identity margin of 10 (identity is in [0, 1]): nothing survives the filter
    raw["dpo_consis"] = {**raw["dpo_consis"], "too_few_pairs": "skip",
                         "filter": {"auto": True, "min_identity_margin": 10.0, "max_motion_gap": -1.0}}
    cfg = from_dict(PostChainConfig, raw)
    assert run_pipeline(cfg, start="sft_in") == tmp_path / "run" / "final"
    run = tmp_path / "run"
    state = json.loads((run / "pipeline.json").read_text())
    assert state["done"][-4:] == ["dpo_consis", "dpo_realfake", "merge_dpo", "final"]
    assert "only 0 of 2 pairs" in state["skipped"]["dpo_consis"] and "dpo_realfake" not in state["skipped"]
    assert not (run / "dpo_consis" / "lora.safetensors").exists()
    assert "SKIPPED" in capsys.readouterr().out

    # the DPO merge's cross side is the cross-pair SFT LoRA alone
    sft_in, sft_cross, dpo_r, final_lora = (load_lora(p) for p in (
        run / "sft_in" / "lora.safetensors", run / "sft_cross" / "lora.safetensors",
        run / "dpo_realfake" / "lora.safetensors", run / "final.lora.safetensors"))
    name = sft_in.layer_names()[0]
    want = 0.25 * sft_cross.delta(name) + 0.75 * (sft_in.delta(name) + dpo_r.delta(name))
    torch.testing.assert_close(final_lora.delta(name), want, rtol=1e-5, atol=1e-7)
    assert "without dpo_consis" in json.loads((run / "final" / "model.json").read_text())["notes"]

    # the ablation reports the row as skipped, with the reason, instead of evaluating it
    from training.spriteworld.ablation import plan_rows

    row = next(r for r in plan_rows(cfg) if r.name == "consis_dpo")
    assert "only 0 of 2 pairs" in row.skipped

    # "stop" (the default) raises, names the switch, and writes nothing
    (run / "dpo_consis" / "DONE.json").unlink()
    stop = from_dict(PostChainConfig, {**raw, "dpo_consis": {**raw["dpo_consis"], "too_few_pairs": "stop"}})
    with pytest.raises(InputError, match=r"only 0 of 2 pairs.*too_few_pairs = 'skip'"):
        run_dpo(stop, "dpo_consis")
    assert not (run / "dpo_consis" / "DONE.json").exists() and not (run / "dpo_consis" / "lora.safetensors").exists()
