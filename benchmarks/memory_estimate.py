"""The memory estimate (libragen_core.memory) against what it estimates.

    .venv/bin/python benchmarks/memory_estimate.py            # tables for docs/memory.md
    .venv/bin/python benchmarks/memory_estimate.py --measure  # plus measured CPU peaks (minutes)

1. Real Wan shapes (1.3B, 14B; the Wan2.1 VAE) at 480p and 720p, 81 frames, one reference: the
   estimate of each stage next to the peak traced on fake tensors (tests/memory_probe.py: every
   storage the real modules create, followed until freed; nothing is allocated).
2. --measure: the DiT call of the full 30-block 1.3B (random weights) run for real on the CPU at
   small sizes, in a fresh process per size: the rise of its peak RSS over one forward against the
   estimate. Slow on a small CPU (the 1.3B's weights are read once per forward).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from libragen_core import memory  # noqa: E402
from libragen_core.models.presets import DIT_PRESETS  # noqa: E402
from libragen_core.models.wan_vae import VAEConfig  # noqa: E402
from libragen_core.sampling.guidance import PRESETS  # noqa: E402
from libragen_core.sampling.schedules import flow_sigmas  # noqa: E402
from tests.memory_probe import dit_peak, measured_dit_peak, vae_peaks  # noqa: E402

SIZES = {"480p": (480, 832), "720p": (720, 1280)}
GIB = 2**30
TEXT_TOKENS = 513  # umT5's 512 + the one zero row compact_padding keeps: the most a prompt can use


def real_shapes(frames: int, refs: int) -> None:
    passes = memory.max_passes(PRESETS["libragen"], flow_sigmas(30, 5.0).tolist(), refs > 0)
    print(f"## {frames} frames, {refs} reference(s), {passes} guidance passes batched; GiB (estimate / traced)\n")
    print("| model | dtype | size | DiT call | sampling total | VAE decode | reference encode |")
    print("|---|---|---|---|---|---|---|")
    vae = VAEConfig()
    for name in ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b"):
        cfg = DIT_PRESETS[name]
        for dtype in (torch.bfloat16, torch.float32):
            a = memory.activation_bytes(dtype)
            for label, (h, w) in SIZES.items():
                f, lh, lw = (frames - 1) // 4 + 1, h // 8, w // 8
                tokens = (f + refs) * (lh // 2) * (lw // 2)
                call = sum(memory.dit_call(cfg, passes, tokens, TEXT_TOKENS, a, a != 4).values())
                traced = dit_peak(cfg, passes, f + refs, lh, lw, TEXT_TOKENS, dtype)
                total = memory.sampling(cfg, (1, 16, f, lh, lw), refs, passes, TEXT_TOKENS, a, a != 4).total
                dec = memory.decoding(vae, 1, f, h, w, 4)
                enc = memory.reference_encoding(vae, max(refs, 1), h, w, 4)
                if name.endswith("1.3b") and dtype == torch.bfloat16:
                    d_tr, e_tr = vae_peaks(vae, f, lh, lw, max(refs, 1))
                    vae_cols = (f"{dec.total / GIB:.2f} / {d_tr / GIB:.2f}",
                                f"{enc.total / GIB:.2f} / {(e_tr + enc.parts['reference pixels']) / GIB:.2f}")
                else:
                    vae_cols = ("same", "same")
                print(f"| {name.removeprefix('wan2.1-t2v-')} | {str(dtype).removeprefix('torch.')} | {label} | "
                      f"{call / GIB:.2f} / {traced / GIB:.2f} | {total / GIB:.2f} | {vae_cols[0]} | {vae_cols[1]} |",
                      flush=True)
    print("\n(VAE in fp32, the same for both DiTs; 'reference encode' includes the white-padded pixels.)\n")


def measured() -> None:
    print("## The 1.3B (30 blocks, random weights) on the CPU: estimate vs measured peak-RSS rise, MiB\n")
    print("| dtype | rows x latent | tokens | estimate | measured | estimate / measured | s |")
    print("|---|---|---|---|---|---|---|")
    cfg = DIT_PRESETS["wan2.1-t2v-1.3b"]
    for dtype in ("bfloat16", "float32"):
        for rows, f, h, w in ((1, 2, 16, 16), (3, 2, 32, 32)):
            t0 = time.time()
            got = measured_dit_peak(cfg, rows, f, h, w, 21, dtype)
            a = 4 if dtype == "float32" else 2
            est = sum(memory.dit_call(cfg, rows, f * h * w // 4, 21, a, a != 4).values())
            print(f"| {dtype} | {rows} x {f}x{h}x{w} | {f * h * w // 4} | {est / 2**20:.1f} | {got / 2**20:.1f} | "
                  f"{est / got:.3f} | {time.time() - t0:.0f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--measure", action="store_true", help="also measure the 1.3B's DiT call on the CPU")
    p.add_argument("--frames", type=int, default=81)
    args = p.parse_args()
    real_shapes(args.frames, refs=1)
    if args.measure:
        measured()


if __name__ == "__main__":
    main()
