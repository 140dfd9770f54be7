"""Round trip through a small VAE: how much of a true SpriteWorld clip survives encode -> decode.

    PYTHONPATH=. python benchmarks/vae_round_trip.py runs/spriteworld/vae/vae.safetensors [--suite small] [--out DIR]

For every case of the eval suite (held-out and seen identities, 1-3 subjects) the true clip is
rendered, encoded and decoded with streaming (as at inference), and compared with the original:
PSNR, and every SpriteWorld metric on the original vs on the round trip. Two reference rows put
the PSNR in scale: each clip replaced by its mean colour, and by 8x8 average pooling of every
frame. A VAE is good enough for the embedded model when its round trip keeps the metrics near the
original's: the generated videos can never score above what the VAE lets through.
Writes round_trip.json and a contact sheet (original above round trip) when --out is given.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def pooled(frames: np.ndarray, k: int = 8) -> np.ndarray:
    t, h, w, c = frames.shape
    blocks = frames.reshape(t, h // k, k, w // k, k, c).astype(np.float64).mean(axis=(2, 4))
    return np.repeat(np.repeat(blocks, k, axis=1), k, axis=2)


def main(argv=None) -> int:
    from libragen_core.eval.harness import (
        SUMMARY_METRICS,
        GroundTruthGenerator,
        evaluate_clip,
        vae_round_trip,
    )
    from libragen_core.eval.suite import build_suite
    from libragen_core.models.vae_checkpoint import load_vae
    from training.pretrain.vae import psnr

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("vae", help="a small VAE .safetensors (training/pretrain/vae.py's stage)")
    p.add_argument("--suite", default="small")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="", help="folder for round_trip.json and round_trip.png")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    vae = load_vae(args.vae).eval()
    cases = build_suite(args.suite)
    gt = GroundTruthGenerator(cases)
    rows, sheet = [], []
    t0 = time.perf_counter()
    for c in cases:
        frames = gt.generate(None, c.prompts["caption"], c.seed, c.scene.n_frames, *c.scene.size)
        rec = vae_round_trip(vae, frames)
        mean_colour = np.broadcast_to(frames.reshape(-1, 3).mean(0), frames.shape)
        rows.append({"case": c.id, "psnr": psnr(frames, rec), "psnr_mean_colour": psnr(frames, mean_colour),
                     "psnr_pool8": psnr(frames, pooled(frames)),
                     "original": evaluate_clip(frames, c)["summary"], "round_trip": evaluate_clip(rec, c)["summary"]})
        if len(sheet) < 8:
            sheet += [(frames, f"{c.id} original"), (rec, f"{c.id} round trip: PSNR {rows[-1]['psnr']:.1f} dB")]
    secs = time.perf_counter() - t0
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "psnr_mean_colour", "psnr_pool8")}
    metrics = {side: {m: float(np.mean([r[side][m] for r in rows])) for m in SUMMARY_METRICS}
               for side in ("original", "round_trip")}
    print(f"{len(rows)} clips of suite {args.suite!r}, {secs:.1f} s")
    print(f"PSNR round trip {mean['psnr']:.2f} dB | mean colour {mean['psnr_mean_colour']:.2f} dB | "
          f"8x8 pooling {mean['psnr_pool8']:.2f} dB")
    print("| metric | original | round trip |\n|---|---|---|")
    for m in SUMMARY_METRICS:
        print(f"| {m} | {metrics['original'][m]:.3f} | {metrics['round_trip'][m]:.3f} |")
    if args.out:
        from libragen_core.io.atomic import atomic_path
        from training.spriteworld.validation import save_contact_sheet

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "round_trip.json") as tmp:
            tmp.write_text(json.dumps({"vae": args.vae, "suite": args.suite, "mean": mean, "metrics": metrics,
                                       "clips": rows}, indent=1))
        save_contact_sheet(out / "round_trip.png", sheet)
        print(f"wrote {out / 'round_trip.json'} and {out / 'round_trip.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
