"""WanDiT forward speed and peak memory against ComfyUI's WanModel, same weights, same run.

Run it with ComfyUI's interpreter so both models live in one process (fair timing):

    COMFYUI_DIR=/work/comfy/ComfyUI PYTHONPATH=$COMFYUI_DIR:. \\
        /work/comfy/venv/bin/python benchmarks/dit_forward.py                      # CPU, tiny preset
    ... benchmarks/dit_forward.py --device cuda --preset wan2.1-t2v-1.3b --dtype bf16 \\
        --sizes 21x60x104 --refs 0,2                                                # GPU, random 1.3B

Timing alternates the two models call by call and reports medians. Peak memory: on CUDA the
allocator's peak for one forward; on CPU the rise of the process's peak RSS (VmHWM) during one
forward, each side measured in its own fresh child process so allocator caches do not mix.
The last table times one guidance step: three CFG conditions as one B=3 batch vs three B=1 calls.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

# the sibling helper module, also when run through runpy (which does not add the script folder)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_import import import_comfy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _setup_comfy(device: str, attention: str):
    comfy_args = import_comfy(device)
    if attention == "pytorch":
        comfy_args.use_pytorch_cross_attention = True
    import comfy.ldm.modules.attention as attn
    import comfy.ops
    from comfy.ldm.wan.model import WanModel
    return WanModel, comfy.ops.disable_weight_init, attn.optimized_attention.__name__


def _build(args):
    import torch

    sys.path.insert(0, str(REPO))
    from libragen_core.models.presets import build_dit

    torch.manual_seed(0)
    dtype = getattr(torch, DTYPES[args.dtype])
    ours = build_dit(args.preset, device=args.device).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = ours.to(dtype)
    WanModel, ops, attn_name = _setup_comfy(args.device, args.comfy_attention)
    c = ours.config
    theirs = WanModel(model_type="t2v", patch_size=c.patch_size, in_dim=c.in_dim, dim=c.dim, ffn_dim=c.ffn_dim,
                      freq_dim=c.freq_dim, text_dim=c.text_dim, out_dim=c.out_dim, num_heads=c.num_heads,
                      num_layers=c.num_layers, qk_norm=c.qk_norm, cross_attn_norm=c.cross_attn_norm, eps=c.eps,
                      device=args.device, dtype=dtype, operations=ops).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs, attn_name


def _inputs(size: str, n_refs: int, batch: int, args):
    import torch

    f, h, w = (int(v) for v in size.split("x"))
    dtype = getattr(torch, DTYPES[args.dtype])
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(batch, 16, f, h, w, generator=g).to(args.device, dtype)
    refs = torch.randn(batch, 16, n_refs, h, w, generator=g).to(args.device, dtype) if n_refs else None
    t = torch.linspace(900.0, 100.0, batch).to(args.device)
    ctx = torch.zeros(batch, args.text_len, 4096)
    ctx[:, :24] = torch.randn(batch, 24, 4096, generator=g)
    return x, refs, t, ctx.to(args.device, dtype)


def _call_ours(model, x, refs, t, ctx):
    import torch

    f = x.shape[2]
    if refs is not None:
        x = torch.cat([x, refs], dim=2)
    return model(x, t, ctx, frame_pos=torch.arange(x.shape[2], device=x.device))[:, :, :f]


def _call_theirs(model, x, refs, t, ctx):
    return model(x, t, ctx, time_dim_concat=refs)


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _time_pair(fns, device, repeats, warmup):
    """Median seconds per call for each function, calls interleaved."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_child(args) -> None:
    """Child mode: build both models, run ONE forward of one side, print its peak memory rise (MiB)."""
    import torch

    ours, theirs, _ = _build(args)
    model, call = (ours, _call_ours) if args.side == "ours" else (theirs, _call_theirs)
    other = theirs if args.side == "ours" else ours
    del other
    x, refs, t, ctx = _inputs(args.case_size, args.case_refs, 1, args)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    with torch.inference_mode():
        call(model, x, refs, t, ctx)
    print(json.dumps({"peak_mib": (_status_kib("VmHWM") - before) / 1024}))


