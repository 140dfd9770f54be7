"""Pretraining stage 1: the small Wan2.1-layout VAE on SpriteWorld clips (docs/training.md).

`python -m training.pretrain --config C --stages vae` runs it; it writes <run.out>/vae/vae.safetensors
with its measured latent statistics.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from ..common.data import frames_to_tensor, tensor_to_frames
from ..common.loop import TrainLoop, check_global_batch, seed_everything, wait_for_everyone
from ..common.prefetch import ParallelClips, parallel
from ..common.schema import ChainConfig, VAEStageConfig
from ..common.vae_adversarial import PatchDiscriminator, adversarial_losses
from ..common.vae_init import inflate_image_vae, kaiming_init
from ..spriteworld.clips import ProceduralClips
from ..spriteworld.validation import save_contact_sheet


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
