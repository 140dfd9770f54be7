"""`libragen lora inspect|merge|convert`: look at, combine and re-save LoRA files."""
from __future__ import annotations

import argparse


def add_parser(sub):
    p = sub.add_parser("lora", help="inspect, merge or convert LoRA files (ComfyUI / kohya / diffusers / peft)")
    lsub = p.add_subparsers(dest="lora_command", required=True, metavar="ACTION")

    i = lsub.add_parser("inspect", help="print layers, ranks, alphas, targets and metadata of a LoRA file")
    i.add_argument("file")
    i.set_defaults(run=_inspect)

    m = lsub.add_parser("merge", help="merge LoRA files with weights (dW = sum w_i dW_i and variants)")
    m.add_argument("files", nargs="+", help="LoRA .safetensors files")
    m.add_argument("-o", "--output", required=True, help="output .safetensors file")
    m.add_argument("-w", "--weights", type=float, nargs="+",
                   help="one weight per file (default 1/n each); e.g. 0.3 0.7 for a*cross + (1-a)*in")
    m.add_argument("--method", default="linear",
                   choices=["linear", "concat", "svd", "ties", "dare", "naive"],
                   help="linear/concat: exact (rank = sum of ranks); svd: exact sum truncated to --rank; "
                        "ties/dare: full diffs, or SVD to --rank if given")
    m.add_argument("--rank", type=int, help="target rank (svd; optional for ties/dare)")
    m.add_argument("--density", type=float, default=0.2, help="ties: kept fraction per LoRA (default 0.2)")
    m.add_argument("--drop-rate", type=float, default=0.5, help="dare: drop probability p (default 0.5)")
    m.add_argument("--seed", type=int, default=0, help="dare: random seed")
    m.add_argument("--naming", default="comfyui", choices=["comfyui", "kohya", "diffusers", "peft"])
    m.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    m.set_defaults(run=_merge)

    c = lsub.add_parser("convert", help="re-save a LoRA file under another naming convention")
    c.add_argument("file")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--naming", default="comfyui", choices=["comfyui", "kohya", "diffusers", "peft"])
    c.add_argument("--alpha", type=float, help="alpha for files without .alpha tensors (peft/diffusers)")
    c.set_defaults(run=_convert)


def _inspect(args: argparse.Namespace) -> int:
    from ..lora import describe, load_lora

    print(describe(load_lora(args.file)))
    return 0


def _merge(args: argparse.Namespace) -> int:
    import torch

    from ..lora import load_lora, merge_loras, save_lora

    loras = [load_lora(f) for f in args.files]
    res = merge_loras(loras, args.weights, args.method, rank=args.rank, density=args.density,
                      drop_rate=args.drop_rate, seed=args.seed)
    extra = {"merge_sources": ", ".join(_name(f) for f in args.files)}
    if res.total_rel_error:
        extra["merge_rel_error"] = f"{res.total_rel_error:.6g}"
    save_lora(res.lora, args.output, naming=args.naming, dtype=getattr(torch, args.dtype),
              method=f"merge:{args.method}", metadata=extra)
    s = res.lora.summary()
    print(f"wrote {args.output}: {s['layers']} layers, ranks {s['ranks'] or '-'}, {s['diff_layers']} full diffs; "
          f"relative Frobenius error {res.total_rel_error:.3e} (max per layer {res.max_rel_error:.3e})")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from ..lora import load_lora, save_lora

    lora = load_lora(args.file, alpha=args.alpha)
    save_lora(lora, args.output, naming=args.naming)
    print(f"wrote {args.output} ({len(lora)} layers, {args.naming} naming)")
    return 0


def _name(path: str) -> str:
    # file names only: full paths can carry user names and folder layouts into shared files
    from pathlib import Path

    return Path(path).name
