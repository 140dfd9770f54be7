"""Wan2.1 shapes with random weights: forward, guidance batching, LoRA SFT and DPO steps, with MFU.

    python3 benchmarks/wan_shapes.py --preset wan2.1-t2v-1.3b --what forward --latent 21x60x104   # GPU
    python3 benchmarks/wan_shapes.py --preset tiny --device cpu --dtype fp32 --what all --latent 5x8x8

--what (scripts/gpu_chain.py runs each in a process of its own, so peak memory is per measurement):
  forward   our WanDiT: median ms and peak memory of one forward (B=1, no references); ComfyUI's
            WanModel with the same weights beside it when ComfyUI imports (COMFYUI_DIR, --comfy-dir or
            ./.comfy/ComfyUI), else that half is skipped and says why
  guidance  one dynamic-CFG step of ours with one reference frame: the three conditions as one B=3
            batch against three B=1 calls
  sft       one LoRA SFT step: rank 16 on the attention and FFN linears, one reference frame, the
            base frozen in --dtype, gradient checkpointing, AdamW on the LoRA
  dpo       one Flow-DPO LoRA step (training/flow_dpo.py, split backward) on the same model
Figures: median ms, peak memory above the weights (torch.cuda.max_memory_allocated; CPU: peak RSS
rise), tokens/s (video + reference tokens per second, pairs count both clips) and MFU = the
step's FLOPs, counted from the shapes without recomputation, over time x the card's dense bf16
peak (H100 SXM / H200: 989 TFLOP/s, H100 PCIe: 756; none on a CPU). Backward through a frozen
linear costs one forward (input gradients only); attention backward costs two.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
TEXT_TOKENS = 512  # what Wan's umT5 pads to
REAL_TEXT = 24  # real prompt tokens among them
PEAKS = (("H100", "PCIe", 756e12), ("H100", "", 989e12), ("H200", "", 989e12))


def dense_bf16_peak(name: str) -> float | None:
    for chip, variant, flops in PEAKS:
        if chip in name and variant in name:
            return flops
    return None


def forward_flops(cfg, tokens: int, text: int) -> tuple[float, float]:
    """(linear FLOPs, attention FLOPs) of one forward over `tokens` video+reference tokens and
    `text` text tokens (what cross-attention sees after padding is compacted)."""
    d, f, n = cfg.dim, cfg.ffn_dim, cfg.num_layers
    patch = cfg.in_dim * cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2]
    linear = n * (2 * tokens * d * d * 4 + 2 * tokens * d * d * 2 + 2 * text * d * d * 2 + 2 * tokens * d * f * 2)
    linear += 2 * tokens * patch * d * 2 + 2 * text * (cfg.text_dim * d + d * d)
    attention = n * (4 * tokens * tokens * d + 4 * tokens * text * d)
    return float(linear), float(attention)


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_ms(fn, device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Peak:
    """Peak memory above what is allocated when entered (CUDA), or the peak RSS rise (CPU)."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = _rss_mib()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.mib = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        else:
            self.mib = _rss_mib() - self.base
        return False


def build(args, device, dtype):
    """Our DiT with random weights, built directly in `dtype` on the device (a 14B model never exists in fp32)."""
    import torch

    from libragen_core.models.presets import resolve_config
    from libragen_core.models.wan_dit import WanDiT

    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = WanDiT(resolve_config(args.preset))
    finally:
        torch.set_default_dtype(old)
    return model


