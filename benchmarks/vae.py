"""Wan2.1 VAE encode/decode: ours against ComfyUI's WanVAE, same weights, same run.

Run it with ComfyUI's interpreter so both implementations are importable:

    COMFYUI_DIR=/work/comfy/ComfyUI PYTHONPATH=$COMFYUI_DIR:. \\
        /work/comfy/venv/bin/python benchmarks/vae.py --size 64 --frames 17,33,65      # CPU
    ... benchmarks/vae.py --device cuda --dtype bf16 --size 480x832 --frames 17,33,81   # GPU

Random weights in the released layout (dim 96 unless --dim) are written once to a safetensors
file; every measurement is one encode or decode in a FRESH child process that loads that file,
so allocator caches never carry over and each side's peak memory is its own. Children run in
alternating order (ours first, then theirs first) to spread out any load from other processes.
Time: on CUDA wall time after a warm-up call; on CPU the process's CPU time (one thread by
default), which measures the work done and, unlike wall time, hardly moves when other processes
share the cores (wall time is reported too). Peak memory: on CUDA the allocator's peak during the
call minus what was allocated before it; on CPU the rise of the process's peak RSS (VmHWM, reset
through /proc/self/clear_refs just before the call) over the RSS before it, with glibc told to
map every allocation over 64 KiB separately (MALLOC_MMAP_THRESHOLD_), so freed memory goes back
to the system and one side's loading history (ComfyUI copies the weights, we assign them) cannot
hide or inflate the other's peak. The outputs of both sides are compared too.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the sibling helper module, also when run through runpy (which does not add the script folder)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_import import import_comfy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _comfy_vae(cfg: dict):
    import_comfy(cfg["device"])
    import comfy.ldm.wan.vae

    return comfy.ldm.wan.vae.WanVAE(dim=cfg["dim"], z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                    attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)


def child(args) -> None:
    """One measured call: load weights, build inputs, reset the peak, run, report JSON."""
    import torch
    from safetensors.torch import load_file, save_file

    cfg = json.loads(args.child)
    dtype = getattr(torch, DTYPES[cfg["dtype"]])
    device = torch.device(cfg["device"])
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    # cloned: safetensors may hand back file-backed pages that would only count as RSS when the
    # measured call first touches them; both sides start with resident weights
    sd = {k: v.clone() for k, v in load_file(cfg["weights"]).items()}
    if cfg["impl"] == "ours":
        sys.path.insert(0, str(REPO))
        from libragen_core.models.wan_vae import VAEConfig, WanVAE

        with torch.device("meta"):
            model = WanVAE(VAEConfig(dim=cfg["dim"]))
        model.load_state_dict(sd, strict=True, assign=True)
        model.set_latent_stats(*model.config.stats())
        encode, decode = (lambda x: model.encode_raw(x)), (lambda z: model.decode_raw(z, clamp=False))
    else:
        model = _comfy_vae(cfg)
        model.load_state_dict(sd, strict=True)
        encode, decode = model.encode, model.decode
    model = model.to(device=device, dtype=dtype).eval()
    del sd
    f, h, w = cfg["frames"], cfg["height"], cfg["width"]
    g = torch.Generator().manual_seed(f)
    if cfg["op"] == "encode":
        inp = (torch.rand(1, 3, f, h, w, generator=g) * 2 - 1).to(device, dtype)
        fn = encode
    else:
        inp = torch.randn(1, 16, (f - 1) // 4 + 1, h // 8, w // 8, generator=g).to(device, dtype)
        fn = decode
    with torch.no_grad():
        if device.type == "cuda":
            fn(inp)  # warm-up: cuDNN autotuning and lazy kernel loads are not the model's cost
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM to the current RSS
            before = _rss_kb("VmRSS") * 1024
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(inp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        seconds = wall if device.type == "cuda" else cpu
        peak = (torch.cuda.max_memory_allocated() if device.type == "cuda" else _rss_kb("VmHWM") * 1024) - before
    save_file({"out": out.float().cpu().contiguous()}, cfg["out"])
    print(json.dumps({"seconds": seconds, "wall": wall, "peak_bytes": peak, "shape": list(out.shape)}))


def _run_child(cfg: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("COMFYUI_DIR"), str(REPO),
                                                                      os.environ.get("PYTHONPATH")])),
               MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cfg)], capture_output=True, text=True,
                         env=env, cwd=os.environ.get("COMFYUI_DIR") or None)
    if res.returncode != 0:
        sys.exit(f"child failed ({cfg['impl']} {cfg['op']} {cfg['frames']}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--dim", type=int, default=96, help="VAE width; 96 is the released Wan2.1 VAE")
    p.add_argument("--size", default="64", help="frame size HxW in pixels (or one number for square)")
    p.add_argument("--frames", default="17,33,65")
    p.add_argument("--ops", default="encode,decode")
    p.add_argument("--repeats", type=int, default=1, help="measurements per side (medians are reported)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in each child (0: torch default)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    import torch
    from safetensors.torch import load_file, save_file

    sys.path.insert(0, str(REPO))
    from libragen_core.models.wan_vae import VAEConfig, WanVAE

    h, w = (int(v) for v in (args.size.split("x") if "x" in args.size else (args.size, args.size)))
    frames = [int(f) for f in args.frames.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        vae = WanVAE(VAEConfig(dim=args.dim))
        with torch.no_grad():
            for name, prm in vae.named_parameters():
                if name.endswith("gamma"):
                    prm.uniform_(0.5, 1.5)
        weights = str(Path(tmp) / "weights.safetensors")
        save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, weights)
        del vae
        rows = []
        for op in args.ops.split(","):
            for f in frames:
                runs = {"ours": [], "comfy": []}
                diff = None
                for r in range(args.repeats):
                    for impl in (("ours", "comfy") if r % 2 == 0 else ("comfy", "ours")):
                        out = str(Path(tmp) / f"{impl}.safetensors")
                        cfg = {"impl": impl, "op": op, "frames": f, "height": h, "width": w, "dim": args.dim,
                               "dtype": args.dtype, "device": args.device, "threads": args.threads,
                               "weights": weights, "out": out}
                        runs[impl].append(_run_child(cfg))
                    a = load_file(str(Path(tmp) / "ours.safetensors"))["out"]
                    b = load_file(str(Path(tmp) / "comfy.safetensors"))["out"]
                    diff = max(diff or 0.0, (a - b).abs().max().item())
                row = {"op": op, "frames": f, "size": f"{h}x{w}", "max_abs_diff": diff}
                for impl, rs in runs.items():
                    row[f"{impl}_s"] = statistics.median(x["seconds"] for x in rs)
                    row[f"{impl}_wall_s"] = statistics.median(x["wall"] for x in rs)
                    row[f"{impl}_peak_mb"] = statistics.median(x["peak_bytes"] for x in rs) / 2**20
                row["time_ratio"] = row["ours_s"] / row["comfy_s"]
                row["mem_ratio"] = row["ours_peak_mb"] / max(row["comfy_peak_mb"], 1e-9)
                rows.append(row)
                print(f"{op:6s} {f:3d} frames {h}x{w}: ours {row['ours_s']:7.2f} s {row['ours_peak_mb']:8.1f} MB | "
                      f"comfy {row['comfy_s']:7.2f} s {row['comfy_peak_mb']:8.1f} MB | time x{row['time_ratio']:.2f} "
                      f"mem x{row['mem_ratio']:.2f} | max diff {diff:.2g}", flush=True)
    print()
    kind = "CPU s" if args.device == "cpu" else "s"
    print(f"{args.device}, {args.dtype}, dim {args.dim}, threads {args.threads or 'default'}")
    print(f"| op | frames | size | ours {kind} | ComfyUI {kind} | time ratio | ours peak MB | ComfyUI peak MB | "
          f"mem ratio | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['op']} | {r['frames']} | {r['size']} | {r['ours_s']:.2f} | {r['comfy_s']:.2f} | "
              f"{r['time_ratio']:.2f} | {r['ours_peak_mb']:.1f} | {r['comfy_peak_mb']:.1f} | {r['mem_ratio']:.2f} | "
              f"{r['max_abs_diff']:.2g} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
