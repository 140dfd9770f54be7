"""LoRA merge cost at Wan2.1-1.3B layer shapes, each method against a reference in the same run.

    .venv/bin/python benchmarks/lora_merge.py                 # 2 blocks (20 layers), ranks 32 + 64
    .venv/bin/python benchmarks/lora_merge.py --blocks 30     # the whole 1.3B model

References: "full sum" = the weighted sum of dense dW per layer (what the exact merge replaces,
and what a .diff patch costs); "full svd" = torch.linalg.svd of that dense sum (what our svd
merge replaces with two QRs and an SVD of a (r1+r2)-square core). Each method runs in its own
child process so the peak-RSS rise (VmHWM after - before) is its own.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

DIM, FFN = 1536, 8960  # Wan2.1 T2V 1.3B
SHAPES = {"self_attn.q": (DIM, DIM), "self_attn.k": (DIM, DIM), "self_attn.v": (DIM, DIM),
          "self_attn.o": (DIM, DIM), "cross_attn.q": (DIM, DIM), "cross_attn.k": (DIM, DIM),
          "cross_attn.v": (DIM, DIM), "cross_attn.o": (DIM, DIM), "ffn.0": (FFN, DIM), "ffn.2": (DIM, FFN)}


def _loras(blocks: int, ranks: tuple[int, int]):
    import torch

    from libragen_core.lora import LoraFactors, LoraWeights

    out = []
    for i, r in enumerate(ranks):
        g = torch.Generator().manual_seed(i)
        out.append(LoraWeights({f"blocks.{b}.{t}": LoraFactors(torch.randn(r, n_in, generator=g) * 0.01,
                                                                  torch.randn(n_out, r, generator=g) * 0.01, r)
                                for b in range(blocks) for t, (n_out, n_in) in SHAPES.items()}))
    return out


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(method: str, blocks: int, ranks: tuple[int, int], svd_rank: int) -> dict:
    import torch

    from libragen_core.lora import merge_loras, merged_delta

    loras = _loras(blocks, ranks)
    w = [0.4, 0.6]
    names = loras[0].layer_names()
    before = _rss_mib()
    t0 = time.perf_counter()
    err = None
    if method == "full sum":
        for n in names:
            merged_delta(loras, w, n)
    elif method == "full svd":
        for n in names:
            torch.linalg.svd(merged_delta(loras, w, n).double(), full_matrices=False)
    else:
        kw = {"rank": svd_rank} if method == "svd" else {}
        if method == "ties":
            kw["density"] = 0.2
        res = merge_loras(loras, w, method, **kw)
        err = res.total_rel_error
    return {"method": method, "seconds": time.perf_counter() - t0, "peak_rise_mib": _rss_mib() - before,
            "rel_error": err}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--ranks", type=int, nargs=2, default=(32, 64))
    ap.add_argument("--svd-rank", type=int, default=32)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one, a.blocks, tuple(a.ranks), a.svd_rank)))
        return
    rows = {}
    for m in ("full sum", "concat", "full svd", "svd", "ties", "dare"):
        out = subprocess.run([sys.executable, __file__, "--one", m, "--blocks", str(a.blocks), "--ranks",
                              *map(str, a.ranks), "--svd-rank", str(a.svd_rank)],
                             capture_output=True, text=True, check=True)
        rows[m] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{a.blocks} blocks x {len(SHAPES)} layers at Wan2.1-1.3B shapes, LoRA ranks {a.ranks}, weights 0.4/0.6")
    print(f"{'method':10} {'seconds':>9} {'vs ref':>8} {'peak rise MiB':>14} {'rel. Frobenius error':>21}")
    refs = {"concat": "full sum", "svd": "full svd", "ties": "full sum", "dare": "full sum"}
    for m, r in rows.items():
        ratio = f"{r['seconds'] / rows[refs[m]]['seconds']:.2f}x" if m in refs else "ref"
        err = "-" if r["rel_error"] is None else f"{r['rel_error']:.3e}"
        print(f"{m:10} {r['seconds']:9.2f} {ratio:>8} {r['peak_rise_mib']:14.0f} {err:>21}")


if __name__ == "__main__":
    main()
