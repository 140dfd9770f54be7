"""Pretraining stage 2: the small text encoder + the base text-to-video DiT on SpriteWorld clips,
on latents of the stage-1 VAE cached per curriculum phase (docs/training.md).

`python -m training.pretrain --config C --stages base` runs it; it writes <run.out>/base/dit.safetensors
and text.safetensors (the EMA weights when the run keeps them).
"""
from __future__ import annotations

import dataclasses
import time
import weakref
from pathlib import Path

import numpy as np
import torch

from libragen_core.errors import LibraGenError

from ..common.data import EpochSampler, LatentCache, file_digest, frames_to_tensor, tensor_to_frames
from ..common.init import adaln_zero_init
from ..common.loop import (
    TrainLoop,
    check_global_batch,
    distributed,
    make_accelerator,
    seed_everything,
    wait_for_everyone,
)
from ..common.losses import flow_matching_loss, sample_sigmas
from ..common.prefetch import ParallelClips, parallel
from ..common.schema import BaseStageConfig, ChainConfig
from ..spriteworld.clips import ProceduralClips
from ..spriteworld.validation import STRAIGHT_MOVES, motion_check, save_contact_sheet, summarize


def build_text(bc: BaseStageConfig):
    from libragen_core.models.text_small import SmallTextConfig, SmallTextEncoder, WordTokenizer
    from libragen_core.spriteworld.captions import text_vocabulary

    tok = WordTokenizer(text_vocabulary())
    t = bc.text
    enc = SmallTextEncoder(SmallTextConfig(vocab_size=tok.vocab_size, text_dim=t.text_dim, num_layers=t.num_layers,
                                           num_heads=t.num_heads, max_length=t.max_length), tok)
    if t.embed_std != 0.02:
        torch.nn.init.normal_(enc.token_embed.weight, std=t.embed_std)
    return enc


def build_dit(bc: BaseStageConfig, z_dim: int):
    from libragen_core.models.wan_dit import WanDiT, WanDiTConfig

    d = bc.dit
    dit = WanDiT(WanDiTConfig(dim=d.dim, ffn_dim=d.ffn_dim, num_heads=d.num_heads, num_layers=d.num_layers,
                              in_dim=z_dim, out_dim=z_dim, text_dim=bc.text.text_dim, patch_size=d.patch_size,
                              pooled_text=d.pooled_text))
    return adaln_zero_init(dit, bc.zero_cross_attn) if bc.adaln_zero else dit


def text_path_groups(dit, text, scale: float) -> list[dict]:
    """Optimizer groups: the text path (the text encoder, the DiT's text embedding, its pooled-text
    embedding if any, and every cross-attention) at lr x scale, the rest of the DiT at lr. At lr 2e-3
    for everything the text path shut itself off (docs/training.md, sixth session)."""
    pooled = (dit.pooled_text_embedding,) if dit.config.pooled_text else ()
    path = {id(p) for m in (text, dit.text_embedding, *pooled, *(b.cross_attn for b in dit.blocks))
            for p in m.parameters()}
    rest = [p for p in dit.parameters() if id(p) not in path]
    return [{"params": rest}, {"params": [p for p in (*text.parameters(), *dit.parameters()) if id(p) in path],
                               "lr_scale": scale}]


def text_features(text_module, tokenizer_owner, prompts: list[str], device) -> torch.Tensor:
    """Like SmallTextEncoder.encode (zero-padded to max_length) but through a (possibly wrapped) module."""
    ids, mask = tokenizer_owner.tokenize(prompts)
    hidden = text_module(ids.to(device), mask.to(device))
    out = hidden.new_zeros((ids.shape[0], tokenizer_owner.max_length, hidden.shape[-1]))
    out[:, : hidden.shape[1]] = hidden
    return out.float()


def vae_path(cfg: ChainConfig) -> Path:
    return Path(cfg.base.vae) if cfg.base.vae else Path(cfg.run.out) / "vae" / "vae.safetensors"


def build_caches(cfg: ChainConfig, vae, folder: Path, progress: bool = True) -> list[LatentCache]:
    """Every process encodes a share of the shards (the main process alone took ~6 min of a 1-hour
    base stage with the dim-16 VAE), then all load all of them."""
    bc = cfg.base
    digest = "pool-v1" if bc.vae == "pool" else file_digest(vae_path(cfg))
    state = distributed(cfg.run)
    caches = []
    for i, ph in enumerate(bc.phases):
        cache = LatentCache(folder / "cache" / f"phase{i}-{ph.data.key()}")
        src = parallel(ProceduralClips(ph.data), cfg.run.render_workers)
        try:
            caches.append(cache.build(src, ph.clips, lambda px: vae.encode(px, chunked=False), digest,
                                      batch=bc.encode_batch, progress=progress, rank=state.process_index,
                                      world=state.num_processes, barrier=state.wait_for_everyone))
        finally:
            if isinstance(src, ParallelClips):
                src.close()
    return caches


