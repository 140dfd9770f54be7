"""The ablation table of the trained SpriteWorld chain (docs/results.md, issue 5).

    python -m training.spriteworld.ablation --config training/configs/spriteworld.toml
    python -m training.spriteworld.ablation --config ... --rows base,sft_in,dpo_merged --cfg dynamic --cases 4
    python -m training.spriteworld.ablation --config ... --suite full --split all --prompts all

Every row is evaluated on the same SpriteWorld eval cases (libragen_core.eval: build_suite,
evaluate_clip, aggregate), with each case's own seed, once with static CFG (the `phantom`
preset: s_img 5.0, s_txt 7.5) and once with LibraGen's dynamic CFG (the `libragen` preset).
Rows, and the weights each one generates with (training/pipeline.py, training/merge.py):

  base           the exported base model, text-to-video from the prompt, NO references
  sft_in         base + sft_in/lora.safetensors                      (in-pair SFT)
  sft_cross      base + sft_cross/lora.safetensors                   (cross-pair SFT)
  merge_aX.XX    base + merge_sft/sweep/aX.XX.safetensors            (dW = a dW_cross + (1-a) dW_in)
  consis_dpo     base + sft_cross LoRA + dpo_consis LoRA             (Consis-DPO on its own SFT)
  realfake_dpo   base + sft_in LoRA + dpo_realfake LoRA              (Real-Fake DPO on its own SFT)
  dpo_merged     the final/ model folder (base + merge_dpo LoRA folded in); while final/ is not
                 written yet, base + merge_dpo/lora.safetensors, the same weights
and three bounds from the same cases: `real` (the true clips), `real-vae` (the true clips encoded
and decoded by the base's VAE: the most any row can score through that VAE) and `copy-paste`.

A row whose weights are missing is reported with the file and the stage that writes it. A
finished row is cached in <out>/rows/<row>-<cfg>.json under a key made of its weight files'
digests and the eval settings, so a rerun after one more stage evaluates only the new rows.
Outputs (atomic): ablation.json, ablation.md, identity_vs_alignment.png, sheets/<row>-<cfg>.png.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from libragen_core.errors import ConfigError, LibraGenError
from libragen_core.eval.harness import (
    SUMMARY_METRICS,
    CopyPasteGenerator,
    GroundTruthGenerator,
    RoundTripGenerator,
    run_eval,
)
from libragen_core.eval.suite import PROMPT_KINDS, SUITES, EvalCase, build_suite, parse_prompt_kinds
from libragen_core.io.atomic import atomic_path, write_json

from ..common.schema import PostChainConfig
from ..post_common import base_folder, final_folder, skipped_reason, stage_folder

CACHE_VERSION = 1
# static = Phantom's published weights; dynamic = LibraGen's time-dependent schedule
CFG_PRESETS = {"static": "phantom", "dynamic": "libragen"}
BOUNDS = ("real", "real-vae", "copy-paste")
BOUND_LABELS = {"real": "real clips", "real-vae": "real clips via the VAE", "copy-paste": "copy-paste"}
# copy-paste is the one summary metric where more is worse (the bounds: real ~0.05, copy-paste 1.0)
LOWER_IS_BETTER = ("copy_paste",)
LABELS = {"fidelity": "fid", "fidelity_min": "fid_min", "motion": "motion", "motion_acc": "mot_acc",
          "copy_paste": "copy", "copy_paste_rate": "copy_rate", "smoothness": "smooth", "dynamic": "dyn",
          "realness": "real"}
TABLE_METRICS = (*SUMMARY_METRICS, "copy_paste_rate")


@dataclass(frozen=True)
class RowSpec:
    """One model row: where its weights come from, or why it cannot run yet."""

    name: str  # as given to --rows and used in file names
    label: str  # as printed in the table
    stage: str  # the pipeline stage whose output the row needs
    loras: tuple[Path, ...] = ()  # folded into the base DiT in this order
    folder: Path | None = None  # a whole model folder instead of base + LoRAs
    refs: bool = True  # base: text-to-video, no references
    missing: tuple[str, ...] = ()  # files that are not there yet
    skipped: str = ""  # why its stage finished without weights (DPO with too few kept pairs)
    source: str = ""


# ---------------------------------------------------------------- rows

def plan_rows(cfg: PostChainConfig) -> list[RowSpec]:
    """Every model row in table order, with its weight files and the files still missing."""
    from ..merge import sweep_names

    base = base_folder(cfg)
    base_missing = () if (base / "model.json").is_file() else (str(base / "model.json"),)

    def lora_row(name, label, stage, files, source):
        missing = base_missing + tuple(str(f) for f in files if not f.is_file())
        skipped = skipped_reason(stage_folder(cfg, stage)) or ""
        return RowSpec(name, label, stage, tuple(files), missing=missing, skipped=skipped, source=source)

    sft_in, sft_cross = (stage_folder(cfg, s) / "lora.safetensors" for s in ("sft_in", "sft_cross"))
    rows = [RowSpec("base", "base (T2V, no refs)", "export", refs=False, missing=base_missing,
                    source=f"{base} (no references)"),
            lora_row("sft_in", "sft_in", "sft_in", [sft_in], "base + sft_in LoRA"),
            lora_row("sft_cross", "sft_cross", "sft_cross", [sft_cross], "base + sft_cross LoRA")]
    merge = stage_folder(cfg, "merge_sft")
    sweep = list(cfg.merge_sft.sweep)
    if sweep:
        for w, fname in zip(sweep, sweep_names(sweep)):
            rows.append(lora_row(f"merge_a{w:.2f}", f"merge a={w:.2f}", "merge_sft", [merge / "sweep" / fname],
                                 f"base + merge_sft/sweep/{fname} (a = cross share)"))
    else:  # no sweep configured: the one merged LoRA
        w = cfg.merge_sft.weight
        rows.append(lora_row(f"merge_a{w:.2f}", f"merge a={w:.2f}", "merge_sft", [merge / "lora.safetensors"],
                             "base + merge_sft LoRA"))
    rows.append(lora_row("consis_dpo", "+consis_dpo", "dpo_consis",
                         [sft_cross, stage_folder(cfg, "dpo_consis") / "lora.safetensors"],
                         "base + sft_cross LoRA + dpo_consis LoRA"))
    rows.append(lora_row("realfake_dpo", "+realfake_dpo", "dpo_realfake",
                         [sft_in, stage_folder(cfg, "dpo_realfake") / "lora.safetensors"],
                         "base + sft_in LoRA + dpo_realfake LoRA"))
    final = final_folder(cfg)
    merged = stage_folder(cfg, "merge_dpo") / "lora.safetensors"
    if (final / "model.json").is_file() and _final_carries(final, merged):
        rows.append(RowSpec("dpo_merged", "dpo_merged (final)", "final", folder=final, source=f"{final} (model folder)"))
    else:
        rows.append(lora_row("dpo_merged", "dpo_merged (final)", "merge_dpo", [merged],
                             "base + merge_dpo LoRA (what final/ folds in)"))
    return rows


def _final_carries(final: Path, merged: Path) -> bool:
    """Is final/ the DPO merge? (with the DPO stages disabled the pipeline folds the SFT merge in)"""
    beside = final.with_name(final.name + ".lora.safetensors")
    return beside.is_file() and merged.is_file() and file_digest(beside) == file_digest(merged)


def select_rows(rows: list[RowSpec], names: str | None) -> list[RowSpec]:
    """--rows a,b,c (ids as in the table; '+consis_dpo' and 'merge' for every sweep row also work)."""
    if not names:
        return rows
    by_name = {r.name: r for r in rows}
    wanted: list[str] = []
    for raw in (n.strip() for n in names.split(",")):
        if not raw or raw in BOUNDS:  # the bounds are always evaluated (they normalize the rest)
            continue
        name = raw.lstrip("+")
        picked = [r.name for r in rows if r.name.startswith("merge_")] if name == "merge" else [name]
        for p in picked:
            if p not in by_name:
                raise ConfigError(f"--rows: unknown row {raw!r}; rows: {', '.join(by_name)} (or 'merge' for all sweep rows)")
            if p not in wanted:
                wanted.append(p)
    return [r for r in rows if r.name in wanted]


# ---------------------------------------------------------------- digests and cache keys

_DIGESTS: dict[tuple, str] = {}


def file_digest(path: Path) -> str:
    from ..common.data import file_digest as sha

    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha(path)
    return _DIGESTS[key]


def folder_files(folder: Path) -> list[Path]:
    from libragen_core.models.bundle import CARD_FILE, ModelCard

    card = ModelCard.read(folder / CARD_FILE)
    names = [CARD_FILE, card.dit, card.vae, card.text_encoder, card.tokenizer]
    return [folder / n for n in names if n]


def weight_files(row: RowSpec, base: Path) -> list[Path]:
    if row.folder is not None:
        return folder_files(row.folder)
    return folder_files(base) + list(row.loras)


def cache_key(files: list[Path], settings: dict) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "files": [[p.name, file_digest(p)] for p in files], "settings": settings},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def read_cached(path: Path, key: str) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if data.get("key") == key else None


# ---------------------------------------------------------------- evaluation

@dataclass
class Settings:
    suite: str = "full"
    split: str = "heldout"  # heldout | all
    prompts: str = "caption"  # "all" or comma-separated prompt kinds of the suite
    cases: int = 0  # 0 = every case of the split
    cfg_kinds: tuple[str, ...] = ("static", "dynamic")
    size: int = 64
    frames: int = 17
    steps: int | None = None  # None = the model card's
    device: str = "cpu"
    progress: bool = True
    sheets: bool = True
    probe_samples: int = 4  # direction probe: directional cases sampled with swapped captions too; 0 = none

    def prompt_kinds(self) -> tuple[str, ...]:
        return parse_prompt_kinds(self.prompts)

    def check(self) -> None:
        if self.suite not in SUITES:
            raise ConfigError(f"--suite {self.suite!r}: choose one of {', '.join(SUITES)}")
        if self.split not in ("heldout", "all"):
            raise ConfigError(f"--split {self.split!r}: choose heldout or all")
        bad = [k for k in self.prompt_kinds() if k not in PROMPT_KINDS]
        if bad or not self.prompt_kinds():
            raise ConfigError(f"--prompts {self.prompts!r}: give all or prompt kinds from {', '.join(PROMPT_KINDS)}")
        bad = [k for k in self.cfg_kinds if k not in CFG_PRESETS]
        if bad or not self.cfg_kinds:
            raise ConfigError(f"--cfg {','.join(self.cfg_kinds)!r}: give static, dynamic or static,dynamic")
        if self.cases < 0:
            raise ConfigError(f"--cases {self.cases}: give a positive count, or 0 for every case")
        if self.probe_samples < 0:
            raise ConfigError(f"--probe-samples {self.probe_samples}: give a count >= 0")


def select_cases(s: Settings) -> list[EvalCase]:
    cases = build_suite(s.suite, size=(s.size, s.size), n_frames=s.frames)
    if s.split == "heldout":
        cases = [c for c in cases if c.identity_split == "heldout"]
    return cases[: s.cases] if s.cases else cases


def eval_settings(s: Settings, cases: list[EvalCase]) -> dict:
    """What a cached row must agree on besides its weights."""
    return {"suite": s.suite, "cases": [c.id for c in cases], "prompts": list(s.prompt_kinds()), "size": s.size,
            "frames": s.frames, "steps": s.steps, "device": s.device,
            "direction_probe": {"version": 1, "samples": s.probe_samples}}


def evaluate(generator, cases: list[EvalCase], s: Settings, name: str, with_refs: bool, bar=None) -> dict:
    """harness.run_eval over the settings' prompt kinds, ticking the ablation's shared progress bar."""
    return run_eval(generator, cases, model_name=name, ref_kind="cross" if with_refs else "none",
                    prompt_kinds=s.prompt_kinds(), progress=(lambda i, n: bar.update(1)) if bar is not None else False)


def row_summary(results: dict) -> dict:
    out = dict(results["aggregates"]["all"])
    out["s_per_video"] = float(np.mean([r["generate_s"] for r in results["rows"]])) if results["rows"] else 0.0
    return out


def normalized(summary: dict, real: dict) -> dict[str, float]:
    """Each summary metric as a share of the real clips' value, capped at 1 (copy-paste inverted:
    1 - copy over 1 - real copy). A metric the real clips score 0 on carries no information."""
    out = {}
    for m in SUMMARY_METRICS:
        v, r = summary[m], real[m]
        if m in LOWER_IS_BETTER:
            v, r = 1.0 - v, 1.0 - r
        if r > 1e-9:
            out[m] = float(min(1.0, max(0.0, v / r)))
    return out


def _strip_frames(results: dict) -> dict:
    return {**results, "rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results["rows"]]}


class _Job:
    """A row x CFG kind (or a bound) to evaluate or to read back from the cache."""

    def __init__(self, name, label, cfg_kind, row, key, path):
        self.name, self.label, self.cfg_kind, self.row, self.key, self.path = name, label, cfg_kind, row, key, path
        self.data: dict | None = None


def run_ablation(cfg: PostChainConfig, s: Settings, rows: str | None = None, out: str | os.PathLike | None = None) -> dict:
    """Evaluate the rows (cached ones are read back), then write ablation.json/.md and the scatter.
    Returns the ablation dict plus "evaluated" / "cached" lists of job names."""
    from libragen_core.sampling.guidance import get_preset

    s.check()
    out_dir = Path(out) if out else Path(cfg.run.out) / "ablation"
    (out_dir / "rows").mkdir(parents=True, exist_ok=True)
    cases = select_cases(s)
    settings = eval_settings(s, cases)
    base = base_folder(cfg)
    specs = select_rows(plan_rows(cfg), rows)

    jobs: list[_Job] = []
    missing = []
    for b in BOUNDS:  # the bounds do not depend on the DiT or the steps; real-vae on the base's VAE
        bset = {k: v for k, v in settings.items() if k not in ("steps", "device")}
        files = []
        if b == "real-vae":
            if not (base / "model.json").is_file():
                missing.append({"row": b, "label": BOUND_LABELS[b], "stage": "export",
                                "missing": [str(base / "model.json")]})
                continue
            files = [base / _vae_name(base)]
        jobs.append(_Job(b, BOUND_LABELS[b], None, None, cache_key(files, {**bset, "bound": b}),
                         out_dir / "rows" / f"{b}.json"))
    for spec in specs:
        if spec.missing or spec.skipped:
            missing.append({"row": spec.name, "label": spec.label, "stage": spec.stage, "missing": list(spec.missing),
                            **({"skipped": spec.skipped} if spec.skipped else {})})
            continue
        files = weight_files(spec, base)
        for kind in s.cfg_kinds:
            sched = get_preset(CFG_PRESETS[kind]).to_dict()
            key = cache_key(files, {**settings, "cfg": sched, "refs": spec.refs})
            jobs.append(_Job(spec.name, spec.label, kind, spec, key, out_dir / "rows" / f"{spec.name}-{kind}.json"))

    todo = []
    for job in jobs:
        job.data = read_cached(job.path, job.key)
        if job.data is None:
            todo.append(job)
    bar = None
    n_videos = len(cases) * len(s.prompt_kinds())
    if s.progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo) * n_videos, unit="video", desc="ablation")
    bundle = None
    try:
        for job in todo:
            if bar is not None:
                bar.set_description(f"{job.label} {job.cfg_kind or ''}".strip())
            direction = None  # the direction probe, for model rows
            if job.row is None:
                gen = CopyPasteGenerator() if job.name == "copy-paste" else GroundTruthGenerator(cases)
                source = {"real": "the suite's true clips", "copy-paste": "references pasted on white",
                          "real-vae": f"the suite's true clips through {base / _vae_name(base)}"}[job.name]
                if job.name == "real-vae":
                    if bundle is None:
                        bundle = _load(base, s.device)
                    gen = RoundTripGenerator(gen, bundle.vae)
                results = evaluate(gen, cases, s, job.name, True, bar)
            else:
                if bundle is None and job.row.folder is None:
                    bundle = _load(base, s.device)
                results, source, direction = _evaluate_row(job, bundle, cases, s, bar)
            job.data = {"key": job.key, "row": job.name, "label": job.label, "cfg": job.cfg_kind,
                        "cfg_preset": CFG_PRESETS.get(job.cfg_kind), "source": source,
                        "stage": job.row.stage if job.row else None,
                        "evaluated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "summary": row_summary(results), "results": _strip_frames(results),
                        **({"direction": direction} if direction is not None else {})}
            if s.sheets:
                _write_sheet(results, cases, out_dir / "sheets" / f"{job.path.stem}.png")
            write_json(job.path, job.data)  # last: a row is cached only once everything about it is written
    finally:
        if bar is not None:
            bar.close()

    ablation = assemble(jobs, missing, s, settings, cfg)
    write_outputs(ablation, out_dir)
    ablation["evaluated"] = [j.path.stem for j in todo]
    ablation["cached"] = [j.path.stem for j in jobs if j not in todo]
    return ablation


def _vae_name(folder: Path) -> str:
    from libragen_core.models.bundle import CARD_FILE, ModelCard

    return ModelCard.read(folder / CARD_FILE).vae


def _load(folder: Path, device: str):
    from libragen_core.models.bundle import load_model_folder

    bundle = load_model_folder(folder, device=device)
    bundle.dit.float()  # LoRAs fold in fp32, as the training stages and final/ do
    for m in (bundle.dit, bundle.vae, bundle.text):
        m.eval().requires_grad_(False)
    return bundle


def _evaluate_row(job: _Job, bundle, cases, s: Settings, bar) -> tuple[dict, str, dict]:
    """(eval results, source, direction probe) of a model row with its CFG kind."""
    from libragen_core.lora import WeightBackup, load_lora, merge_lora_into
    from libragen_core.pipeline import Generator

    spec: RowSpec = job.row
    overrides = {"cfg": CFG_PRESETS[job.cfg_kind]}
    if s.steps:
        overrides["steps"] = s.steps
    if spec.folder is not None:
        own = _load(spec.folder, s.device)
        gen = Generator(own, **overrides)
        results = evaluate(gen, cases, s, job.name, spec.refs, bar)
        return results, spec.source, direction_row(own, gen, cases, results, spec.refs, s.probe_samples)
    backup = WeightBackup()
    try:
        for f in spec.loras:
            merge_lora_into(bundle.dit, load_lora(f), backup=backup)
        gen = Generator(bundle, **overrides)
        results = evaluate(gen, cases, s, job.name, spec.refs, bar)
        return results, spec.source, direction_row(bundle, gen, cases, results, spec.refs, s.probe_samples)
    finally:
        backup.restore()  # bit-exact: the next row starts from the untouched base


def direction_row(bundle, generator, cases: list[EvalCase], results: dict, with_refs: bool, samples: int) -> dict:
    """The direction probe (training/direction_probe.py) of one row on the cases whose caption
    names a direction: the loss gap on their true clips (with the row's references; cases are
    grouped by subject count, since references of one count batch together), and, for the first
    `samples` of them, the videos of the row's generator under the swapped caption and under
    another noise, against the eval's own videos of the true caption."""
    import torch

    from libragen_core.conditioning.references import prepare_references
    from libragen_core.spriteworld.render import render_scene

    from ..common.data import frames_to_tensor
    from ..direction_probe import combine, directional, loss_probe, sample_probe

    picked = [cases[i] for i in directional([c.prompts["caption"] for c in cases])]
    if not picked:
        return {"clips": 0}
    dev = bundle.device
    parts = []
    for n in sorted({c.n_subjects for c in picked}):
        group = [c for c in picked if c.n_subjects == n]
        h, w = group[0].scene.size
        with torch.no_grad():
            x0 = bundle.vae.encode(frames_to_tensor([render_scene(c.scene).frames for c in group]).to(dev))
            refs = torch.stack([bundle.vae.encode(prepare_references(c.refs, h, w, device=dev).unsqueeze(2))[:, :, 0]
                                .transpose(0, 1) for c in group]) if with_refs else None
        parts.append(loss_probe(bundle.dit, lambda p: bundle.text.encode(list(p), device=dev), x0,
                                [c.prompts["caption"] for c in group], refs=refs))
    out = combine(parts)
    sampled = picked[:samples]
    if sampled:
        own = {r["case"]: r["_frames"] for r in results["rows"] if r["prompt_kind"] == "caption"}

        def generate(captions: list[str], offset: int) -> np.ndarray:
            return np.stack([generator.generate([] if not with_refs else [r.copy() for r in c.refs], cap,
                                                c.seed + offset, c.scene.n_frames, *c.scene.size)
                             for c, cap in zip(sampled, captions)])

        have_own = all(c.id in own for c in sampled)
        out.update(sample_probe(generate, [c.prompts["caption"] for c in sampled], 0,
                                np.stack([own[c.id] for c in sampled]) if have_own else None))
    return out


