"""Memory and time of one LoRA SFT step, and of one DPO step, with the Wan2.1 1.3B shapes (random
weights), on CPU.

    .venv/bin/python benchmarks/lora_sft_memory.py [--frames 3 --height 16 --width 16] [--rank 32]
    .venv/bin/python benchmarks/lora_sft_memory.py --cases bf16+ckpt dpo   # the DPO step against SFT only
    .venv/bin/python benchmarks/lora_sft_memory.py --table      # the computed memory table only

Compared in the same run, each case in a fresh child process (so each peak is its own):
  fp32      -- the reference: the base as the SpriteWorld path loads it (an fp32 copy), no checkpointing
  bf16+ckpt -- a real base as training/common/base_model.py loads it: frozen bf16, gradient
               checkpointing, the LoRA in fp32
  dpo       -- the real-data DPO step (training/dpo.py) on that same base: Flow-DPO on a winner and a
               loser of the clip's shape sharing noise and sigma, the reference = the model with
               its adapter off, split backward (training/flow_dpo.py)
All run the same step shape: references appended (one latent frame), flow-matching loss on the video
frames, backward, AdamW on the LoRA. Peak = the child's maximum resident memory (CPU) or CUDA's
max allocated. Goals: bf16+ckpt at most half the fp32 reference's peak; dpo at most 1.3 x the
bf16+ckpt SFT step's peak.

--table prints the computed memory of the 1.3B and 14B bases for the docs (docs/training-real-data.md):
weights (bf16 / fp8), LoRA (fp32), its gradients and AdamW state, and activations per 1,000
tokens with checkpointing (each block's input kept, one block's activations at a time).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def build(preset: str, dtype: torch.dtype):
    """The DiT with random weights made directly in `dtype` (no transient fp32 copy for bf16)."""
    from libragen_core.models.presets import DIT_PRESETS
    from libragen_core.models.wan_dit import WanDiT

    with torch.device("meta"):
        dit = WanDiT(DIT_PRESETS[preset])
    dit = dit.to_empty(device="cpu").to(dtype)
    random_init_(dit, torch.Generator().manual_seed(0))
    return dit.requires_grad_(False)  # WanDiT has no buffers: RoPE tables are computed per call


def random_init_(dit, g: torch.Generator) -> None:
    """Random weights in place, drawn from `g` (on the weights' device): fan-in scaled matrices,
    unit norms, zero biases, small modulations, zero LoRA up-projections. A model sharded with
    FSDP gets each process's own part (benchmarks/fsdp_memory.py)."""
    def own(p):
        return p.to_local() if hasattr(p, "to_local") else p

    with torch.no_grad():
        for name, p in dit.named_parameters():
            t = own(p)
            if "lora_B" in name:
                t.zero_()
            elif p.ndim >= 2:
                t.normal_(0.0, p.shape[-1] ** -0.5, generator=g)
            else:
                t.copy_(torch.ones_like(t) if "norm" in name else torch.zeros_like(t))
        for blk in dit.blocks:
            own(blk.modulation).normal_(0.0, 0.02, generator=g)
        own(dit.head.modulation).normal_(0.0, 0.02, generator=g)


def add_step_args(p: argparse.ArgumentParser) -> None:
    """The shape of the measured LoRA step: the clip's latent size and the LoRA rank."""
    p.add_argument("--frames", type=int, default=3, help="latent frames of the clip (plus one reference frame)")
    p.add_argument("--height", type=int, default=16, help="latent height")
    p.add_argument("--width", type=int, default=16, help="latent width")
    p.add_argument("--rank", type=int, default=32)


def peak_bytes() -> int:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_case(case: str, frames: int, height: int, width: int, rank: int, steps: int) -> dict:
    from libragen_core.lora import add_lora, lora_trainable_parameters
    from training.common.losses import flow_matching_loss

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    from training.flow_dpo import DPOBatch, flow_dpo_backward

    dtype = torch.float32 if case == "fp32" else torch.bfloat16
    t0 = time.perf_counter()
    dit = build("wan2.1-t2v-1.3b", dtype)
    torch.manual_seed(1)
    add_lora(dit, rank=rank, alpha=rank, adapter_name="dpo" if case == "dpo" else "default")
    dit.gradient_checkpointing = case != "fp32"
    dit.train()
    params = lora_trainable_parameters(dit, "dpo" if case == "dpo" else "default")
    opt = torch.optim.AdamW(params, lr=1e-4)
    built = time.perf_counter() - t0
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(1, 16, frames, height, width, generator=g)
    loser = torch.randn(1, 16, frames, height, width, generator=g)
    refs = torch.randn(1, 16, 1, height, width, generator=g)
    ctx = torch.zeros(1, 512, 4096)
    ctx[:, :40] = torch.randn(1, 40, 4096, generator=g)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        eps = torch.randn(x0.shape, generator=g)
        if case == "dpo":
            stats = flow_dpo_backward(dit, DPOBatch(winner=x0, loser=loser, context=ctx, refs=refs), eps,
                                      torch.tensor([0.7]), beta=500.0, split=True)
            loss = torch.tensor(stats.loss)
        else:
            loss = flow_matching_loss(dit, x0, ctx, torch.tensor([0.7]), eps, refs=refs)
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    tokens = (frames + 1) * (height // 2) * (width // 2)
    return {"case": case, "peak_bytes": peak_bytes(), "step_s": min(times), "build_s": built, "loss": float(loss),
            "tokens": tokens, "lora_params": sum(p.numel() for p in params)}


def memory_table(rank: int = 32, tokens: int = 1000) -> list[dict]:
    """Computed memory (bytes) of a LoRA SFT step for the 1.3B and 14B shapes."""
    from libragen_core.models.presets import DIT_PRESETS
    from libragen_core.models.wan_dit import WanDiT

    rows = []
    for preset in ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b"):
        c = DIT_PRESETS[preset]
        with torch.device("meta"):
            dit = WanDiT(c)
        n = sum(p.numel() for p in dit.parameters())
        block_linears = sum(m.weight.numel() for b in dit.blocks for m in b.modules() if isinstance(m, torch.nn.Linear))
        per_block_lora = rank * (16 * c.dim + 2 * (c.dim + c.ffn_dim))  # 8 attention linears + ffn.0 + ffn.2
        lora = per_block_lora * c.num_layers
        # checkpointing keeps each block's bf16 input; the block being recomputed holds its own
        # activations (normed input, q/k/v/attention out/o, cross-attention, the FFN's hidden layer
        # before and after GELU, residual sums: about 12 x dim + 2 x ffn_dim values per token)
        kept = c.num_layers * c.dim * 2 * tokens
        one_block = (12 * c.dim + 2 * c.ffn_dim) * 2 * tokens
        one = dit.blocks[0]
        one_linears = sum(m.weight.numel() for m in one.modules() if isinstance(m, torch.nn.Linear))
        one_params = sum(p.numel() for p in one.parameters())
        rows.append({"base": preset, "params": n, "weights_bf16": 2 * n, "weights_fp8": 2 * n - block_linears,
                     "layers": c.num_layers, "block_bf16": 2 * one_params, "block_fp8": 2 * one_params - one_linears,
                     "lora_params": lora, "lora_fp32": 4 * lora, "lora_grads": 4 * lora, "adamw": 8 * lora,
                     "act_per_1k_tokens": (kept + one_block) * 1000 // tokens})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_step_args(p)
    p.add_argument("--steps", type=int, default=2, help="timed steps per case (the fastest is reported)")
    p.add_argument("--table", action="store_true", help="print the computed memory table only")
    p.add_argument("--cases", nargs="+", default=["fp32", "bf16+ckpt", "dpo"], choices=["fp32", "bf16+ckpt", "dpo"],
                   help="the cases to run (the first is the reference of the ratios)")
    p.add_argument("--case", help=argparse.SUPPRESS)  # a child process runs one case
    a = p.parse_args(argv)
    if a.case:
        print("RESULT" + json.dumps(run_case(a.case, a.frames, a.height, a.width, a.rank, a.steps)))
        return 0
    gib = 2**30
    print(f"computed memory, LoRA rank {a.rank} on the 10 linears of every block (GiB):")
    print("| base | weights bf16 | weights fp8 | LoRA fp32 | LoRA grads | AdamW state | activations / 1k tokens (ckpt) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in memory_table(a.rank):
        print(f"| {r['base']} ({r['params'] / 1e9:.2f}B) | {r['weights_bf16'] / gib:.2f} | {r['weights_fp8'] / gib:.2f} | "
              f"{r['lora_fp32'] / gib:.3f} | {r['lora_grads'] / gib:.3f} | {r['adamw'] / gib:.3f} | "
              f"{r['act_per_1k_tokens'] / gib:.3f} |")
    if a.table:
        return 0
    results = {}
    for case in a.cases:
        cmd = [sys.executable, __file__, "--case", case, "--frames", str(a.frames), "--height", str(a.height),
               "--width", str(a.width), "--rank", str(a.rank), "--steps", str(a.steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        results[case] = json.loads(out.stdout.split("RESULT", 1)[1])
    ref = results[a.cases[0]]
    print(f"\nLoRA SFT step, Wan2.1 1.3B shapes, {ref['tokens']} tokens (latent {a.frames}x{a.height}x{a.width} + 1 "
          f"reference frame), rank {a.rank} ({ref['lora_params'] / 1e6:.1f}M LoRA params), "
          f"{os.environ.get('BENCH_THREADS', '1')} thread(s), {'CUDA' if torch.cuda.is_available() else 'CPU'}:")
    print(f"| case | peak memory (GiB) | vs {a.cases[0]} | step (s) | vs {a.cases[0]} |")
    print("|---|---:|---:|---:|---:|")
    for case, r in results.items():
        print(f"| {case} | {r['peak_bytes'] / gib:.2f} | {r['peak_bytes'] / ref['peak_bytes']:.2f} | {r['step_s']:.1f} | "
              f"{r['step_s'] / ref['step_s']:.2f} |")
    for case, base, goal in (("bf16+ckpt", "fp32", 0.5), ("dpo", "bf16+ckpt", 1.3)):
        if case in results and base in results:
            ratio = results[case]["peak_bytes"] / results[base]["peak_bytes"]
            print(f"goal: {case} at most {goal:.2f} of the {base} peak -> {ratio:.2f} "
                  f"({'met' if ratio <= goal else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