def comfy_model(ours, device, dtype, comfy_dir: str | None):
    """ComfyUI's WanModel holding our weights, or raise ImportError saying why it is not there."""
    for d in (comfy_dir, os.environ.get("COMFYUI_DIR"), str(ROOT / ".comfy" / "ComfyUI")):
        if d and Path(d).is_dir() and d not in sys.path:
            sys.path.insert(0, d)
            break
    try:
        import comfy.cli_args

        if device.type == "cpu":
            comfy.cli_args.args.cpu = True
        import comfy.ops
        from comfy.ldm.wan.model import WanModel
    except Exception as e:  # noqa: BLE001 - any import failure means: measure ours alone
        raise ImportError(f"ComfyUI is not importable here ({type(e).__name__}: {e}); pass --comfy-dir or carry "
                          "a ComfyUI checkout as .comfy/ComfyUI with its Python packages") from e
    c = ours.config
    theirs = WanModel(model_type="t2v", patch_size=c.patch_size, in_dim=c.in_dim, dim=c.dim, ffn_dim=c.ffn_dim,
                      freq_dim=c.freq_dim, text_dim=c.text_dim, out_dim=c.out_dim, num_heads=c.num_heads,
                      num_layers=c.num_layers, qk_norm=c.qk_norm, cross_attn_norm=c.cross_attn_norm, eps=c.eps,
                      device=device, dtype=dtype, operations=comfy.ops.disable_weight_init).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return theirs


def _inputs(cfg, latent, batch: int, refs: int, device, dtype):
    import torch

    f, h, w = latent
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, cfg.in_dim, f, h, w, generator=g).to(device, dtype)
    r = torch.randn(batch, cfg.in_dim, refs, h, w, generator=g).to(device, dtype) if refs else None
    ctx = torch.zeros(batch, TEXT_TOKENS, cfg.text_dim)
    ctx[:, :REAL_TEXT] = torch.randn(batch, REAL_TEXT, cfg.text_dim, generator=g)
    t = torch.linspace(900.0, 100.0, batch).to(device)
    return x, r, t, ctx.to(device, dtype)


