"""Throughput and memory of one training step of the SpriteWorld base model (DiT + small text encoder).

    .venv/bin/python benchmarks/train_step.py [--batch 32] [--steps 6] [--threads 1 2] [--vae-dim 8]

Settings compared in the same run (ratios against the first, the reference):
  fp32 step (flow-matching loss, AdamW)   -- reference
  same with gradient checkpointing        -- memory for compute
  forward only (no grad)                  -- what a step costs beyond the forward
  VAE training step on 24x24x5 crops (batch 4) -- the VAE stage
and each at the given torch thread counts (the 2 CPU cores are often shared: spinning OpenMP
threads of a 2-thread run then lose far more than they gain, see docs/training.md).
Prints samples/s, ratio to the reference and peak memory (CUDA max allocated, else process RSS).
The DPO step is added by the post-training part.
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from libragen_core.models.text_small import SmallTextConfig, SmallTextEncoder, WordTokenizer
from libragen_core.models.wan_dit import WanDiT, WanDiTConfig
from libragen_core.models.wan_vae import VAEConfig, WanVAE
from libragen_core.spriteworld.captions import caption_vocabulary
from training.common.init import adaln_zero_init
from training.common.losses import flow_matching_loss, sample_sigmas


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dit_setting(batch: int, device, checkpointing: bool, train: bool):
    tok = WordTokenizer(caption_vocabulary()["words"])
    text = SmallTextEncoder(SmallTextConfig(vocab_size=tok.vocab_size, text_dim=256, num_layers=2), tok).to(device)
    dit = adaln_zero_init(WanDiT(WanDiTConfig(dim=256, ffn_dim=1024, num_heads=2, num_layers=4, text_dim=256))).to(device)
    dit.gradient_checkpointing = checkpointing
    opt = torch.optim.AdamW(list(dit.parameters()) + list(text.parameters()), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(batch, 16, 5, 8, 8, generator=g).to(device)
    caps = ["Ref 1: a large blue star with orange stripes.\nVideo: Ref 1[the blue star] moves to the left "
            "on a plain pale blue background."] * batch

    def step():
        sig = sample_sigmas(batch, generator=g).to(device)
        noise = torch.randn(lat.shape, generator=g).to(device)
        if not train:
            with torch.no_grad():
                ctx = text.encode(caps, device=device)
                dit(lat, sig * 1000, ctx)
            return
        ctx = text.encode(caps, device=device)
        loss = flow_matching_loss(dit, lat, ctx, sig, noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def vae_setting(batch: int, device, dim: int):
    vae = WanVAE(VAEConfig.small(dim)).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, 5, 24, 24, device=device) * 2 - 1

    def step():
        z = vae.conv1(vae.encoder(x))[:, :16]
        (vae.decoder(vae.conv2(z)) - x).abs().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def measure(step, steps: int, device) -> float:
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--vae-dim", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    for threads in args.threads:
        torch.set_num_threads(threads)
        ref = None
        print(f"-- {threads} thread(s), device {device}, DiT batch {args.batch}")
        for name, make, n in (
            ("dit train step (reference)", lambda: dit_setting(args.batch, device, False, True), args.batch),
            ("dit train step, grad checkpointing", lambda: dit_setting(args.batch, device, True, True), args.batch),
            ("dit forward only", lambda: dit_setting(args.batch, device, False, False), args.batch),
            (f"vae train step dim {args.vae_dim}, 24x24x5, batch 4", lambda: vae_setting(4, device, args.vae_dim), 4),
        ):
            torch.manual_seed(0)
            dt = measure(make(), args.steps, device)
            ref = ref or dt / n
            print(f"{name:48s} {n / dt:8.1f} samples/s  time/sample x{dt / n / ref:5.2f}  peak {peak_mb(device):7.0f} MB")


if __name__ == "__main__":
    main()
