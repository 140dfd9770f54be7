"""Cost of a Flow-DPO training step against an SFT step of the same size (training/flow_dpo.py).

    .venv/bin/python benchmarks/dpo_step.py                        # SpriteWorld DiT size, CPU
    .venv/bin/python benchmarks/dpo_step.py --device cuda --dim 1536 --ffn 8960 --heads 12 --layers 4 --latent 5x30x52

Modes, each in its own process (peak memory is per process): `sft` (flow loss with references,
batch B), `dpo-split` (B pairs: reference passes without a graph, then the winner's and the
loser's halves back-propagated one after the other, as training does), `dpo-joint` (B pairs, one
graph over both halves: the plain form, for comparison). The model is the DiT with a LoRA (the
DPO one on top of a folded SFT LoRA), one reference frame appended, as the stages run it.

Reported per mode: wall and CPU seconds per step (median; CPU time is what a shared machine's
load does not inflate), clips/s (SFT: B clips per step; DPO: 2B clips = B pairs per step),
and peak memory: torch.cuda.max_memory_allocated on CUDA; on CPU the process's peak RSS above
its RSS after the model, the data and one warm-up step without a graph were resident.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def run_mode(args) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    from libragen_core.lora import add_lora, fold_adapters
    from libragen_core.models.wan_dit import WanDiT, WanDiTConfig
    from training.common.losses import flow_matching_loss
    from training.flow_dpo import DPOBatch, flow_dpo_backward

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    f, h, w = (int(x) for x in args.latent.split("x"))
    model = WanDiT(WanDiTConfig(dim=args.dim, ffn_dim=args.ffn, num_heads=args.heads, num_layers=args.layers,
                                text_dim=args.text_dim)).to(dev)
    model.gradient_checkpointing = args.checkpointing
    add_lora(model, rank=args.rank, adapter_name="sft")
    fold_adapters(model)
    add_lora(model, rank=args.rank, adapter_name="dpo")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    b = args.batch
    g = torch.Generator().manual_seed(1)
    shape = (b, 16, f, h, w)
    x_w, x_l, eps = (torch.randn(shape, generator=g).to(dev) for _ in range(3))
    refs = torch.randn(b, 16, 1, h, w, generator=g).to(dev)
    ctx = torch.randn(b, 32, args.text_dim, generator=g).to(dev)
    sigma = torch.rand(b, generator=g).to(dev)
    batch = DPOBatch(winner=x_w, loser=x_l, context=ctx, refs=refs)

    def step():
        for p in params:
            p.grad = None
        if args.mode == "sft":
            flow_matching_loss(model, x_w, ctx, sigma, eps, refs=refs).backward()
        else:
            flow_dpo_backward(model, batch, eps, sigma, beta=500.0, split=args.mode == "dpo-split")
        if dev.type == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad():
        flow_matching_loss(model, x_w, ctx, sigma, eps, refs=refs)  # warm-up without a graph
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = current_rss_mib()
    step()  # warm-up with a graph (allocator caches, oneDNN kernels)
    times, cpu = [], []
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    peak = (torch.cuda.max_memory_allocated() / 2**20 - base) if dev.type == "cuda" else rss_mib() - base
    sec = sorted(times)[len(times) // 2]
    cpu_s = sorted(cpu)[len(cpu) // 2]
    clips = b if args.mode == "sft" else 2 * b
    return {"mode": args.mode, "step_s": sec, "cpu_s": cpu_s, "clips_per_s": clips / sec,
            "clips_per_cpu_s": clips / cpu_s,
            "peak_mib": peak, "tokens_per_clip": (f + 1) * (h // 2) * (w // 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--ffn", type=int, default=1024)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--text-dim", type=int, default=256)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--latent", default="5x16x16", help="latent F x h x w (5x8x8 = 64x64x17 video)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in the DiT blocks")
    p.add_argument("--mode", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args)))
        return
    rows = []
    for mode in ("sft", "dpo-split", "dpo-joint"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--mode", mode]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    ref = rows[0]
    print(f"DiT dim {args.dim} x {args.layers} layers, latent {args.latent} + 1 reference frame "
          f"({ref['tokens_per_clip']} tokens/clip), batch {args.batch}, LoRA rank {args.rank}, {args.device}")
    print("| step | wall s/step | CPU s/step | clips/s (wall) | clips per CPU-s | peak memory rise (MiB) "
          "| memory vs SFT | CPU time vs SFT |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['step_s']:.3f} | {r['cpu_s']:.3f} | {r['clips_per_s']:.1f} | "
              f"{r['clips_per_cpu_s']:.2f} | {r['peak_mib']:.0f} | {r['peak_mib'] / ref['peak_mib']:.2f}x | "
              f"{r['cpu_s'] / ref['cpu_s']:.2f}x |")


if __name__ == "__main__":
    main()