def _write_sheet(results: dict, cases, path: Path) -> None:
    from libragen_core.eval.report import contact_sheet
    from libragen_core.io.images import save_png

    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(path, contact_sheet(results, cases))


# ---------------------------------------------------------------- table, checks, outputs

def assemble(jobs: list[_Job], missing: list[dict], s: Settings, settings: dict, cfg: PostChainConfig) -> dict:
    from libragen_core.sampling.guidance import get_preset

    real = next(j.data["summary"] for j in jobs if j.name == "real")
    entries = []
    for j in jobs:
        summ = dict(j.data["summary"])
        norm = normalized(summ, real)
        summ["normalized"] = norm
        summ["normalized_mean"] = float(np.mean(list(norm.values()))) if norm else 0.0
        summ["fidelity_pct_real"] = 100.0 * summ["fidelity"] / real["fidelity"] if real["fidelity"] else 0.0
        summ["motion_pct_real"] = 100.0 * summ["motion"] / real["motion"] if real["motion"] else 0.0
        entries.append({**{k: v for k, v in j.data.items() if k != "summary"}, "summary": summ,
                        "kind": "bound" if j.row is None else "model", "status": "ok"})
    return {
        "settings": {**settings, "split": s.split, "cfg": {k: {"preset": CFG_PRESETS[k],
                                                              "schedule": get_preset(CFG_PRESETS[k]).to_dict()}
                                                          for k in s.cfg_kinds},
                     "run": str(cfg.run.out), "seeds": "each case's own seed (build_suite), the same for every row"},
        "normalized_metrics": [m for m in SUMMARY_METRICS],
        "rows": entries,
        "missing": missing,
        "checks": checks(entries),
    }


