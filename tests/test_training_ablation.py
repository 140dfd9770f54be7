"""training.spriteworld.ablation on a toy run folder: rows, missing rows, the bounds, outputs, the row cache."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from libragen_core.errors import ConfigError  # noqa: E402
from libragen_core.lora import LoraFactors, LoraWeights, linear_layers, save_lora  # noqa: E402
from libragen_core.models.loading import load_dit  # noqa: E402
from tests.tiny_models import tiny_model_folder  # noqa: E402
from training.common.config import from_dict  # noqa: E402
from training.common.schema import PostChainConfig  # noqa: E402
from training.spriteworld.ablation import (  # noqa: E402
    CFG_PRESETS,
    Settings,
    main,
    normalized,
    plan_rows,
    run_ablation,
    select_rows,
)


def _random_lora(base: Path, path: Path, seed: int) -> None:
    """A LoRA on the toy DiT's attention layers, big enough to change its videos."""
    g = torch.Generator().manual_seed(seed)
    dit = load_dit(base / "dit.safetensors")
    factors = {}
    for name, layer in linear_layers(dit).items():
        if ".self_attn." in name or ".cross_attn." in name:
            out_f, in_f = layer.weight.shape
            factors[name] = LoraFactors(torch.randn(2, in_f, generator=g) * 0.5, torch.randn(out_f, 2, generator=g) * 0.5, 2.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_lora(LoraWeights(factors), path, base_model="libragen-sprite")


def _toy_run(tmp: Path) -> PostChainConfig:
    run = tmp / "run"
    tiny_model_folder(run / "model")
    _random_lora(run / "model", run / "sft_in" / "lora.safetensors", 1)
    _random_lora(run / "model", run / "sft_cross" / "lora.safetensors", 2)
    return from_dict(PostChainConfig, {"run": {"out": str(run), "threads": 1}, "merge_sft": {"sweep": [0.0, 1.0]}})


TINY = Settings(suite="small", split="heldout", cases=1, size=32, frames=5, steps=2, progress=False)


def test_rows_name_what_is_missing_and_the_stage_that_writes_it(tmp_path):
    cfg = _toy_run(tmp_path)
    rows = {r.name: r for r in plan_rows(cfg)}
    assert list(rows) == ["base", "sft_in", "sft_cross", "merge_a0.00", "merge_a1.00", "consis_dpo", "realfake_dpo",
                          "dpo_merged"]
    assert not rows["base"].refs and not rows["sft_in"].missing and not rows["sft_cross"].missing
    assert rows["merge_a1.00"].stage == "merge_sft" and rows["merge_a1.00"].missing[0].endswith("sweep/a1.00.safetensors")
    # +consis_dpo stacks on the cross-pair SFT: only the DPO file is missing
    assert [Path(p).parts[-2] for p in rows["consis_dpo"].missing] == ["dpo_consis"]
    assert [f.parts[-2] for f in rows["realfake_dpo"].loras] == ["sft_in", "dpo_realfake"]
    assert rows["dpo_merged"].stage == "merge_dpo"
    # once final/ holds the DPO merge, the row is that model folder
    run = Path(cfg.run.out)
    _random_lora(run / "model", run / "merge_dpo" / "lora.safetensors", 3)
    tiny_model_folder(run / "final")
    (run / "final.lora.safetensors").write_bytes((run / "merge_dpo" / "lora.safetensors").read_bytes())
    final = {r.name: r for r in plan_rows(cfg)}["dpo_merged"]
    assert final.folder == run / "final" and final.stage == "final" and not final.missing

    picked = select_rows(plan_rows(cfg), "+consis_dpo,merge,real")
    assert [r.name for r in picked] == ["merge_a0.00", "merge_a1.00", "consis_dpo"]
    with pytest.raises(ConfigError, match="unknown row 'sft'.*sft_in"):
        select_rows(plan_rows(cfg), "base,sft")


def test_normalized_metrics_cap_at_one_and_invert_copy_paste():
    real = {"fidelity": 0.9, "fidelity_min": 0.6, "motion": 0.8, "motion_acc": 1.0, "copy_paste": 0.05,
            "smoothness": 1.0, "dynamic": 1.0, "realness": 0.0}
    row = {"fidelity": 0.45, "fidelity_min": 0.9, "motion": 0.2, "motion_acc": 0.5, "copy_paste": 0.525,
           "smoothness": 1.0, "dynamic": 0.3, "realness": 0.4}
    n = normalized(row, real)
    assert n["fidelity"] == pytest.approx(0.5) and n["fidelity_min"] == 1.0 and n["motion"] == pytest.approx(0.25)
    assert n["copy_paste"] == pytest.approx(0.5)  # (1 - 0.525) / (1 - 0.05)
    assert "realness" not in n  # real clips at 0 carry no scale


@pytest.mark.slow
def test_ablation_writes_every_output_and_caches_finished_rows(tmp_path, capsys):
    cfg = _toy_run(tmp_path)
    out = tmp_path / "abl"
    ab = run_ablation(cfg, TINY, "base,sft_in,merge_a1.00", out)
    assert sorted(ab["evaluated"]) == sorted(["real", "real-vae", "copy-paste", "base-static", "base-dynamic", "sft_in-static",
                                              "sft_in-dynamic"])
    data = json.loads((out / "ablation.json").read_text())
    got = {(r["row"], r["cfg"]): r for r in data["rows"]}
    assert set(got) == {("real", None), ("real-vae", None), ("copy-paste", None), ("base", "static"), ("base", "dynamic"),
                        ("sft_in", "static"), ("sft_in", "dynamic")}
    for r in data["rows"]:
        s = r["summary"]
        for m in ("fidelity", "motion", "motion_acc", "copy_paste", "copy_paste_rate", "smoothness", "dynamic",
                  "realness", "normalized_mean", "s_per_video"):
            assert np.isfinite(s[m]), (r["row"], m)
        assert len(r["results"]["rows"]) == 1 and "_frames" not in r["results"]["rows"][0]
    assert got[("real", None)]["summary"]["normalized_mean"] == pytest.approx(1.0)
    # the VAE's round trip of the true clips: not the clips themselves (a random tiny VAE loses them)
    assert got[("real-vae", None)]["summary"] != got[("real", None)]["summary"]
    assert "vae.safetensors" in got[("real-vae", None)]["source"]
    assert got[("base", "static")]["results"]["references"] == "none"  # text-to-video
    assert got[("sft_in", "dynamic")]["cfg_preset"] == CFG_PRESETS["dynamic"] == "libragen"
    assert got[("base", "static")]["results"]["cases"][0]["seed"] == got[("sft_in", "static")]["results"]["cases"][0]["seed"]
    # the LoRA changed the videos; static and dynamic CFG differ
    frames_metrics = {k: json.dumps(v["results"]["rows"][0]["metrics"], sort_keys=True) for k, v in got.items()}
    assert frames_metrics[("base", "static")] != frames_metrics[("sft_in", "static")]
    assert frames_metrics[("sft_in", "static")] != frames_metrics[("sft_in", "dynamic")]
    assert data["missing"] == [{"row": "merge_a1.00", "label": "merge a=1.00", "stage": "merge_sft",
                                "missing": [str(Path(cfg.run.out) / "merge_sft" / "sweep" / "a1.00.safetensors")]}]
    md = (out / "ablation.md").read_text()
    assert "| sft_in | dynamic |" in md and "merge a=1.00 | missing (stage `merge_sft`)" in md and "% |" in md
    assert "dir gap" in md and got[("sft_in", "static")]["direction"] == {"clips": 0}  # the one case names none
    from PIL import Image

    img = Image.open(out / "identity_vs_alignment.png")
    assert img.size == (820, 620) and len(img.getcolors(1 << 16)) > 10
    assert (out / "sheets" / "sft_in-dynamic.png").is_file() and (out / "rows" / "base-static.json").is_file()

    # rerun: nothing is generated again
    again = run_ablation(cfg, TINY, "base,sft_in,merge_a1.00", out)
    assert again["evaluated"] == [] and len(again["cached"]) == 7
    # one more stage finished: only its rows run; a changed LoRA file re-runs its row
    run = Path(cfg.run.out)
    _random_lora(run / "model", run / "merge_sft" / "sweep" / "a1.00.safetensors", 4)
    _random_lora(run / "model", run / "sft_in" / "lora.safetensors", 5)
    third = run_ablation(cfg, TINY, "base,sft_in,merge_a1.00", out)
    assert sorted(third["evaluated"]) == ["merge_a1.00-dynamic", "merge_a1.00-static", "sft_in-dynamic", "sft_in-static"]
    assert json.loads((out / "ablation.json").read_text())["missing"] == []

    # the command line, from the cache, one CFG kind
    capsys.readouterr()
    rc = main(["--config", str(_write_toml(tmp_path, cfg)), "--suite", "small", "--cases", "1", "--size", "32",
               "--frames", "5", "--steps", "2", "--rows", "base", "--cfg", "static", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0 and "0 evaluated, 4 from the cache" in printed and "| base (T2V, no refs) | static |" in printed


def test_direction_row_probes_the_cases_that_name_a_direction(tmp_path):
    """Issue 21: every model row carries the direction probe; only captions with a direction count."""
    from libragen_core.eval.harness import run_eval
    from libragen_core.eval.suite import build_suite
    from libragen_core.pipeline import Generator
    from training.spriteworld.ablation import _load, direction_row

    cfg = _toy_run(tmp_path)
    bundle = _load(Path(cfg.run.out) / "model", "cpu")
    cases = [c for c in build_suite("small", size=(32, 32), n_frames=5) if c.identity_split == "heldout"]
    assert [("moves down" in c.prompts["caption"]) for c in cases] == [False, False, True]
    gen = Generator(bundle, cfg="libragen", steps=2)
    results = run_eval(gen, cases[2:], prompt_kinds=("caption",), progress=False)
    d = direction_row(bundle, gen, cases, results, True, 1)
    assert d["clips"] == 1 and d["sample_clips"] == 1
    assert d["vdiff"] > 0 and d["noise_diff"] > 0 and d["0.9"]["own"] > 0 and np.isfinite(d["gap"])
    # the eval's own video of the true caption is the probe's: the same seed gives the same frames
    again = gen.generate([r.copy() for r in cases[2].refs], cases[2].prompts["caption"], cases[2].seed, 5, 32, 32)
    assert np.array_equal(again, results["rows"][0]["_frames"])
    without_refs = direction_row(bundle, gen, cases, results, False, 0)
    assert without_refs["clips"] == 1 and "sample_clips" not in without_refs
    assert without_refs["gap"] != d["gap"]  # the references change the loss
    assert direction_row(bundle, gen, cases[:2], results, True, 1) == {"clips": 0}


def _write_toml(tmp: Path, cfg: PostChainConfig) -> Path:
    path = tmp / "toy.toml"
    path.write_text(f'[run]\nout = "{cfg.run.out}"\nthreads = 1\n[merge_sft]\nsweep = [0.0, 1.0]\n')
    return path


def test_cli_refuses_a_bad_cfg_kind(tmp_path, capsys):
    cfg = _toy_run(tmp_path)
    rc = main(["--config", str(_write_toml(tmp_path, cfg)), "--cfg", "stat", "--out", str(tmp_path / "x")])
    assert rc == 2 and "--cfg 'stat'" in capsys.readouterr().err


def test_checks_compare_the_final_model_with_each_sft_and_with_real():
    from training.spriteworld.ablation import checks

    def entry(row, cfg, norm, fid_pct, mot_pct):
        return {"row": row, "cfg": cfg, "summary": {"normalized_mean": norm, "fidelity_pct_real": fid_pct,
                                                     "motion_pct_real": mot_pct}}

    entries = [entry("sft_in", "dynamic", 0.6, 90, 50), entry("sft_cross", "dynamic", 0.7, 60, 85),
               entry("dpo_merged", "dynamic", 0.65, 85, 79), entry("sft_in", "static", 0.5, 80, 70)]
    got = {c["check"]: c["passed"] for c in checks(entries) if c["cfg"] == "dynamic"}
    assert got == {"dpo_merged beats sft_in on the normalized mean": True,
                   "dpo_merged beats sft_cross on the normalized mean": False,
                   "dpo_merged fidelity >= 80% of real": True, "dpo_merged motion >= 80% of real": False}
    assert all(c["cfg"] == "dynamic" for c in checks(entries))  # no static final row, no static checks
