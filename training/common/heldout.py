"""Validation without ground truth, on the held-out part of a stage's data.

- `heldout_loss`: the flow-matching loss on every held-out item at fixed noise levels with fixed
  noise (the same at every validation, so the curve moves only with the model).
- `sample_heldout`: the held-out items' captions and references sampled with the model as it is,
  decoded, written as mp4 files and one contact sheet per validation (real clip above each sample).
  A source that has ground truth (SpriteWorld) adds its own scores of the samples (`source.score`).
"""
from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .cache import CachedData
from .data import tensor_to_frames
from .losses import flow_matching_loss

LOSS_SIGMAS = (0.25, 0.5, 0.75, 0.95)


@torch.no_grad()
def heldout_loss(dit, data: CachedData, sigmas: Sequence[float] = LOSS_SIGMAS, seed: int = 0) -> float:
    dev = next(p for p in dit.parameters() if p.requires_grad).device
    was = dit.training
    dit.eval()
    total, n = 0.0, 0
    try:
        for i in range(len(data)):
            z, refs = data.latents(i)
            ctx = data.text(data.items[i].text)
            for k, s in enumerate(sigmas):
                g = torch.Generator().manual_seed(seed * 1_000_003 + i * 101 + k)
                noise = torch.randn((1, *z.shape), generator=g)
                loss = flow_matching_loss(dit, z[None].to(dev), ctx.to(dev), torch.full((1,), float(s), device=dev),
                                          noise.to(dev), refs=refs[None].to(dev))
                total += float(loss)
                n += 1
    finally:
        dit.train(was)
    return total / max(n, 1)


def contact_sheet(rows: list[tuple[np.ndarray, str]], n_frames: int = 6, cell: int = 128) -> np.ndarray:
    """rows of (frames uint8 [T, H, W, 3] or one image [H, W, 3], label) -> an image: n_frames
    evenly spaced frames per row, each scaled to `cell` pixels high, the label under them."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=12)
    tiles = []
    for frames, label in rows:
        frames = frames[None] if frames.ndim == 3 else frames
        idx = np.linspace(0, len(frames) - 1, min(n_frames, len(frames))).round().astype(int)
        h, w = frames.shape[1:3]
        size = (max(1, round(w * cell / h)), cell)
        tiles.append(([Image.fromarray(frames[t]).resize(size, Image.BILINEAR) for t in idx], label))
    gap = 4
    width = max(sum(im.width + gap for im in ims) for ims, _ in tiles) + gap
    chars = max(30, width // 7)
    blocks = []
    for ims, label in tiles:
        lines = [ln for para in label.splitlines() for ln in textwrap.wrap(para, chars)] or [""]
        block = Image.new("RGB", (width, cell + 2 * gap + 15 * len(lines)), (255, 255, 255))
        x = gap
        for im in ims:
            block.paste(im, (x, gap))
            x += im.width + gap
        draw = ImageDraw.Draw(block)
        for j, line in enumerate(lines):
            draw.text((gap, cell + 2 * gap + 15 * j), line, fill=(0, 0, 0), font=font)
        blocks.append(np.asarray(block))
    return np.concatenate(blocks, axis=0)


@torch.no_grad()
def sample_item(dit, data: CachedData, i: int, context: torch.Tensor, negative: torch.Tensor, sampler, seed: int):
    """(latents [1, C, f, h, w], Subjects) of item i sampled with its references under the text
    features `context` (on the DiT's device), the null branch's `negative`, from the noise of `seed`.
    In eval mode (LoRA dropout off); the DiT's training flag is restored."""
    from libragen_core.conditioning.subjects import Subjects
    from libragen_core.sampling.sampler import sample

    z, refs = data.latents(i)
    subjects = Subjects(refs.transpose(0, 1).unsqueeze(2).to(context.device))
    was = dit.training
    dit.eval()
    try:
        lat = sample(dit, (1, *z.shape), context, negative, subjects, steps=sampler.steps, shift=sampler.shift,
                     solver=sampler.solver, cfg=sampler.cfg, seed=seed)
    finally:
        dit.train(was)
    return lat, subjects


@torch.no_grad()
def sample_heldout(dit, data: CachedData, load_vae: Callable, n: int, sampler, seed: int, folder: Path, step: int,
                   tag: str, fps: float = 16.0, real: Callable[[int], np.ndarray | None] | None = None,
                   score: Callable[[int, np.ndarray], dict] | None = None, logger=None, write: bool = True) -> dict:
    """Sample the first n held-out items; writes <folder>/samples/<tag>-<step>-<i>.mp4 and
    <tag>-<step>.png. load_vae(device) gives the VAE for decoding (released afterwards);
    real(i) the item's real clip for the sheet (or None); score(i, frames) a source's own metrics.
    write=False samples without writing (an FSDP process other than the main one: it has to take
    part in every forward)."""
    from libragen_core.io.images import save_png
    from libragen_core.io.video import write_video

    dev = next(p for p in dit.parameters() if p.requires_grad).device
    vae = load_vae(dev)
    neg = data.null_context().to(dev)
    rows, scores = [], []
    out_dir = folder / "samples"
    if write:
        out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for i in range(min(n, len(data))):
            it = data.items[i]
            lat, subjects = sample_item(dit, data, i, data.text(it.text).to(dev), neg, sampler, seed + i)
            frames = tensor_to_frames(vae.decode(lat))[0]
            ref_px = tensor_to_frames(vae.decode(subjects.latents))  # [R, 1, H, W, 3]
            if write:
                write_video(out_dir / f"{tag}-{step:08d}-{i}.mp4", frames, fps=fps)
            extra = score(i, frames) if score is not None else {}
            scores.append(extra)
            truth = real(i) if real is not None else None
            if truth is not None:
                rows.append((truth, f"real: {it.name}"))
            shown = ", ".join(f"{k} {v:.2f}" for k, v in extra.items())
            rows.append((frames, f"{tag} step {step}: {it.caption}" + (f" ({shown})" if shown else "")))
            rows.append((ref_px[:, 0], "references as the model sees them (decoded): "
                         + ", ".join(it.labels or ("",))))
    finally:
        del vae
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if rows and write:
        img = contact_sheet(rows)
        save_png(out_dir / f"{tag}-{step:08d}.png", img)
        if logger is not None:
            logger.image(step, "samples", img)
    keys = sorted({k for s in scores for k in s})
    return {k: float(np.mean([s[k] for s in scores if k in s])) for k in keys}


def heldout_validator(dit, held: CachedData | None, held_src, vae_file, validation, folder: Path, stage: str,
                      fps: float, logger=None, write: bool = True) -> Callable[[int], dict]:
    """The validate_fn of a LoRA stage on held-out real items (SFT, and DPO on its SFT stage's
    held-out items): their flow loss at fixed sigmas, then `validation.clips` samples of their
    captions and references (mp4 + contact sheet beside the real clip, and the source's own scores
    when it has ground truth). held_src.load(i) gives an item's real clip. write: see sample_heldout."""
    from libragen_core.models.vae_checkpoint import load_vae

    def validate(step: int) -> dict:
        if held is None:
            return {}
        out = {"heldout_loss": heldout_loss(dit, held, seed=validation.seed)}
        if validation.clips:
            def real(i):
                t = held_src.load(i)
                return None if t is None else t.frames

            out.update(sample_heldout(dit, held, lambda d: load_vae(vae_file, device=d), validation.clips,
                                      validation.sampler, validation.seed, folder, step, stage, fps=fps, real=real,
                                      score=getattr(held_src, "score", None), logger=logger, write=write))
        return out

    return validate