def checks(entries: list[dict]) -> list[dict]:
    """Issue 5's must-show, per CFG kind: the final model beats each single SFT model on the mean
    of the normalized metrics, and reaches 80% of the real clips on fidelity and on alignment."""
    by = {(e["row"], e["cfg"]): e["summary"] for e in entries}
    out = []
    for kind in ("static", "dynamic"):
        final = by.get(("dpo_merged", kind))
        if final is None:
            continue
        for sft in ("sft_in", "sft_cross"):
            other = by.get((sft, kind))
            if other is not None:
                out.append({"cfg": kind, "check": f"dpo_merged beats {sft} on the normalized mean",
                            "value": f"{final['normalized_mean']:.3f} vs {other['normalized_mean']:.3f}",
                            "passed": final["normalized_mean"] > other["normalized_mean"]})
        for m in ("fidelity", "motion"):
            pct = final[f"{m}_pct_real"]
            out.append({"cfg": kind, "check": f"dpo_merged {m} >= 80% of real", "value": f"{pct:.0f}%",
                        "passed": pct >= 80.0})
    return out


def markdown(ab: dict) -> str:
    st = ab["settings"]
    cols = [LABELS[m] for m in TABLE_METRICS]
    head = ("| row | CFG | " + " | ".join(cols) + " | norm mean | fid % real | motion % real | dir gap | dir share | "
            "dir samples | s/video |")
    cfg_desc = "; ".join(f"{k} = `{v['preset']}`" for k, v in st["cfg"].items())
    lines = [f"SpriteWorld ablation: suite `{st['suite']}`, {'held-out identities' if st['split'] == 'heldout' else 'all identities'}, "
             f"{'caption prompts' if st['prompts'] == ['caption'] else 'prompts ' + ', '.join(st['prompts'])}, {len(st['cases'])} cases, "
             f"{st['size']}x{st['size']}x{st['frames']}, steps {st['steps'] or 'from the model card'}, the same seeds for "
             f"every row; CFG: {cfg_desc}. `norm mean` = mean over {', '.join(LABELS[m] for m in ab['normalized_metrics'])} "
             "of each value / the real clips' (capped at 1; copy as 1 - copy). `dir gap` = flow loss with the "
             "captions' motion words swapped for their opposites minus with the true ones (0 = direction unused), "
             "`dir share` = that gap over what the whole caption is worth, `dir samples` = |video(true) - "
             "video(swapped)| over |video(noise a) - video(noise b)| (training/direction_probe.py).", "", head,
             "|" + "---|" * (len(cols) + 9)]
    for e in ab["rows"]:
        s = e["summary"]
        d = e.get("direction") or {}
        cells = [f"{s[m]:.3f}" for m in TABLE_METRICS]
        probe = [f"{d[k]:+.4f}" if k in d else "-" for k in ("gap", "share")] + \
            [f"{d['sample_ratio']:.3f}" if "sample_ratio" in d else "-"]
        lines.append(f"| {e['label']} | {e['cfg'] or '-'} | " + " | ".join(cells) +
                     f" | {s['normalized_mean']:.3f} | {s['fidelity_pct_real']:.0f}% | {s['motion_pct_real']:.0f}% | "
                     + " | ".join(probe) + f" | {s['s_per_video']:.2f} |")
    for m in ab["missing"]:
        what = "skipped" if m.get("skipped") else "missing"
        lines.append(f"| {m['label']} | {what} (stage `{m['stage']}`) | " + " | ".join("-" for _ in cols) +
                     " | - | - | - | - | - | - | - |")
    if ab["missing"]:
        lines += ["", "Rows without weights (missing: run the stage, then rerun the ablation; finished rows are cached):"]
        lines += [f"- `{m['row']}`: stage `{m['stage']}` " +
                  (f"was skipped: {m['skipped']}" if m.get("skipped") else f"writes {', '.join(m['missing'])}")
                  for m in ab["missing"]]
    if ab["checks"]:
        lines += ["", "Checks (issue 5):"]
        lines += [f"- {c['cfg']}: {c['check']}: {c['value']} -> {'yes' if c['passed'] else 'NO'}" for c in ab["checks"]]
    return "\n".join(lines) + "\n"


