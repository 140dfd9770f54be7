"""Pretrain the SpriteWorld foundation model: VAE, then text encoder + base text-to-video DiT.

    python -m training.pretrain --config training/configs/spriteworld.toml            # all enabled stages
    python -m training.pretrain --config ... --stages vae
    python -m training.pretrain --config ... --stages base,export --set base.optim.steps=4000

One module per stage: `vae.py`, `base.py` (text encoder + DiT), `export.py`.
Each stage writes under <run.out>/<stage>/ (checkpoints/, metrics.jsonl, tb/, sheets) and resumes
from its newest checkpoint when re-run. `export` writes the model folder (model.json + weights)
in the layout of the embedded model (libragen_core/assets/libragen-sprite/).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from libragen_core.errors import LibraGenError

from ..common.config import to_dict
from ..common.loop import is_main_process, setup_torch

STAGES = ("vae", "base", "export")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.pretrain", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, action="append",
                   help="training/configs/<name>.toml; repeat to layer files (later ones win key by key)")
    p.add_argument("--stages", default="", help=f"comma list of {', '.join(STAGES)} (default: the enabled ones + export)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set base.optim.steps=200 (repeatable)")
    args = p.parse_args(argv)
    try:
        from ..post_common import load_layered

        # the chain's config also holds the post-training sections; pretraining reads its own
        cfg = load_layered(args.config, args.set)
        stages = [s.strip() for s in args.stages.split(",") if s.strip()] or (
            [s for s in ("vae", "base") if getattr(cfg, s).enabled] + ["export"])
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise LibraGenError(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
        setup_torch(cfg.run)
        Path(cfg.run.out).mkdir(parents=True, exist_ok=True)
        if is_main_process(cfg.run):
            (Path(cfg.run.out) / "pretrain-config.json").write_text(json.dumps(to_dict(cfg), indent=1))
        from .base import run_base
        from .export import run_export
        from .vae import run_vae

        for s in stages:
            {"vae": run_vae, "base": run_base, "export": run_export}[s](cfg)
    except LibraGenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