def _cpu_peak(args, side, size, n_refs) -> float:
    cmd = [sys.executable, __file__, "--child", "--side", side, "--case-size", size, "--case-refs", str(n_refs),
           "--preset", args.preset, "--dtype", args.dtype, "--device", "cpu", "--text-len", str(args.text_len),
           "--comfy-attention", args.comfy_attention, "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def _cuda_peak(device, fn) -> float:
    import torch

    _sync(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    _sync(device)
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--sizes", default="5x16x16,5x32x32", help="latent F x H x W list")
    ap.add_argument("--refs", default="0,1,2", help="numbers of reference latent frames to test")
    ap.add_argument("--text-len", type=int, default=512, help="text tokens (Wan pads to 512)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    ap.add_argument("--comfy-attention", default="default", choices=["default", "pytorch"],
                    help="ComfyUI attention backend: its default choice for the device, or forced SDPA")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default); 1 gives steadier figures on a busy machine")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--case-size", help=argparse.SUPPRESS)
    ap.add_argument("--case-refs", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return _peak_child(args)
    ours, theirs, attn_name = _build(args)
    dev = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {args.preset} {args.dtype} on {dev}; torch {torch.__version__}; ComfyUI attention: {attn_name}; "
          f"text tokens {args.text_len}; median of {args.repeats}")
    rows = []
    print("| latents FxHxW | refs | ours ms | ComfyUI ms | time ratio ours/ComfyUI | ours peak MiB | ComfyUI peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        for n_refs in (int(r) for r in args.refs.split(",")):
            x, refs, t, ctx = _inputs(size, n_refs, 1, args)
            with torch.inference_mode():
                diff = (_call_ours(ours, x, refs, t, ctx).float() - _call_theirs(theirs, x, refs, t, ctx).float())
                fo = partial(_call_ours, ours, x, refs, t, ctx)
                ft = partial(_call_theirs, theirs, x, refs, t, ctx)
                t_ours, t_theirs = _time_pair([fo, ft], args.device, args.repeats, args.warmup)
                if args.no_memory:
                    m_ours = m_theirs = float("nan")
                elif args.device == "cuda":
                    m_ours, m_theirs = _cuda_peak(args.device, fo), _cuda_peak(args.device, ft)
            if not args.no_memory and args.device == "cpu":
                m_ours, m_theirs = _cpu_peak(args, "ours", size, n_refs), _cpu_peak(args, "comfy", size, n_refs)
            row = dict(size=size, refs=n_refs, ours_ms=1e3 * t_ours, comfy_ms=1e3 * t_theirs,
                       ratio=t_ours / t_theirs, ours_peak_mib=m_ours, comfy_peak_mib=m_theirs,
                       max_abs_diff=diff.abs().max().item())
            rows.append(row)
            print(f"| {size} | {n_refs} | {row['ours_ms']:.1f} | {row['comfy_ms']:.1f} | {row['ratio']:.2f} | "
                  f"{m_ours:.0f} | {m_theirs:.0f} |", flush=True)
    print("\nmax |ours - ComfyUI| per case:", ", ".join(f"{r['size']}+{r['refs']}: {r['max_abs_diff']:.1e}" for r in rows))

    # one dynamic-CFG step: full / ref-only / null conditions, batched vs one at a time
    size = args.sizes.split(",")[0]
    n_refs = max(int(r) for r in args.refs.split(","))
    x, refs, t, ctx = _inputs(size, n_refs, 3, args)
    guidance = []
    with torch.inference_mode():
        for name, model, call in (("ours", ours, _call_ours), ("ComfyUI", theirs, _call_theirs)):
            def batched(model=model, call=call):
                return call(model, x, refs, t, ctx)

            def sequential(model=model, call=call):
                return [call(model, x[i:i + 1], None if refs is None else refs[i:i + 1], t[i:i + 1], ctx[i:i + 1])
                        for i in range(3)]

            tb, ts = _time_pair([batched, sequential], args.device, args.repeats, args.warmup)
            guidance.append(dict(model=name, batched_ms=1e3 * tb, sequential_ms=1e3 * ts, ratio=tb / ts))
    print(f"\nguidance step, latents {size} + {n_refs} refs, 3 conditions:")
    print("| model | B=3 batched ms | 3 x B=1 ms | batched/sequential |")
    print("|---|---|---|---|")
    for g in guidance:
        print(f"| {g['model']} | {g['batched_ms']:.1f} | {g['sequential_ms']:.1f} | {g['ratio']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "device": dev,
                                         "comfy_attention": attn_name, "forward": rows, "guidance": guidance},
                                        indent=2))


if __name__ == "__main__":
    main()
