"""What the post-training stages share: the base model, stage folders, the DONE marker, the CLI
shape, and validation by subject identity and motion on held-out identities."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from libragen_core.errors import CheckpointError, LibraGenError
from libragen_core.io.atomic import atomic_path

from .common.base_model import file_device
from .common.config import load_config, to_dict
from .common.schema import PostChainConfig

DONE_FILE = "DONE.json"
DPO_STAGE_NAMES = ("dpo_consis", "dpo_realfake")  # the two DPO stages; only they may end as skipped


def stage_folder(cfg: PostChainConfig, stage: str) -> Path:
    return Path(cfg.run.out) / stage


def base_folder(cfg: PostChainConfig) -> Path:
    """The pretrained model folder (pretrain's export stage)."""
    return Path(cfg.export.folder) if cfg.export.folder else Path(cfg.run.out) / "model"


def cache_folder(cfg: PostChainConfig) -> Path:
    """Where latents and text features are cached (training/common/cache.py)."""
    return Path(cfg.data.cache) if cfg.data.cache else Path(cfg.run.out) / "cache"


def final_folder(cfg: PostChainConfig) -> Path:
    """Where the pipeline's final stage writes the model folder."""
    return Path(cfg.final.folder) if cfg.final.folder else stage_folder(cfg, "final")


def load_base(cfg: PostChainConfig, device="cpu"):
    from libragen_core.models.bundle import CARD_FILE, load_model_folder

    folder = base_folder(cfg)
    device = file_device(device)
    if not (folder / CARD_FILE).is_file():
        raise CheckpointError(f"no pretrained model folder at {folder} ({CARD_FILE} missing); run "
                              "`python -m training.pretrain --config ...` (its export stage) first, or set export.folder")
    bundle = load_model_folder(folder, device=device)
    bundle.dit.float()
    for m in (bundle.vae, bundle.text):
        m.eval().requires_grad_(False)
    return bundle


def is_done(folder: Path) -> bool:
    return (folder / DONE_FILE).is_file()


def skipped_reason(folder: Path) -> str | None:
    """Why a finished stage produced no output (DPO with too few pairs), or None."""
    try:
        info = json.loads((folder / DONE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info.get("skipped") or None


def mark_done(folder: Path, info: dict) -> None:
    with atomic_path(folder / DONE_FILE) as tmp:
        tmp.write_text(json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **info},
                                  indent=1) + "\n", encoding="utf-8")


def vae_digest(cfg: PostChainConfig) -> str:
    from .common.data import file_digest

    return file_digest(base_folder(cfg) / "vae.safetensors")


def encode_text(bundle, prompts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return bundle.text.encode(list(prompts), device=bundle.device)


# ---------------------------------------------------------------- CLI

def _deep_merge(into: dict, more: dict) -> dict:
    for k, v in more.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _deep_merge(into[k], v)
        else:
            into[k] = v
    return into


def load_layered(paths, overrides=()) -> PostChainConfig:
    """PostChainConfig from one or more TOML files merged in order (tables merge key by key,
    other values are replaced), then `section.key=value` overrides; strict as load_config."""
    from libragen_core.errors import ConfigError

    from .common.config import apply_override, from_dict, tomllib

    if isinstance(paths, (str, Path)):
        paths = [paths]
    if len(paths) == 1:
        return load_config(PostChainConfig, paths[0], overrides)
    data: dict = {}
    for path in paths:
        try:
            _deep_merge(data, tomllib.loads(Path(path).read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    source = " + ".join(str(p) for p in paths)
    for item in overrides:
        apply_override(data, item, source)
    return from_dict(PostChainConfig, data, source)



def stages_main(prog: str, doc: str, stages: Sequence[str], run_stage: Callable[[PostChainConfig, str], object],
                argv=None) -> int:
    """stage_main with `--stage <one of stages>|both` (default both): run_stage(cfg, stage) for each
    chosen stage that its config enables."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--stage", choices=[*stages, "both"], default="both")
    known, rest = pre.parse_known_args(argv)
    chosen = list(stages) if known.stage == "both" else [known.stage]

    def run(cfg: PostChainConfig):
        for s in chosen:
            if getattr(cfg, s).enabled:
                run_stage(cfg, s)

    return stage_main(prog, doc, run, rest, parents=[pre])


def stage_main(prog: str, doc: str, run: Callable[[PostChainConfig], object], argv=None, parents=()) -> int:
    """`python -m training.<stage> --config X.toml [--set k=v ...] [--force]`; `parents` add options
    of the caller's own (parsed there) to the usage and --help."""
    from .common.loop import is_main_process, setup_torch

    p = argparse.ArgumentParser(prog=prog, description=doc.strip().split("\n")[0], parents=list(parents))
    p.add_argument("--config", required=True, action="append",
                   help="training/configs/<name>.toml; repeat to layer files (later ones win key by key), e.g. "
                        "--config training/configs/spriteworld.toml --config my-overrides.toml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set sft_in.optim.steps=50 (repeatable)")
    args = p.parse_args(argv)
    try:
        cfg = load_layered(args.config, args.set)
        setup_torch(cfg.run)
        Path(cfg.run.out).mkdir(parents=True, exist_ok=True)
        if is_main_process(cfg.run):
            (Path(cfg.run.out) / f"{prog.rsplit('.', 1)[-1]}-config.json").write_text(
                json.dumps(to_dict(cfg), indent=1))
        run(cfg)
    except LibraGenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