class PhasedSampler:
    def __init__(self, caches: list[LatentCache], batch: int, seed: int):
        self.samplers = [EpochSampler(len(c), batch, seed + 101 * i) for i, c in enumerate(caches)]

    def state_dict(self) -> dict:
        return {"phases": [s.state_dict() for s in self.samplers]}

    def load_state_dict(self, sd: dict) -> None:
        for s, d in zip(self.samplers, sd["phases"]):
            s.load_state_dict(d)


def motion_prompts(bc: BaseStageConfig, n: int | None = None):
    """Fixed validation scenes: one subject moving straight, from the first phase's look distribution."""
    base = bc.phases[0].data
    moves = tuple(m for m in (base.motions or tuple(STRAIGHT_MOVES)) if m in STRAIGHT_MOVES) or tuple(STRAIGHT_MOVES)
    src = ProceduralClips(dataclasses.replace(base, seed=bc.validation.seed, n_subjects=1, motions=moves,
                                              user_prompt_fraction=0.0))
    return [src[i] for i in range(bc.validation.prompts if n is None else n)]


def base_direction_probe(dit, text, vae, bc: BaseStageConfig, cache: LatentCache):
    """The direction probe of the base stage (training/direction_probe.py): the loss gap on the
    first phase's cached clips whose captions name a direction, and samples of the validation
    scenes with true vs swapped directions (pixels, 0-255). Probes the raw weights, not the EMA:
    the EMA lags the training by ~1 / (1 - decay) steps, which would blur the curve."""
    from ..direction_probe import directional, flat, loss_probe, sample_probe

    pc = bc.probe
    keep = directional(cache.captions)[: pc.clips]
    latents, captions = cache.latents[keep], [cache.captions[i] for i in keep]
    scenes = motion_prompts(bc, pc.samples) if pc.samples else []
    vc = dataclasses.replace(bc.validation, steps=pc.sample_steps)

    def run(step: int) -> dict:
        dev = next(dit.parameters()).device
        modes = (dit.training, text.training)
        text.eval()
        try:
            out = flat(loss_probe(dit, lambda caps: text_features(text, text, caps, dev), latents, captions,
                                  pc.sigmas))
            if scenes:
                t, h, w = scenes[0].frames.shape[:3]
                out.update(flat(sample_probe(lambda caps, seed: sample_t2v(dit, text, vae, caps, t, (h, w), vc, seed),
                                             [c.caption for c in scenes], vc.seed)))
        finally:
            dit.train(modes[0])
            text.train(modes[1])
        return out

    return run


def sample_t2v(dit, text, vae, prompts: list[str], frames: int, size, vc, seed: int) -> np.ndarray:
    """T2V samples (uint8 [B, T, H, W, 3]) with text-only CFG of weight vc.cfg."""
    from libragen_core.sampling.guidance import CFGSchedule, Constant
    from libragen_core.sampling.sampler import sample

    dev = next(dit.parameters()).device
    with torch.no_grad():
        ctx = text.encode(prompts, device=dev)
        neg = text.encode([""] * len(prompts), device=dev)
    shape = (len(prompts), dit.config.in_dim, *vae.latent_shape(frames, *size))
    g = CFGSchedule(Constant(vc.cfg), Constant(vc.cfg))
    lat = sample(dit, shape, ctx, neg, steps=vc.steps, shift=vc.shift, solver=vc.solver, cfg=g, seed=seed)
    with torch.no_grad():
        return tensor_to_frames(vae.decode(lat))


def base_validate(dit, text, vae, ema, bc: BaseStageConfig, scenes, folder: Path, step: int, logger=None) -> dict:
    from libragen_core.spriteworld.identity import COLORS

    from ..text_probe import probe

    # the validation clips' latents and the same check on them through the codec (the most a
    # sample can score): computed once per VAE and set of clips, not at every validation
    captions = tuple(c.caption for c in scenes)
    cached_vae = _CEILING.get("vae")
    if cached_vae is None or cached_vae() is not vae or _CEILING["captions"] != captions:
        with torch.no_grad():
            latents = vae.encode(frames_to_tensor(np.stack([c.frames for c in scenes]))).cpu()
            recon = tensor_to_frames(vae.decode(latents))
        ceiling = summarize([motion_check(r, COLORS[c.scene.subjects[0].identity.color], c.scene.subjects[0].motion)
                             for c, r in zip(scenes, recon)])
        _CEILING.update(vae=weakref.ref(vae), captions=captions, latents=latents, ceiling=ceiling)
    ctxs = [ema["dit"].applied(dit), ema["text"].applied(text)] if ema else []
    modes = (dit.training, text.training)
    for c in ctxs:
        c.__enter__()
    try:
        text.eval()
        prompts = list(captions)
        frames = scenes[0].frames
        gen = sample_t2v(dit, text, vae, prompts, frames.shape[0], frames.shape[1:3], bc.validation, bc.validation.seed)
        # does the DiT read its caption at all? (lr 2e-3 once shut the text path off: gap 0.0000)
        gaps = {f"text_gap_{s}": r["content_gap"]
                for s, r in probe(dit, text, _CEILING["latents"], prompts, TEXT_GAP_SIGMAS).items()}
    finally:
        dit.train(modes[0])
        text.train(modes[1])
        for c in reversed(ctxs):
            c.__exit__(None, None, None)
    results, rows = [], []
    for c, g in zip(scenes, gen):
        spec = c.scene.subjects[0]
        r = motion_check(g, COLORS[spec.identity.color], spec.motion)
        results.append(r)
        if len(rows) < 12:
            rows.append((c.frames, "real: " + c.caption.split("Video: ")[-1]))
            rows.append((g, f"generated step {step}: colour {'ok' if r.color_ok else 'NO'}, "
                            f"direction {'ok' if r.direction_ok else 'NO'} (moved {r.displacement[0]:+.1f},"
                            f"{r.displacement[1]:+.1f} px)"))
    img = save_contact_sheet(folder / "samples" / f"t2v-{step:08d}.png", rows)
    if logger is not None:
        logger.image(step, "samples", img)
    out = summarize(results)
    out.update(gaps)
    out.update({f"real_via_codec_{k}": v for k, v in _CEILING["ceiling"].items()})
    return out


