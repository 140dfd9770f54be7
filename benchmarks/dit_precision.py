"""Half-precision accuracy of our DiT and of ComfyUI's WanModel against an fp32 reference.

Both models get the same random weights; each runs in bf16 (or fp16) and is compared with our
fp32 output (which matches ComfyUI's fp32 to ~1e-5, see tests/integration/test_dit_parity.py).
Ours keeps the timestep embedding and modulation in fp32; ComfyUI casts them to the weight dtype.

    COMFYUI_DIR=/work/comfy/ComfyUI PYTHONPATH=/work/comfy/ComfyUI:. \\
        /work/comfy/venv/bin/python benchmarks/dit_precision.py [--device cuda --dtype fp16]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--size", default="5x16x16")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args(argv)

    comfy_dir = os.environ.get("COMFYUI_DIR")
    if comfy_dir:
        sys.path.insert(0, comfy_dir)
    sys.path.insert(0, str(REPO))
    import comfy.cli_args
    if args.device == "cpu":
        comfy.cli_args.args.cpu = True
    import comfy.ops
    import torch
    from comfy.ldm.wan.model import WanModel

    from libragen_core.models.presets import build_dit

    half = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    f, h, w = (int(v) for v in args.size.split("x"))
    print(f"# {args.preset}, latents {args.size}, B=2, t = 980 / 300, {args.dtype} on {args.device}")
    print("| seed | ours rel. RMS error | ComfyUI rel. RMS error | ours max abs | ComfyUI max abs | max abs v |")
    print("|---|---|---|---|---|---|")
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        ref_model = build_dit(args.preset, device=args.device).eval()
        with torch.no_grad():
            for p in ref_model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        sd = ref_model.state_dict()
        c = ref_model.config
        ours = build_dit(c, device=args.device, dtype=half).eval()
        ours.load_state_dict(sd)
        theirs = WanModel(model_type="t2v", patch_size=c.patch_size, in_dim=c.in_dim, dim=c.dim, ffn_dim=c.ffn_dim,
                          freq_dim=c.freq_dim, text_dim=c.text_dim, out_dim=c.out_dim, num_heads=c.num_heads,
                          num_layers=c.num_layers, eps=c.eps, operations=comfy.ops.disable_weight_init,
                          dtype=half, device=args.device).eval()
        theirs.load_state_dict(sd)
        g = torch.Generator().manual_seed(100 + seed)
        x = torch.randn(2, 16, f, h, w, generator=g).to(args.device)
        t = torch.tensor([980.0, 300.0], device=args.device)
        ctx = torch.zeros(2, 512, c.text_dim)
        ctx[:, :24] = torch.randn(2, 24, c.text_dim, generator=g)
        ctx = ctx.to(args.device)
        with torch.no_grad():
            ref = ref_model(x, t, ctx)
            a = ours(x.to(half), t, ctx.to(half)).float()
            b = theirs(x.to(half), t, ctx.to(half)).float()
        scale = ref.pow(2).mean().sqrt()
        print(f"| {seed} | {((a - ref).pow(2).mean().sqrt() / scale):.4f} | {((b - ref).pow(2).mean().sqrt() / scale):.4f} "
              f"| {(a - ref).abs().max():.3f} | {(b - ref).abs().max():.3f} | {ref.abs().max():.2f} |", flush=True)


if __name__ == "__main__":
    main()
