"""Pretraining stage 3: the model folder (model.json + weights) in the layout of the embedded model
(libragen_core/assets/libragen-sprite/), from the VAE and base stages' files.

`python -m training.pretrain --config C --stages export` runs it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from libragen_core.errors import LibraGenError

from ..common.loop import is_main_process, wait_for_everyone
from ..common.schema import ChainConfig
from .base import vae_path


def run_export(cfg: ChainConfig) -> Path:
    """The main process writes the folder; the others wait for it."""
    ex = cfg.export
    if cfg.base.vae == "pool":
        raise LibraGenError("base.vae = 'pool' is a diagnostic stand-in for the VAE; nothing to export")
    out = Path(ex.folder) if ex.folder else Path(cfg.run.out) / "model"
    if is_main_process(cfg.run):
        _write_export(cfg, out)
    wait_for_everyone(cfg.run)
    return out


def _write_export(cfg: ChainConfig, out: Path) -> None:
    from libragen_core.models.bundle import CARD_FILE, GenerationDefaults, ModelCard, load_model_folder
    from libragen_core.models.text_small import vocab_path_for

    ex = cfg.export
    base = Path(cfg.run.out) / "base"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vae_path(cfg), out / "vae.safetensors")
    shutil.copyfile(base / "dit.safetensors", out / "dit.safetensors")
    shutil.copyfile(base / "text.safetensors", out / "text.safetensors")
    shutil.copyfile(vocab_path_for(base / "text.safetensors"), out / "text.vocab.json")
    guide = None
    if ex.style_guide:
        from libragen_core.rewrite import resolve_style_guide

        guide = resolve_style_guide(ex.style_guide).save(out / "style_guide.json").name
    d = cfg.base.phases[0].data
    card = ModelCard(name=ex.name, dit="dit.safetensors", vae="vae.safetensors", text_encoder="text.safetensors",
                     tokenizer="text.vocab.json", trained=True, style_guide=guide,
                     defaults=GenerationDefaults(frames=d.frames, height=d.size[0], width=d.size[1], steps=ex.steps,
                                                 shift=ex.shift, solver=ex.solver, cfg=ex.cfg, fps=8.0),
                     # the run folder's name only: a shipped card should not carry this machine's paths
                     notes=f"SpriteWorld base T2V model, pretrained by training/pretrain/ (run {Path(cfg.run.out).name}).")
    from libragen_core.io.atomic import atomic_path

    with atomic_path(out / CARD_FILE) as tmp:
        tmp.write_text(card.to_json(), encoding="utf-8")
    load_model_folder(out)  # the folder must load the way the embedded model does
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"[export] wrote {out} ({size:.1f} MiB)")