_CEILING: dict = {}
TEXT_GAP_SIGMAS = (0.6, 0.9)  # loss(shuffled captions) - loss(own) on the validation clips: > 0 = text is used


def run_base(cfg: ChainConfig) -> Path:
    from libragen_core.models.loading import save_dit
    from libragen_core.models.vae_checkpoint import load_vae

    bc = cfg.base
    folder = Path(cfg.run.out) / "base"
    vp = vae_path(cfg)
    acc = make_accelerator(cfg.run)
    if bc.vae == "pool":
        from ..common.pool_codec import PoolCodec

        vae = PoolCodec()
    elif not vp.is_file():
        raise LibraGenError(f"the base stage needs a trained VAE at {vp}; run the vae stage first or set base.vae")
    else:
        vae = load_vae(vp, device=acc.device)
    check_global_batch(bc.optim.batch, acc.num_processes, "base.optim.batch")  # before the caches, not after
    t0 = time.perf_counter()
    caches = build_caches(cfg, vae, folder, progress=acc.is_main_process)
    acc.print(f"[base] latent caches ready in {time.perf_counter() - t0:.0f}s: {[len(c) for c in caches]} clips")
    seed_everything(cfg.run.seed + 1)
    text = build_text(bc)
    dit = build_dit(bc, vae.config.z_dim)
    sampler = PhasedSampler(caches, bc.optim.batch, cfg.run.seed)
    groups = text_path_groups(dit, text, bc.text_lr_scale)
    loop = TrainLoop(folder, "base", bc.optim, cfg.run, {"dit": dit, "text": text}, param_groups=groups,
                     ema_modules=("dit", "text"), data_state=sampler, accelerator=acc)
    loop.resume()
    dev = loop.device
    scenes = motion_prompts(bc) if loop.acc.is_main_process else []

    def phase_of(step: int) -> int:
        for i, ph in enumerate(bc.phases):
            if step < ph.until_step:
                return i
        return len(bc.phases) - 1

    def step_fn(step: int, gen: torch.Generator):
        p = phase_of(step)
        idx = sampler.samplers[p].next()
        lat, caps = caches[p].batch(idx)
        b = lat.shape[0]
        drop = torch.rand(b, generator=gen) < bc.caption_dropout
        sig = sample_sigmas(b, bc.sigma_sampling, mean=bc.sigma_mean, std=bc.sigma_std, shift=bc.sigma_shift,
                            generator=gen)
        noise = torch.randn(lat.shape, generator=gen)
        caps = ["" if d else c for d, c in zip(drop.tolist(), caps)]
        mine = loop.share(b)  # every process draws the global batch, then keeps its share
        ctx = text_features(loop.wrapped["text"], text, caps[mine], dev)
        loss = flow_matching_loss(loop.wrapped["dit"], lat[mine].to(dev), ctx, sig[mine].to(dev), noise[mine].to(dev))
        return loss, {"phase": p}

    def validate(step: int) -> dict:
        return base_validate(dit, text, vae, loop.ema, bc, scenes, folder, step, loop.log)

    probe = base_direction_probe(dit, text, vae, bc, caches[0]) if bc.probe.every and loop.acc.is_main_process else None
    for ph in bc.phases:
        if loop.step < ph.until_step:
            loop.run(step_fn, validate, until=ph.until_step, probe_fn=probe, probe_every=bc.probe.every)
            if loop.step < min(ph.until_step, bc.optim.steps):
                break  # max_minutes
    if loop.acc.is_main_process:
        ema = loop.ema
        dit_out, text_out = folder / "dit.safetensors", folder / "text.safetensors"
        if ema:
            with ema["dit"].applied(dit), ema["text"].applied(text):
                save_dit(dit, dit_out)
                text.save(text_out)
        else:
            save_dit(dit, dit_out)
            text.save(text_out)
        print(f"[base] wrote {dit_out} and {text_out} (step {loop.step}{', EMA weights' if ema else ''})")
    wait_for_everyone(cfg.run)
    return folder
