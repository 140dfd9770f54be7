"""The whole LibraGen chain from one config, stage by stage, resumable:

    vae -> base -> export (pretrain) -> sft_in + sft_cross -> merge_sft
        -> dpo_consis (from the cross-pair SFT) + dpo_realfake (from the in-pair SFT) -> merge_dpo -> final

    python -m training.pipeline --config training/configs/spriteworld.toml
    python -m training.pipeline --config ... --from sft_in          # (re)do from a stage on; the
                                                                    # earlier ones count as done
    python -m training.pipeline --config ... --until merge_sft

A finished stage is recorded in <run.out>/pipeline.json and skipped on rerun (the post-training
stages also keep DONE.json in their folders); an interrupted stage resumes from its newest
checkpoint. `final` writes the model folder: model.json + the base DiT with the final merged
LoRA folded in + the base's VAE and text encoder, loadable by load_model_folder like the
embedded model; the merged LoRA (ComfyUI Wan format) goes beside it as <folder>.lora.safetensors.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from libragen_core.errors import ConfigError, InputError
from libragen_core.io.atomic import atomic_path

from .common.loop import is_main_process, wait_for_everyone
from .common.schema import PostChainConfig
from .post_common import (
    DPO_STAGE_NAMES,
    base_folder,
    final_folder,
    mark_done,
    skipped_reason,
    stage_folder,
    stage_main,
)

STAGES = ("vae", "base", "export", "sft_in", "sft_cross", "merge_sft", "dpo_consis", "dpo_realfake", "merge_dpo",
          "final")
STATE_FILE = "pipeline.json"


def final_lora(cfg: PostChainConfig) -> Path | None:
    """The LoRA the shipped model carries: the DPO merge, else the SFT merge, else none."""
    if cfg.merge_dpo.enabled and cfg.dpo_consis.enabled and cfg.dpo_realfake.enabled:
        return stage_folder(cfg, "merge_dpo") / "lora.safetensors"
    if cfg.merge_sft.enabled and cfg.sft_in.enabled and cfg.sft_cross.enabled:
        return stage_folder(cfg, "merge_sft") / "lora.safetensors"
    return None


def run_final(cfg: PostChainConfig) -> Path:
    """The main process writes the folder; the others wait for it."""
    out = final_folder(cfg)
    if is_main_process(cfg.run):
        _write_final(cfg, out)
    wait_for_everyone(cfg.run)
    return out


def _write_final(cfg: PostChainConfig, out: Path) -> None:
    from libragen_core.lora import load_lora, merge_lora_into
    from libragen_core.models.bundle import CARD_FILE, ModelCard, load_model_folder
    from libragen_core.models.loading import load_dit, save_dit

    src = base_folder(cfg)
    card = ModelCard.read(src / CARD_FILE)
    out.mkdir(parents=True, exist_ok=True)
    for name in {card.vae, card.text_encoder, card.tokenizer, card.style_guide} - {None, ""}:
        shutil.copyfile(src / name, out / name)
    dit = load_dit(src / card.dit)
    lora_file = final_lora(cfg)
    notes = card.notes
    if lora_file is not None:
        if not lora_file.is_file():
            raise InputError(f"the final model needs {lora_file}; run the merge stages first")
        lora = load_lora(lora_file)
        merge_lora_into(dit, lora)
        shutil.copyfile(lora_file, out.with_name(out.name + ".lora.safetensors"))
        skipped = [s for s in DPO_STAGE_NAMES if skipped_reason(stage_folder(cfg, s))]
        notes = (f"{notes} Post-trained (training/pipeline.py): {lora_file.parent.name} LoRA "
                 f"({lora.metadata.get('method', '?')}) folded into the DiT"
                 + (f", without {' and '.join(skipped)} (skipped: too few kept pairs)." if skipped else ".")).strip()
    save_dit(dit, out / card.dit)
    final_card = ModelCard(name=cfg.final.name, dit=card.dit, vae=card.vae, text_encoder=card.text_encoder,
                           tokenizer=card.tokenizer, trained=card.trained, defaults=card.defaults,
                           style_guide=card.style_guide, notes=notes)
    with atomic_path(out / CARD_FILE) as tmp:
        tmp.write_text(final_card.to_json(), encoding="utf-8")
    load_model_folder(out)  # must load exactly as the embedded model does
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"[final] wrote {out} ({size:.1f} MiB)")


def _runner(stage: str):
    if stage in ("vae", "base", "export"):
        from .pretrain.base import run_base
        from .pretrain.export import run_export
        from .pretrain.vae import run_vae

        return {"vae": run_vae, "base": run_base, "export": run_export}[stage]
    if stage in ("sft_in", "sft_cross"):
        from .sft import run_sft

        return lambda cfg: run_sft(cfg, stage)
    if stage in ("merge_sft", "merge_dpo"):
        from .merge import run_merge_stage

        return lambda cfg: run_merge_stage(cfg, stage)
    if stage in DPO_STAGE_NAMES:
        from .dpo import run_dpo

        return lambda cfg: run_dpo(cfg, stage)
    return run_final


def enabled(cfg: PostChainConfig, stage: str) -> bool:
    return stage == "export" or getattr(cfg, stage).enabled


def read_state(cfg: PostChainConfig) -> dict:
    path = Path(cfg.run.out) / STATE_FILE
    if not path.is_file():
        return {"done": []}
    return json.loads(path.read_text(encoding="utf-8"))


def write_state(cfg: PostChainConfig, state: dict) -> None:
    if not is_main_process(cfg.run):
        return
    Path(cfg.run.out).mkdir(parents=True, exist_ok=True)
    with atomic_path(Path(cfg.run.out) / STATE_FILE) as tmp:
        tmp.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")


def run_pipeline(cfg: PostChainConfig, start: str | None = None, until: str | None = None) -> Path | None:
    for name, value in (("--from", start), ("--until", until)):
        if value is not None and value not in STAGES:
            raise ConfigError(f"{name} {value!r} is not a stage; stages: {', '.join(STAGES)}")
    lo = STAGES.index(start) if start else 0
    hi = STAGES.index(until) if until else len(STAGES) - 1
    state = read_state(cfg)
    if start:  # earlier stages count as finished (their outputs are given); redo from here on
        state["done"] = list(STAGES[:lo])
        state["skipped"] = {k: v for k, v in state.get("skipped", {}).items() if k in state["done"]}
        if is_main_process(cfg.run):
            for s in STAGES[lo:]:
                (stage_folder(cfg, s) / "DONE.json").unlink(missing_ok=True)
        write_state(cfg, state)
        wait_for_everyone(cfg.run)
    result = None
    for stage in STAGES[lo:hi + 1]:
        if not enabled(cfg, stage):
            _say(cfg, f"[pipeline] {stage}: disabled in the config, skipped")
            continue
        if stage in state["done"]:
            _say(cfg, f"[pipeline] {stage}: finished earlier, skipped")
            continue
        _say(cfg, f"[pipeline] {stage}: running")
        result = _runner(stage)(cfg)
        if stage in ("vae", "base", "sft_in", "sft_cross", *DPO_STAGE_NAMES) and not _complete(cfg, stage):
            _say(cfg, f"[pipeline] {stage} stopped before its last step (max_minutes); re-run to continue")
            return None
        state["done"].append(stage)
        reason = skipped_reason(stage_folder(cfg, stage)) if stage in DPO_STAGE_NAMES else None
        if reason:  # finished without output; the record says so next to the list of finished stages
            state.setdefault("skipped", {})[stage] = reason
            _say(cfg, f"[pipeline] {stage}: skipped ({reason}); the chain goes on without it")
        write_state(cfg, state)
        if stage in ("vae", "base", "export") and is_main_process(cfg.run):
            mark_done(stage_folder(cfg, stage) if stage != "export" else base_folder(cfg), {"stage": stage})
        wait_for_everyone(cfg.run)
    return result


def _say(cfg: PostChainConfig, line: str) -> None:
    if is_main_process(cfg.run):
        print(line)


def _complete(cfg: PostChainConfig, stage: str) -> bool:
    """Did a training stage reach its last step (not stopped by max_minutes)?"""
    if stage in ("vae", "base"):
        from .common.checkpoint import latest_checkpoint

        ck = latest_checkpoint(stage_folder(cfg, stage) / "checkpoints")
        steps = getattr(cfg, stage).optim.steps
        return ck is not None and int(ck.name.split("-")[1]) >= steps
    return (stage_folder(cfg, stage) / "DONE.json").is_file()


def main(argv=None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--from", dest="start", choices=STAGES,
                     help="start at this stage; the earlier ones count as done")
    pre.add_argument("--until", choices=STAGES, help="stop after this stage")
    known, _ = pre.parse_known_args(argv)
    return stage_main("python -m training.pipeline", __doc__,
                      lambda cfg: run_pipeline(cfg, known.start, known.until), argv, parents=[pre])


if __name__ == "__main__":
    sys.exit(main())
