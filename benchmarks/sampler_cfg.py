"""Cost of dynamic CFG in the sampling loop, as ratios against the one-pass run in the same process.

    .venv/bin/python benchmarks/sampler_cfg.py                                   # CPU, tiny DiT
    python benchmarks/sampler_cfg.py --device cuda --preset wan2.1-t2v-1.3b --dtype bf16 \\
        --latent 21x60x104 --refs 2 --steps 4                                     # GPU, random 1.3B

For each CFG preset it times whole `sample()` runs (median of --repeats; CPU time of the process
on CPU, wall time on CUDA) and reports seconds per step, model rows per step and the ratio to cfg="none". A reference row times the same three
conditions as three separate B=1 model calls per step (what an unbatched sampler does), and a
"loop overhead" row compares cfg="none" with bare model calls, to show what the loop itself adds.
Peak memory: torch.cuda.max_memory_allocated on CUDA, the process's peak RSS on CPU.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libragen_core.conditioning.subjects import Subjects  # noqa: E402
from libragen_core.models.presets import build_dit  # noqa: E402
from libragen_core.sampling.sampler import initial_noise, sample  # noqa: E402
from libragen_core.sampling.schedules import flow_sigmas  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_time(fn, device, repeats):
    # On CPU the process's CPU time (all threads) is used: on a shared machine wall time mostly
    # measures the neighbours. On CUDA, wall time after a synchronize.
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = clock()
        fn()
        _sync(device)
        times.append(clock() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--latent", default="5x16x16", help="F x h x w of the video latents")
    ap.add_argument("--refs", type=int, default=2)
    ap.add_argument("--text-len", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--solver", default="unipc")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_dit(args.preset, device=device, dtype=DTYPES[args.dtype]).eval()
    cfg_model = model.config
    f, h, w = (int(v) for v in args.latent.split("x"))
    shape = (1, cfg_model.in_dim, f, h, w)
    g = torch.Generator().manual_seed(1)
    context = torch.randn(1, args.text_len, cfg_model.text_dim, generator=g).to(device)
    negative = torch.randn(1, args.text_len, cfg_model.text_dim, generator=g).to(device)
    subjects = Subjects(torch.randn(args.refs, cfg_model.in_dim, 1, h, w, generator=g)) if args.refs else None
    noise = initial_noise(shape, 0, device=device)

    def run(cfg):
        return sample(model, noise, context, negative, subjects, steps=args.steps, shift=5.0, solver=args.solver,
                      cfg=cfg)

    def bare_calls():
        # cfg="none" without the loop: the same model rows, no guidance or solver work.
        sigmas = flow_sigmas(args.steps, 5.0).tolist()
        x = torch.cat([noise, subjects.frames(1, device=device)], 2) if subjects else noise
        pos = subjects.frame_pos(f, device=device) if subjects else None
        with torch.no_grad():
            for s in sigmas[:-1]:
                model(x, torch.tensor([s * 1000.0], device=device), context, frame_pos=pos)

    def separate_three():
        sigmas = flow_sigmas(args.steps, 5.0).tolist()
        refs = subjects.frames(1, device=device) if subjects else noise[:, :, :0]
        pos = subjects.frame_pos(f, device=device) if subjects else None
        with torch.no_grad():
            for s in sigmas[:-1]:
                t = torch.tensor([s * 1000.0], device=device)
                for r, ctx in ((refs, context), (refs, negative), (torch.zeros_like(refs), negative)):
                    model(torch.cat([noise, r], 2), t, ctx, frame_pos=pos)

    run("none")  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = _median_time(lambda: run("none"), device, args.repeats)
    rows = [("none (1 pass)", base, 1)]
    for cfg, n in (("stiv-jit", 2), ("phantom", 3), ("libragen", 3), ("humo", 2)):
        rows.append((cfg, _median_time(lambda cfg=cfg: run(cfg), device, args.repeats), n))
    rows.append(("3 separate B=1 calls", _median_time(separate_three, device, args.repeats), 3))
    rows.append(("bare model calls (no loop)", _median_time(bare_calls, device, args.repeats), 1))

    print(f"device={device} preset={args.preset} dtype={args.dtype} latent={shape} refs={args.refs} "
          f"text_len={args.text_len} steps={args.steps} solver={args.solver} threads={torch.get_num_threads()}")
    print(f"{'run':30s} {'s/step':>9s} {'rows':>5s} {'x none':>7s}")
    for name, secs, n in rows:
        print(f"{name:30s} {secs / args.steps:9.4f} {n:5d} {secs / base:7.2f}")
    if device.type == "cuda":
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    else:
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
