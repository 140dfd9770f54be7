"""What the post-training stages share: the base model, stage folders, the DONE marker, the CLI
shape, and validation by subject identity and motion on held-out identities."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from libragen_core.errors import CheckpointError, LibraGenError
from libragen_core.io.atomic import atomic_path

from .common.config import load_config, to_dict
from .post_config import PostChainConfig, PostValidation

DONE_FILE = "DONE.json"
DPO_STAGE_NAMES = ("dpo_consis", "dpo_realfake")  # the two DPO stages; only they may end as skipped


def stage_folder(cfg: PostChainConfig, stage: str) -> Path:
    return Path(cfg.run.out) / stage


def base_folder(cfg: PostChainConfig) -> Path:
    """The pretrained model folder (pretrain's export stage)."""
    return Path(cfg.export.folder) if cfg.export.folder else Path(cfg.run.out) / "model"


def final_folder(cfg: PostChainConfig) -> Path:
    """Where the pipeline's final stage writes the model folder."""
    return Path(cfg.final.folder) if cfg.final.folder else stage_folder(cfg, "final")


def load_base(cfg: PostChainConfig, device="cpu"):
    from libragen_core.models.bundle import CARD_FILE, load_model_folder

    folder = base_folder(cfg)
    if torch.device(device).type == "cpu":
        device = "cpu"  # accelerate's multi-process CPU device is "cpu:0", which safetensors refuses
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


def loop_loss(loss_value: float, params: list[torch.nn.Parameter]) -> torch.Tensor:
    """A loss for TrainLoop when the stage already accumulated its gradients (DPO's split backward):
    its value is the true loss, its gradient is exactly zero (0 * p adds nothing to p.grad)."""
    return torch.tensor(loss_value, device=params[0].device) + 0.0 * params[0].sum()


# ---------------------------------------------------------------- validation

def heldout_triplets(spec, kind: str, vc: PostValidation):
    from .triplets import ProceduralTriplets

    src = ProceduralTriplets(dataclasses.replace(spec, split="heldout", seed=vc.seed), kind)
    return [src[i] for i in range(vc.clips)]


def validate_s2v(dit, bundle, items, vc: PostValidation, folder: Path, step: int, tag: str, logger=None) -> dict:
    """Sample each held-out triplet with its references; identity score (tracker match of the
    subject, mean over frames) and motion error (tracked centre vs the true centre, short-side
    units) of generated vs real clips, plus a contact sheet."""
    from libragen_core.conditioning.references import prepare_references
    from libragen_core.conditioning.subjects import Subjects
    from libragen_core.eval.tracking import track_scene
    from libragen_core.sampling.sampler import sample
    from libragen_core.spriteworld.render import render_scene
    from libragen_core.spriteworld.scene import Scene

    from .common.data import tensor_to_frames
    from .common.validation import save_contact_sheet

    dev = next(dit.parameters()).device
    s = vc.sampler
    ids, motion, rows = [], [], []
    neg = encode_text(bundle, [""])
    was = dit.training
    dit.eval()
    for i, (frames, refs, caption, scene_d) in enumerate(items):
        h, w = frames.shape[1:3]
        with torch.no_grad():
            z = bundle.vae.encode(prepare_references(refs, h, w, device=dev).unsqueeze(2))
        shape = (1, dit.config.in_dim, *bundle.vae.latent_shape(frames.shape[0], h, w))
        lat = sample(dit, shape, encode_text(bundle, [caption]), neg, Subjects(z.float()), steps=s.steps,
                     shift=s.shift, solver=s.solver, cfg=s.cfg, seed=vc.seed + i)
        with torch.no_grad():
            gen = tensor_to_frames(bundle.vae.decode(lat))[0]
        scene = Scene.from_dict(scene_d)
        truth = render_scene(scene).centers  # [K, T, 2]
        tracks = track_scene(gen, scene)
        ids.append(np.mean([t.match.mean() for t in tracks]))
        motion.append(np.mean([np.linalg.norm(t.centers - c, axis=1).mean() / min(h, w) for t, c in zip(tracks, truth)]))
        if len(rows) < 8:
            rows.append((frames, "real: " + caption.split("Video: ")[-1][:70]))
            rows.append((gen, f"{tag} step {step}: identity {ids[-1]:.2f}, motion err {motion[-1]:.2f}"))
    dit.train(was)
    img = save_contact_sheet(folder / "samples" / f"{tag}-{step:08d}.png", rows)
    if logger is not None:
        logger.image(step, "samples", img)
    return {"identity": float(np.mean(ids)), "motion_err": float(np.mean(motion))}


def s2v_direction_probe(dit, bundle, cache, items, pc, vc: PostValidation):
    """The direction probe of a post-training stage (training/direction_probe.py): the loss gap on
    the stage's cached triplets (references appended as in training) and samples of the held-out
    validation triplets, with their references, from the same noise under true and swapped
    captions (pixels, 0-255). `pc`: the stage's ProbeConfig; its sample_steps replace the
    validation sampler's steps."""
    from libragen_core.conditioning.references import prepare_references
    from libragen_core.conditioning.subjects import Subjects
    from libragen_core.sampling.sampler import sample

    from .common.data import tensor_to_frames
    from .direction_probe import directional, flat, loss_probe, sample_probe

    keep = directional(cache.captions)[: pc.clips]
    x0, refs, captions = cache.batch(keep) if keep else (None, None, [])
    items = [it for it in items if directional([it[2]])][: pc.samples]

    def generate(captions: list[str], seed: int):
        dev = next(dit.parameters()).device
        out = []
        for i, ((frames, ref_imgs, _, _), caption) in enumerate(zip(items, captions)):
            h, w = frames.shape[1:3]
            with torch.no_grad():
                z = bundle.vae.encode(prepare_references(ref_imgs, h, w, device=dev).unsqueeze(2))
            shape = (1, dit.config.in_dim, *bundle.vae.latent_shape(frames.shape[0], h, w))
            lat = sample(dit, shape, encode_text(bundle, [caption]), encode_text(bundle, [""]), Subjects(z.float()),
                         steps=pc.sample_steps, shift=vc.sampler.shift, solver=vc.sampler.solver, cfg=vc.sampler.cfg,
                         seed=seed + 1000 * i)
            with torch.no_grad():
                out.append(tensor_to_frames(bundle.vae.decode(lat))[0])
        return np.stack(out)

    def run(step: int) -> dict:
        out = flat(loss_probe(dit, lambda caps: encode_text(bundle, caps), x0, captions, pc.sigmas, refs=refs)
                   if keep else {"clips": 0})
        if items:
            out.update(flat(sample_probe(generate, [it[2] for it in items], vc.seed)))
        return out

    return run


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
