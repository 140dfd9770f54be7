"""`libragen rewrite`: labels + a user prompt -> a LibraGen prompt (Ref lines + Video line).

    libragen rewrite --label "the dog" --prompt "make the dog run along the beach"   # phantom prose
    libragen rewrite --label "the dog" --prompt "make the dog run along the beach" --style-guide libragen
    libragen rewrite --label "the blue star" --prompt "I want the star to weave right" --style-guide spriteworld
    libragen rewrite --label "the dog" --prompt "..." --dit models/diffusion_models/x.safetensors --lora my.safetensors
    LIBRAGEN_API_KEY=... libragen rewrite --label "the dog" --prompt "..." --backend http \\
        --url http://127.0.0.1:11434/v1 --model qwen2.5:7b-instruct
    libragen rewrite --export-style-guide style_guide.json --style-guide spriteworld

The API key is read only from the environment variable named by --api-key-env; there is no
option that takes a key. Warnings (fallbacks, guesses) go to stderr; the prompt to stdout.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import InputError


def add_backend_options(p, prefix: str = "") -> None:
    """The backend options, shared with `libragen generate --rewrite` (prefix 'rewrite-' there)."""
    from ..rewrite import BACKENDS

    p.add_argument(f"--{prefix}backend", choices=BACKENDS, default="offline",
                   help="offline (rules, default), http (OpenAI-compatible chat endpoint), transformers (local LM)")
    p.add_argument(f"--{prefix}url", help="http: endpoint base URL, e.g. http://127.0.0.1:11434/v1")
    p.add_argument(f"--{prefix}model", help="http: model name on the endpoint")
    p.add_argument(f"--{prefix}api-key-env", default="LIBRAGEN_API_KEY",
                   help="http: NAME of the environment variable holding the API key (default LIBRAGEN_API_KEY)")
    p.add_argument(f"--{prefix}llm-dir", help="transformers: local folder of a causal LM (config + safetensors + "
                                              "tokenizer)")
    p.add_argument(f"--{prefix}timeout", type=float, default=30.0, help="http: seconds per request (default 30)")
    p.add_argument(f"--{prefix}retries", type=int, default=2, help="http: retries after the first try (default 2)")
    p.add_argument(f"--{prefix}style-guide",
                   help="auto (default: from the model), phantom (plain prose: Phantom-Wan, Wan2.1), libragen (Ref "
                        "lines: models post-trained with training/), spriteworld (the embedded model), generic (the "
                        "old name of libragen), or a style guide JSON file")
    p.add_argument(f"--{prefix}cache-dir", help="cache folder for LLM rewrites (default: ~/.cache/libragen/rewrite "
                                                "or $LIBRAGEN_REWRITE_CACHE)")
    p.add_argument(f"--{prefix}no-cache", action="store_true", help="do not read or write the rewrite cache")


def backend_options(args, prefix: str = "") -> dict:
    get = lambda name: getattr(args, prefix.replace("-", "_") + name)  # noqa: E731
    from ..rewrite import RewriteCache

    opts = {"backend": get("backend"), "url": get("url"), "model": get("model"), "api_key_env": get("api_key_env"),
            "model_dir": get("llm_dir"), "timeout": get("timeout"), "retries": get("retries")}
    if get("backend") == "offline":
        opts = {"backend": "offline"}
    opts["cache"] = None if get("no_cache") else RewriteCache(get("cache_dir"))
    return opts


def print_warnings(result, stream=None) -> None:
    stream = stream or sys.stderr
    for w in result.warnings:
        print(f"libragen rewrite: warning: {w}", file=stream)


def add_parser(sub):
    p = sub.add_parser("rewrite", help="rewrite a user prompt into the LibraGen caption format", description=__doc__,
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--label", action="append", default=[], metavar="TEXT",
                   help="short label of reference k, in order (repeat; '' = unlabelled)")
    p.add_argument("--refs", type=int, help="number of reference images (default: the number of --label / --ref)")
    p.add_argument("--ref", action="append", default=[], metavar="IMAGE",
                   help="reference image (counts references; with --caption, described by the endpoint)")
    p.add_argument("--caption", action="store_true",
                   help="describe the --ref images with the http endpoint (a vision-capable model) for the Ref lines")
    p.add_argument("--prompt", help="the user's prompt")
    p.add_argument("--model-dir", help="a LibraGen model folder: use the style guide its model.json names")
    p.add_argument("--dit", help="with style guide auto: the diffusion model file whose metadata (or name) says "
                                 "which style it was trained on")
    p.add_argument("--lora", action="append", default=[], metavar="FILE",
                   help="with style guide auto: a LoRA that will be applied; its metadata can say the style "
                        "(repeat)")
    add_backend_options(p)
    p.add_argument("--out", help="also write the result: .json (prompt, lines, backend, warnings) or text")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of the prompt")
    p.add_argument("--export-style-guide", metavar="FILE", help="write the selected style guide as JSON and exit")
    p.set_defaults(run=run)


def _guide(args):
    from ..io.safetensors_file import read_header
    from ..models.bundle import CARD_FILE, ModelBundle, ModelCard
    from ..rewrite import choose_style_guide

    bundle = None
    if args.model_dir:
        card = ModelCard.read(Path(args.model_dir) / CARD_FILE)
        bundle = ModelBundle(None, None, None, card, Path(args.model_dir))
    loras = [read_header(p)[1] for p in args.lora]
    guide, why = choose_style_guide(args.style_guide, bundle, loras=loras, dit_file=args.dit)
    return guide, why


def run(args) -> int:
    from ..io.atomic import atomic_path, check_output_folder
    from ..rewrite import make_backend, rewrite

    guide, why = _guide(args)
    if args.export_style_guide:
        path = guide.save(check_output_folder(args.export_style_guide))
        print(json.dumps({"out": str(path), "style_guide": guide.name, "hash": guide.hash}))
        return 0
    if args.prompt is None:
        raise InputError("--prompt is required (or use --export-style-guide)")
    n_refs = args.refs if args.refs is not None else max(len(args.label), len(args.ref))
    opts = backend_options(args)
    captioner, images = None, None
    if args.caption:
        if not args.ref or not args.url or not args.model:
            raise InputError("--caption needs --ref images and an http endpoint (--url, --model)")
        from ..io.images import load_image
        from ..rewrite.http_backend import HTTPCaptioner

        images = [load_image(p) for p in args.ref]
        captioner = HTTPCaptioner(args.url, args.model, args.api_key_env, args.timeout, args.retries)
    backend = opts.pop("backend")
    cache = opts.pop("cache")
    engine = make_backend(backend, **opts)
    result = rewrite(args.label, args.prompt, engine, guide, n_references=n_refs, captioner=captioner,
                     images=images, cache=cache)
    print_warnings(result)
    print(f"libragen rewrite: style {guide.name} ({why})", file=sys.stderr)
    payload = json.dumps(result.to_dict(), ensure_ascii=False, indent=1)
    if args.out:
        out = check_output_folder(args.out)
        with atomic_path(out) as tmp:
            tmp.write_text(payload + "\n" if out.suffix.lower() == ".json" else result.prompt + "\n", encoding="utf-8")
    print(payload if args.json else result.prompt)
    return 0
