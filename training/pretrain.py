"""Pretrain the SpriteWorld foundation model: VAE, then text encoder + base text-to-video DiT.

    python -m training.pretrain --config training/configs/spriteworld.toml            # all enabled stages
    python -m training.pretrain --config ... --stages vae
    python -m training.pretrain --config ... --stages base,export --set base.optim.steps=4000

Each stage writes under <run.out>/<stage>/ (checkpoints/, metrics.jsonl, tb/, sheets) and resumes
from its newest checkpoint when re-run. `export` writes the model folder (model.json + weights)
in the layout of the embedded model (libragen_core/assets/libragen-sprite/).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import shutil
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import torch

from libragen_core.errors import LibraGenError

from .common.config import to_dict
from .common.data import (
    EpochSampler,
    LatentCache,
    ProceduralClips,
    file_digest,
    frames_to_tensor,
    tensor_to_frames,
)
from .common.init import adaln_zero_init
from .common.loop import (
    TrainLoop,
    check_global_batch,
    distributed,
    is_main_process,
    make_accelerator,
    seed_everything,
    setup_torch,
    wait_for_everyone,
)
from .common.losses import flow_matching_loss, sample_sigmas
from .common.prefetch import ParallelClips, parallel
from .common.schema import BaseStageConfig, ChainConfig, VAEStageConfig
from .common.vae_adversarial import PatchDiscriminator, adversarial_losses
from .common.vae_init import inflate_image_vae, kaiming_init
from .common.validation import STRAIGHT_MOVES, motion_check, save_contact_sheet, summarize

STAGES = ("vae", "base", "export")


# ================================================================ VAE
def build_vae(sc: VAEStageConfig):
    from libragen_core.models.wan_vae import VAEConfig, WanVAE

    vae = WanVAE(VAEConfig(dim=sc.dim, z_dim=sc.z_dim, num_res_blocks=sc.num_res_blocks))
    return kaiming_init(vae, sc.init_gain) if sc.init_gain > 0 else vae


def vae_forward(vae, x: torch.Tensor, frozen_encoder: bool = False) -> torch.Tensor:
    z = vae.config.z_dim
    with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_encoder):
        mu = vae.conv1(vae.encoder(x))[:, :z]
    return vae.decoder(vae.conv2(mu))


class VAEReconstruction(torch.nn.Module):
    """The VAE's training pass (vae_forward) as one module's forward: DDP syncs the gradients of
    what runs through the forward of the module it wraps, and WanVAE's own forward is another pass."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, frozen_encoder: bool = False) -> torch.Tensor:
        return vae_forward(self.vae, x, frozen_encoder)


def _diff_l1(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None, dim: int) -> torch.Tensor:
    """Mean L1 between the neighbour differences of a and b along dim, optionally weighted per
    pixel (the weight of a difference is the larger of its two pixels')."""
    n = a.shape[dim]

    def d(t):
        return t.narrow(dim, 1, n - 1) - t.narrow(dim, 0, n - 1)

    err = (d(a) - d(b)).abs()
    if weight is None:
        return err.mean()
    return (err * torch.maximum(weight.narrow(dim, 1, n - 1), weight.narrow(dim, 0, n - 1))).mean()