_COLOURS = {"static": (31, 119, 180), "dynamic": (230, 110, 0), "real": (20, 150, 40), "copy-paste": (200, 30, 30),
            "real-vae": (110, 110, 110)}
_SHORT = {"base": "base", "sft_in": "in", "sft_cross": "cross", "consis_dpo": "+consis", "realfake_dpo": "+realfake",
          "dpo_merged": "final", "real": "real", "copy-paste": "copy-paste", "real-vae": "real via VAE"}


def scatter(ab: dict, size: tuple[int, int] = (820, 620)):
    """x = motion/text alignment, y = subject fidelity; one labelled point per row and CFG kind.
    Drawn with PIL (no matplotlib in this environment)."""
    from PIL import Image, ImageDraw

    from ..common.figures import blank_figure

    W, H = size
    left, right, top, bottom = 70, 30, 60, 60
    img, d, font = blank_figure(size, 13)

    def px(x, y):
        return left + x * (W - left - right), H - bottom - y * (H - top - bottom)

    for t in np.linspace(0, 1, 6):
        x0, y0 = px(t, 0)
        x1, y1 = px(0, t)
        d.line([px(t, 0), px(t, 1)], fill=(228, 228, 228))
        d.line([px(0, t), px(1, t)], fill=(228, 228, 228))
        d.text((x0 - 9, y0 + 6), f"{t:.1f}", fill=(60, 60, 60), font=font)
        d.text((x1 - 30, y1 - 7), f"{t:.1f}", fill=(60, 60, 60), font=font)
    d.rectangle([px(0, 1), px(1, 0)], outline=(0, 0, 0))
    d.text((W / 2 - 120, H - 28), "motion/text alignment (motion)", fill=(0, 0, 0), font=font)
    label = Image.new("RGB", (200, 18), (255, 255, 255))
    ImageDraw.Draw(label).text((0, 0), "subject fidelity (fid)", fill=(0, 0, 0), font=font)
    img.paste(label.rotate(90, expand=True), (8, int(H / 2 - 100)))
    legend = [("static CFG", "static"), ("dynamic CFG", "dynamic"), ("real clips", "real"), ("via the VAE", "real-vae"),
              ("copy-paste", "copy-paste")]
    x = left
    for text, key in legend:
        _marker(d, (x + 6, 24), key)
        d.text((x + 16, 17), text, fill=(0, 0, 0), font=font)
        x += 150
    for e in ab["rows"]:
        key = e["cfg"] or e["row"]
        cx, cy = px(float(np.clip(e["summary"]["motion"], 0, 1)), float(np.clip(e["summary"]["fidelity"], 0, 1)))
        _marker(d, (cx, cy), key)
        short = _SHORT.get(e["row"], e["row"].replace("merge_a", "a="))
        tx = cx + 7 if cx < W - right - 90 else cx - 7 - d.textlength(short, font=font)  # keep labels inside
        d.text((tx, cy - 7 if key != "dynamic" else cy + 1), short, fill=_COLOURS[key], font=font)
    return img


