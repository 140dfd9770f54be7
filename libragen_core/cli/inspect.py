"""`libragen inspect`: what a model file (or a named preset) is, read from its header only.

Exit status: 0 when the file was identified; 2 (with the reason on stderr) when it is missing,
damaged, not a model, a Wan T2V file whose keys or shapes do not match, or, with --strict,
anything LibraGen cannot load as its DiT.
"""
from __future__ import annotations

import json

from ..errors import CheckpointError, InputError


def _preset_report(name: str) -> dict:
    from ..models.presets import build_dit, resolve_config

    config = resolve_config(name)
    sd = build_dit(config, device="meta").state_dict()
    dtype = str(next(iter(sd.values())).dtype).removeprefix("torch.")
    return {
        "preset": name, "family": "wan2.1-t2v", "config": config.to_dict(),
        "dtypes": {dtype: len(sd)}, "n_params": sum(v.numel() for v in sd.values()), "n_tensors": len(sd),
    }


def _preset_text(r: dict) -> str:
    c = r["config"]
    return "\n".join([
        f"preset:     {r['preset']}",
        f"family:     {r['family']} (built on the meta device; no weights)",
        f"config:     dim={c['dim']} ffn_dim={c['ffn_dim']} heads={c['num_heads']} "
        f"(head_dim {c['dim'] // c['num_heads']}) layers={c['num_layers']} in_dim={c['in_dim']} "
        f"out_dim={c['out_dim']} text_dim={c['text_dim']} freq_dim={c['freq_dim']} patch={tuple(c['patch_size'])}",
        "dtype:      " + ", ".join(f"{k} x{v}" for k, v in r["dtypes"].items()) + " (default for random init)",
        f"parameters: {r['n_params']:,}",
        f"tensors:    {r['n_tensors']}",
    ])


def run(args) -> int:
    from ..models.loading import check_dit_checkpoint, inspect_checkpoint

    if bool(args.file) == bool(args.preset):
        raise InputError("give either a model FILE or --preset NAME (not both, not neither)")
    if args.preset:
        report = _preset_report(args.preset)
        print(json.dumps(report, indent=2) if args.json else _preset_text(report))
        return 0
    info = inspect_checkpoint(args.file)
    if info.family == "not a model":
        raise CheckpointError(f"{info.path} is not a model: it holds no weight tensors")
    problem = None
    try:
        check_dit_checkpoint(info)
    except CheckpointError:
        if info.family == "wan2.1-t2v" or args.strict:
            raise
        problem = "LibraGen loads Wan2.1 T2V-layout DiTs only"
    if args.json:
        print(json.dumps({
            "file": str(info.path), "family": info.family, "description": info.description,
            "config": info.config.to_dict() if info.config else None, "dtypes": info.dtypes,
            "n_params": info.n_params, "n_tensors": info.n_tensors, "key_prefix": info.key_prefix,
            "fp8_scaled": info.fp8_scaled, "loadable": problem is None,
        }, indent=2))
    else:
        print(info.summary())
        print("loadable:   " + ("yes, as a LibraGen DiT" if problem is None else f"no ({problem})"))
    return 0


def add_parser(sub):
    p = sub.add_parser("inspect", help="print family, config, dtype and parameter count of a model file",
                       description=__doc__.splitlines()[0])
    p.add_argument("file", nargs="?", help="a .safetensors model file")
    p.add_argument("--preset", help="describe a built-in DiT preset instead of a file (e.g. wan2.1-t2v-1.3b)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 2 unless the file loads as a LibraGen DiT")
    p.set_defaults(run=run)