def image_grad_l1(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """L1 of the horizontal plus the vertical pixel differences of a and b: keeps thin details."""
    return _diff_l1(a, b, weight, -1) + _diff_l1(a, b, weight, -2)


def frame_diff_l1(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """L1 of the frame-to-frame differences of a and b ([B, C, T, H, W]): a moving sprite's trail,
    which whole-frame losses let a small VAE blur into a smear."""
    if a.shape[2] < 2:
        return a.new_zeros(())
    return _diff_l1(a, b, weight, 2)


def subject_loss_weight(masks: np.ndarray, extra: float) -> torch.Tensor:
    """Per-pixel loss weight [B, 1, T, H, W] from subject masks [B, T, H, W]: 1 + extra on subject
    pixels and the one-pixel ring around them, where blur first erases a sprite's outline.

    Backgrounds are most of every frame; at equal weight a small VAE spends its capacity on their
    textures and the sprites (what identity and motion metrics look at) come out as blobs."""
    m = torch.from_numpy(np.ascontiguousarray(masks)).float()
    if extra == 0:
        return torch.ones_like(m).unsqueeze(1)
    b, t, hh, ww = m.shape
    ring = torch.nn.functional.max_pool2d(m.reshape(b * t, 1, hh, ww), 3, stride=1, padding=1)
    return (1.0 + extra * ring).reshape(b, 1, t, hh, ww)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def vae_eval(vae, sc: VAEStageConfig, folder: Path, step: int) -> dict:
    """PSNR of full clips (streamed encode/decode, as at inference) on held-out identities + a sheet.

    During the image phase the figure is that of the VAE as it would be inflated now (key-frame
    hold), so the curve reads the same across the switch to video."""
    clips = ProceduralClips(dataclasses.replace(sc.data, seed=sc.data.seed + 1_000_003, split="heldout"))
    if step <= sc.image_steps:  # weights validated at step s have trained through step s - 1
        vae = inflate_image_vae(copy.deepcopy(vae))
    vae.eval()
    rows, scores = [], []
    with torch.no_grad():
        for i in range(sc.eval_clips):
            c = clips[i]
            rec = tensor_to_frames(vae.decode_raw(vae.encode_raw(frames_to_tensor(c.frames))))[0]
            scores.append(psnr(c.frames, rec))
            if i < 4:
                rows.append((c.frames, f"original {i}"))
                rows.append((rec, f"reconstruction {i}: PSNR {scores[-1]:.1f} dB"))
    vae.train()
    save_contact_sheet(folder / "samples" / f"recon-{step:08d}.png", rows)
    return {"psnr": float(np.mean(scores)), "psnr_min": float(np.min(scores))}


def measure_latent_stats(vae, sc: VAEStageConfig) -> tuple[torch.Tensor, torch.Tensor]:
    clips = ProceduralClips(sc.data)
    lats = []
    with torch.no_grad():
        for i in range(sc.stats_clips):
            lats.append(vae.encode_raw(frames_to_tensor(clips[10_000_000 + i].frames)))
    x = torch.cat(lats).transpose(0, 1).flatten(1)
    return x.mean(1), x.std(1).clamp_min(1e-3)


def run_vae(cfg: ChainConfig) -> Path:
    from libragen_core.models.vae_checkpoint import save_vae

    sc = cfg.vae
    folder = Path(cfg.run.out) / "vae"
    final = folder / "vae.safetensors"
    seed_everything(cfg.run.seed)
    vae = build_vae(sc)
    clips = parallel(ProceduralClips(sc.data), cfg.run.render_workers)
    modules = {"vae": vae}
    if sc.adversarial:
        modules["disc"] = PatchDiscriminator(sc.disc_dim)
    # the decoder phase leaves the encoder without gradients, and the discriminator has none before
    # adversarial_start: DDP must be told that some parameters may get none in a step (else it
    # waits for their gradients forever)
    loop = TrainLoop(folder, "vae", sc.optim, cfg.run, modules, ema_modules=(),
                     forward_modules={"vae": VAEReconstruction(vae)},
                     find_unused_parameters=sc.decoder_steps > 0 or sc.adversarial > 0)
    if sc.image_steps:
        check_global_batch(sc.image_batch, loop.world, "vae.image_batch")
    loop.resume()
    if loop.step >= sc.optim.steps and final.is_file() and (folder / "latent_stats.json").is_file():
        # finished earlier: rewriting the same weights would change the file's digest, and with
        # it the key of every latent cache encoded by this VAE
        loop.acc.print(f"[vae] already finished ({final})")
        return final
    dev = loop.device
    b = sc.optim.batch
    t_len = sc.data.frames
    h, w = sc.data.size
    decoder_from = sc.optim.steps - sc.decoder_steps if sc.decoder_steps else sc.optim.steps + 1

    def windows(first: int, n: int, n_frames: int, crop: int, gen: torch.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
        """Random windows of clips first..first+n-1 (the global batch): every process draws all n
        boxes, so the generator stays the same everywhere, and renders only its share of clips."""
        boxes = []
        for _ in range(n):
            t0 = int(torch.randint(0, t_len - n_frames + 1, (1,), generator=gen))
            y0 = int(torch.randint(0, h - crop + 1, (1,), generator=gen))
            x0 = int(torch.randint(0, w - crop + 1, (1,), generator=gen))
            boxes.append((slice(t0, t0 + n_frames), slice(y0, y0 + crop), slice(x0, x0 + crop)))
        out = []
        for j in range(n)[loop.share(n)]:
            clip = clips[first + j]
            out.append((clip.frames[boxes[j]], clip.subject_mask[boxes[j]]))
        return out

    def step_fn(step: int, gen: torch.Generator):
        # clip indices follow from the step alone, so the data order needs no state
        if step < sc.image_steps:
            n = sc.image_batch
            return reconstruction_loss(windows(step * n, n, 1, sc.image_crop or min(h, w), gen))
        if step == sc.image_steps > 0:  # once; a resumed run past this point loads inflated weights
            inflate_image_vae(vae)
        crop = sc.crop or min(h, w)
        return reconstruction_loss(windows(step * b, b, sc.crop_frames, crop, gen))

    def reconstruction_loss(windows: list[tuple[np.ndarray, np.ndarray]]):
        x = frames_to_tensor(np.stack([f for f, _ in windows])).to(dev)
        # decoder phase: the encoder runs without gradients, so the optimizer leaves it as it is
        y = loop.wrapped["vae"](x, frozen_encoder=loop.step >= decoder_from)
        weight = subject_loss_weight(np.stack([m for _, m in windows]), sc.subject_weight).to(dev)
        l1 = ((y - x).abs() * weight).mean()
        l2 = ((y - x).pow(2) * weight).mean()
        edge = image_grad_l1(y, x, weight)
        loss = sc.l1 * l1 + sc.l2 * l2 + sc.edge * edge
        metrics = {"l1": l1.item(), "l2": l2.item(), "edge": edge.item()}
        if sc.temporal:
            temporal = frame_diff_l1(y, x, weight)
            loss = loss + sc.temporal * temporal
            metrics["temporal"] = temporal.item()
        if sc.adversarial and loop.step >= sc.adversarial_start:
            g_loss, d_loss = adversarial_losses(modules["disc"], loop.wrapped["disc"], x, y)
            loss = loss + sc.adversarial * g_loss + d_loss
            metrics.update(adv_g=g_loss.item(), adv_d=d_loss.item())
        return loss, metrics

    def validate(step: int) -> dict:
        return vae_eval(vae, sc, folder, step)

    loop.run(step_fn, validate)
    if isinstance(clips, ParallelClips):
        clips.close()
    if loop.step < sc.optim.steps:
        loop.acc.print(f"[vae] stopped at step {loop.step} of {sc.optim.steps} (max_minutes); re-run to continue")
    if loop.acc.is_main_process:
        mean, std = measure_latent_stats(vae.eval(), sc)
        vae.set_latent_stats(mean, std)
        save_vae(vae, final)
        (folder / "latent_stats.json").write_text(json.dumps({"mean": mean.tolist(), "std": std.tolist()}, indent=1))
        print(f"[vae] wrote {final} (latent mean {mean.mean():.3f}, std range {std.min():.3f}..{std.max():.3f})")
    wait_for_everyone(cfg.run)
    return final


# ================================================================ base T2V (text encoder + DiT)
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
    embedding if any, and every cross-attention) at lr x scale, the rest of the DiT at lr. At lr 2e-3 for everything the text
    path shut itself off (docs/training.md, sixth session)."""
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
    from .direction_probe import directional, flat, loss_probe, sample_probe

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

    from .text_probe import probe

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
        from .common.pool_codec import PoolCodec

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


# ================================================================ export
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
                     notes=f"SpriteWorld base T2V model, pretrained by training/pretrain.py (run {Path(cfg.run.out).name}).")
    from libragen_core.io.atomic import atomic_path

    with atomic_path(out / CARD_FILE) as tmp:
        tmp.write_text(card.to_json(), encoding="utf-8")
    load_model_folder(out)  # the folder must load the way the embedded model does
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"[export] wrote {out} ({size:.1f} MiB)")


# ================================================================ CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.pretrain", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, action="append",
                   help="training/configs/<name>.toml; repeat to layer files (later ones win key by key)")
    p.add_argument("--stages", default="", help=f"comma list of {', '.join(STAGES)} (default: the enabled ones + export)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set base.optim.steps=200 (repeatable)")
    args = p.parse_args(argv)
    try:
        from .post_common import load_layered

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
        for s in stages:
            {"vae": run_vae, "base": run_base, "export": run_export}[s](cfg)
    except LibraGenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
