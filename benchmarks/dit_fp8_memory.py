"""Memory of an fp8 DiT file loaded with weight dtype "default" (kept in fp8) against bf16 (dequantized).

    .venv/bin/python benchmarks/dit_fp8_memory.py                # 14B on the meta device + a 1.3B file
    .venv/bin/python benchmarks/dit_fp8_memory.py --skip-file    # the meta-device figures only

1. The Wan2.1 14B layout built on the meta device (nothing allocated), as load_dit builds it for an
   fp8 file: bf16 everywhere (what "default" gave before, the reference) and fp8 block linears.
2. A scaled-fp8 file of the Wan2.1 1.3B shapes (random weights, ComfyUI's *_fp8_e4m3fn_scaled
   layout: fp8 block linears with a scale each, the rest bf16), loaded by load_dit with dtype
   default and bf16, each in its own child process so the peak-RSS rise (VmHWM after - before)
   is its own; every byte of the loaded model is read once so memory-mapped tensors count. The reference is the bf16 load of the same file in the same run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 2**30


def _rss_mib() -> float:
    # VmHWM, not getrusage's ru_maxrss: a child inherits its parent's peak in ru_maxrss through
    # fork + exec, so after this script's parent wrote the 1.35 GiB file the child's rise read 0
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def meta_figures(preset: str) -> dict:
    import torch

    from libragen_core.models.fp8 import use_fp8_block_linears, weight_bytes
    from libragen_core.models.presets import build_dit

    model = build_dit(preset, device="meta", dtype=torch.bfloat16)
    bf16 = weight_bytes(model)
    use_fp8_block_linears(model)
    return {"bf16": bf16, "fp8": weight_bytes(model)}


def write_fp8_file(path: Path, preset: str) -> None:
    """A random scaled-fp8 file of a preset's shapes, written tensor by tensor from the meta layout."""
    import torch

    from libragen_core.io.safetensors_file import save_state_dict
    from libragen_core.models.fp8 import MARKER_KEY, quantize
    from libragen_core.models.presets import build_dit

    shapes = {k: v.shape for k, v in build_dit(preset, device="meta").state_dict().items()}
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, shape in shapes.items():
        w = torch.randn(shape, generator=g) * 0.02
        if k.startswith("blocks.") and k.endswith(".weight") and len(shape) == 2:
            sd[k], sd[k[: -len("weight")] + "scale_weight"] = quantize(w)
        else:
            sd[k] = w.to(torch.bfloat16)
    sd[MARKER_KEY] = torch.empty(0, dtype=torch.float8_e4m3fn)
    save_state_dict(sd, path)


def load_one(path: str, dtype: str) -> dict:
    import torch  # imported before the baseline so its own memory is not counted

    from libragen_core.models.fp8 import weight_bytes
    from libragen_core.models.loading import load_dit

    before = _rss_mib()
    t0 = time.perf_counter()
    model = load_dit(path, dtype=None if dtype == "default" else dtype)
    seconds = time.perf_counter() - t0
    # tensors kept as stored stay memory-mapped from the file until first used: read every byte,
    # as a forward pass would, so the figure is what the loaded model occupies
    for t in model.state_dict().values():
        t.reshape(-1).view(torch.uint8).sum()
    q = model.blocks[0].ffn[0].weight
    return {"dtype": dtype, "block_weight_dtype": str(q.dtype), "weight_bytes": weight_bytes(model),
            "peak_rss_rise_mib": _rss_mib() - before, "seconds": seconds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meta-preset", default="wan2.1-t2v-14b")
    ap.add_argument("--file-preset", default="wan2.1-t2v-1.3b")
    ap.add_argument("--skip-file", action="store_true")
    ap.add_argument("--_load", nargs=2, metavar=("PATH", "DTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._load:
        print(json.dumps(load_one(*args._load)))
        return 0

    m = meta_figures(args.meta_preset)
    print(f"# {args.meta_preset} on the meta device (weights + buffers)")
    print("| layout | GiB | vs bf16 |\n|---|---|---|")
    print(f"| bf16 (an fp8 file under the old default; reference) | {m['bf16'] / GIB:.1f} | 1.00x |")
    print(f"| fp8 block linears (an fp8 file under default now) | {m['fp8'] / GIB:.1f} | {m['fp8'] / m['bf16']:.2f}x |")
    if args.skip_file:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{args.file_preset}_fp8_e4m3fn_scaled.safetensors"
        write_fp8_file(path, args.file_preset)
        size = path.stat().st_size
        rows = []
        for dtype in ("bf16", "default"):
            out = subprocess.run([sys.executable, __file__, "--_load", str(path), dtype], capture_output=True,
                                 text=True)
            if out.returncode:
                raise SystemExit(f"loading with dtype {dtype} failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ref = rows[0]
    print(f"\n# a scaled-fp8 file of the {args.file_preset} shapes ({size / GIB:.2f} GiB), loaded by load_dit")
    print("| weight dtype | block weights | weights GiB | peak RSS rise MiB | load s | memory vs bf16 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dtype']} | {r['block_weight_dtype'].replace('torch.', '')} | {r['weight_bytes'] / GIB:.2f} | "
              f"{r['peak_rss_rise_mib']:.0f} | {r['seconds']:.1f} | "
              f"{r['peak_rss_rise_mib'] / ref['peak_rss_rise_mib']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