def _tokens(cfg, latent, refs: int) -> int:
    f, h, w = latent
    pt, ph, pw = cfg.patch_size
    return ((f + refs) // pt) * (h // ph) * (w // pw)


def run(args) -> dict:
    import torch

    device = torch.device(args.device)
    dtype = getattr(torch, DTYPES[args.dtype])
    latent = tuple(int(v) for v in args.latent.split("x"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = dense_bf16_peak(name) if args.dtype == "bf16" else None
    model = build(args, device, dtype).eval()
    cfg = model.config
    out = {"what": args.what, "preset": args.preset, "dtype": args.dtype, "latent": args.latent, "device": name,
           "params": sum(p.numel() for p in model.parameters()), "dense_peak_flops": peak}

    def call(m, x, r, t, ctx, comfy=False):
        if comfy:
            return m(x, t, ctx, time_dim_concat=r)
        f = x.shape[2]
        if r is not None:
            x = torch.cat([x, r], dim=2)
        return m(x, t, ctx, frame_pos=torch.arange(x.shape[2], device=x.device))[:, :, :f]

    def mfu(flops: float, ms: float) -> float | None:
        return None if peak is None else flops / (ms / 1e3) / peak

    if args.what in ("forward", "all"):
        x, r, t, ctx = _inputs(cfg, latent, 1, 0, device, dtype)
        lin, att = forward_flops(cfg, _tokens(cfg, latent, 0), REAL_TEXT + 1)
        with torch.inference_mode():
            with _Peak(device) as pk:
                call(model, x, r, t, ctx)
            ms = _median_ms(lambda: call(model, x, r, t, ctx), device, args.repeats, args.warmup)
        out["forward"] = {"ours_ms": ms, "ours_peak_mib": pk.mib, "tokens": _tokens(cfg, latent, 0),
                          "flops": lin + att, "ours_mfu": mfu(lin + att, ms)}
        try:
            theirs = comfy_model(model, device, dtype, args.comfy_dir)
        except ImportError as e:
            out["forward"]["comfy"] = f"skipped: {e}"
        else:
            with torch.inference_mode():
                with _Peak(device) as pk:
                    call(theirs, x, r, t, ctx, comfy=True)
                cms = _median_ms(lambda: call(theirs, x, r, t, ctx, comfy=True), device, args.repeats, args.warmup)
                diff = (call(model, x, r, t, ctx).float() - call(theirs, x, r, t, ctx, comfy=True).float()).abs().max()
            out["forward"].update(comfy_ms=cms, comfy_peak_mib=pk.mib, ours_over_comfy=ms / cms,
                                  max_abs_diff=float(diff))
            del theirs
    if args.what in ("guidance", "all"):
        x, r, t, ctx = _inputs(cfg, latent, 3, 1, device, dtype)
        with torch.inference_mode():
            batched = _median_ms(lambda: call(model, x, r, t, ctx), device, args.repeats, args.warmup)
            seq = _median_ms(lambda: [call(model, x[i:i + 1], r[i:i + 1], t[i:i + 1], ctx[i:i + 1]) for i in range(3)],
                             device, args.repeats, args.warmup)
        out["guidance"] = {"batched_ms": batched, "sequential_ms": seq, "batched_over_sequential": batched / seq}
    if args.what in ("sft", "dpo", "all"):
        out.update(_train_steps(args, model, cfg, latent, device, dtype, mfu))
    return out


def _train_steps(args, model, cfg, latent, device, dtype, mfu) -> dict:
    import torch

    from libragen_core.lora import add_lora, fold_adapters
    from training.common.losses import flow_matching_loss
    from training.flow_dpo import DPOBatch, flow_dpo_backward

    add_lora(model, rank=args.rank, adapter_name="sft")
    if args.what in ("dpo", "all"):  # DPO trains a second adapter on the folded SFT one
        fold_adapters(model)
        add_lora(model, rank=args.rank, adapter_name="dpo")
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # LoRA weights train in fp32; the base stays in its dtype
    model.gradient_checkpointing = True
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    b = args.batch
    x_w, refs, _, ctx = _inputs(cfg, latent, b, 1, device, dtype)
    x_l = torch.randn_like(x_w)
    eps = torch.randn_like(x_w)
    sigma = torch.rand(b, generator=torch.Generator().manual_seed(2)).to(device)
    tokens = _tokens(cfg, latent, 1)
    lin, att = forward_flops(cfg, tokens, REAL_TEXT + 1)
    backward = lin + 2 * att
    results = {}
    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def sft_step():
        with autocast():
            loss = flow_matching_loss(model, x_w, ctx, sigma, eps, refs=refs)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def dpo_step():
        with autocast():
            flow_dpo_backward(model, DPOBatch(winner=x_w, loser=x_l, context=ctx, refs=refs), eps, sigma, beta=500.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for what, step, flops, clips in (("sft", sft_step, b * (lin + att + backward), b),
                                      ("dpo", dpo_step, b * (5 * (lin + att) + 2 * backward), 2 * b)):
        if args.what not in (what, "all"):
            continue
        step()  # warm-up: the optimizer state and the allocator's caches
        with _Peak(device) as pk:
            step()
        ms = _median_ms(step, device, args.repeats, 0)
        results[what] = {"ms": ms, "peak_mib": pk.mib, "tokens_per_s": clips * tokens / (ms / 1e3),
                         "flops": flops, "mfu": mfu(flops, ms), "batch": b, "tokens_per_clip": tokens,
                         "gradient_checkpointing": True, "lora_rank": args.rank}
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny", help="wan2.1-t2v-1.3b, wan2.1-t2v-14b or tiny")
    p.add_argument("--what", default="all", choices=["forward", "guidance", "sft", "dpo", "all"])
    p.add_argument("--latent", default="5x8x8", help="latent F x h x w (21x60x104 = 81 frames at 480x832)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--batch", type=int, default=1, help="clips (SFT) or pairs (DPO) per training step")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--comfy-dir", default=None, help="a ComfyUI checkout (default: COMFYUI_DIR, ./.comfy/ComfyUI)")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    res = run(args)
    text = json.dumps(res, indent=1)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