def _marker(d, xy, key):
    x, y = xy
    c = _COLOURS[key]
    if key == "static":
        d.ellipse([x - 5, y - 5, x + 5, y + 5], fill=c)
    elif key == "dynamic":
        d.polygon([(x, y - 6), (x - 6, y + 5), (x + 6, y + 5)], fill=c)
    else:
        d.rectangle([x - 5, y - 5, x + 5, y + 5], fill=c)


def write_outputs(ab: dict, out_dir: Path) -> dict[str, Path]:
    paths = {"json": out_dir / "ablation.json", "markdown": out_dir / "ablation.md",
             "scatter": out_dir / "identity_vs_alignment.png"}
    write_json(paths["json"], ab)
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(markdown(ab), encoding="utf-8")
    with atomic_path(paths["scatter"]) as tmp:
        scatter(ab).save(tmp, format="PNG")
    return paths


# ---------------------------------------------------------------- CLI

def main(argv=None) -> int:
    from ..common.loop import setup_torch
    from ..post_common import load_layered

    p = argparse.ArgumentParser(prog="python -m training.spriteworld.ablation", description=__doc__.strip().split("\n")[0])
    p.add_argument("--config", required=True, action="append", help="training/configs/spriteworld.toml (repeatable, later wins)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable)")
    p.add_argument("--suite", default="full", choices=sorted(SUITES), help="eval suite (default full: 24 cases)")
    p.add_argument("--split", default="heldout", choices=["heldout", "all"],
                   help="identities: held out of training (default, 12 full-suite cases) or all")
    p.add_argument("--prompts", default="caption",
                   help="caption prompts only (default), all, or comma-separated kinds from "
                        f"{', '.join(PROMPT_KINDS)} (anonymous = the caption without the subjects' looks)")
    p.add_argument("--cases", type=int, default=0, help="first N cases of the split (default: all)")
    p.add_argument("--rows", help="comma-separated rows (default all): base, sft_in, sft_cross, merge (all sweep rows) "
                                  "or merge_a0.25 .., consis_dpo, realfake_dpo, dpo_merged")
    p.add_argument("--cfg", default="static,dynamic", help="CFG kinds: static (phantom), dynamic (libragen), or both")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model card's)")
    p.add_argument("--size", type=int, default=64, help="square video size (default 64)")
    p.add_argument("--frames", type=int, default=17, help="frames, 4k+1 (default 17)")
    p.add_argument("--out", help="output folder (default <run.out>/ablation)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--no-sheets", action="store_true", help="skip the per-row contact sheets")
    p.add_argument("--probe-samples", type=int, default=4,
                   help="direction probe: cases also sampled with swapped directions and another noise (default 4; "
                        "0 = the loss probe only)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        cfg = load_layered(a.config, a.set)
        setup_torch(cfg.run)
        s = Settings(suite=a.suite, split=a.split, prompts=a.prompts, cases=a.cases,
                     cfg_kinds=tuple(k.strip() for k in a.cfg.split(",") if k.strip()), size=a.size, frames=a.frames,
                     steps=a.steps, device=a.device, progress=not a.no_progress, sheets=not a.no_sheets,
                     probe_samples=a.probe_samples)
        ab = run_ablation(cfg, s, a.rows, a.out)
    except LibraGenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else Path(cfg.run.out) / "ablation"
    print(markdown(ab))
    print(f"[ablation] {len(ab['evaluated'])} evaluated, {len(ab['cached'])} from the cache; wrote {out}/ablation.json, "
          "ablation.md, identity_vs_alignment.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
