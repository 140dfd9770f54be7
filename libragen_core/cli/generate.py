"""`libragen generate`: reference images + prompt -> a video file.

With no model files it runs the embedded default model. Every setting not given on the command
line comes from the model card (frames, size, steps, shift, solver, CFG schedule, fps).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError, InputError
from ..io.video import SUPPORTED_SUFFIXES
from .arguments import number_in, output_file, read_text_file, whole_number

MAX_REFS = 4


def add_parser(sub):
    p = sub.add_parser("generate", help="generate a video of the reference subjects acting out a prompt",
                       description=__doc__)
    src = p.add_argument_group("model (default: the embedded libragen-sprite model)")
    src.add_argument("--model-dir", help="a folder with model.json and the files it names")
    src.add_argument("--dit", help="diffusion model .safetensors (Wan2.1 T2V / Phantom-Wan layout)")
    src.add_argument("--vae", help="VAE .safetensors (e.g. wan_2.1_vae.safetensors)")
    src.add_argument("--text-encoder", help="text encoder .safetensors (e.g. umt5_xxl_fp16.safetensors)")
    src.add_argument("--tokenizer", help="tokenizer file or folder, when not embedded in the text encoder file")
    src.add_argument("--device", default="cpu", type=device_name, help="cpu, cuda, cuda:1, ... (default cpu)")
    src.add_argument("--dtype", choices=["auto", "fp8_e4m3fn", "fp32", "bf16", "fp16"], default="auto",
                     help="DiT weight dtype (auto: as stored, fp8 files stay fp8; fp32/bf16/fp16 dequantize them)")
    p.add_argument("--ref", action="append", default=[], metavar="IMAGE",
                   help=f"a reference image of a subject (repeat, up to {MAX_REFS}; none = text-to-video)")
    p.add_argument("--label", action="append", default=[], metavar="TEXT",
                   help="a short label for the matching --ref, in order (e.g. 'the dog')")
    p.add_argument("--prompt", required=True, help="what the video shows (LibraGen format or plain text)")
    p.add_argument("--negative", default=None, help="negative prompt (default: the model card's)")
    p.add_argument("--frames", type=whole_number(1, " (4k+1: 17, 33, 81, ...)"), help="frame count, 4k+1 (e.g. 17, 81)")
    p.add_argument("--width", type=whole_number(1), help="video width in pixels (a multiple of 16)")
    p.add_argument("--height", type=whole_number(1), help="video height in pixels (a multiple of 16)")
    p.add_argument("--steps", type=whole_number(1, " (20 to 50 is typical)"), help="sampling steps")
    p.add_argument("--shift", type=number_in(0.0), help="flow-matching schedule shift (above 0)")
    p.add_argument("--solver", type=solver_name, help="ODE solver: euler, heun, dpmpp_2m, unipc")
    p.add_argument("--cfg", type=cfg_schedule,
                   help="CFG schedule: a preset name (libragen, phantom, stiv-jit, stiv-sit, humo, customcrafter, "
                        "none) or a JSON file")
    p.add_argument("--seed", type=whole_number(0), default=0)
    p.add_argument("--fps", type=number_in(0.0, 240.0), help="frame rate of the written video (above 0, at most 240)")
    p.add_argument("--out", required=True, type=output_file(SUPPORTED_SUFFIXES),
                   help="output video: .mp4, .webm, .webp or .gif (checked writable before anything runs)")
    rw = p.add_argument_group("prompt rewriting (see `libragen rewrite --help`)")
    rw.add_argument("--rewrite", action="store_true",
                    help="rewrite --prompt into the model's caption style (Ref lines + bound Video line) first")
    from .rewrite import add_backend_options

    add_backend_options(rw, prefix="rewrite-")
    p.set_defaults(run=run)


def cfg_schedule(value: str):
    """--cfg: a preset name, or a JSON file read and checked now (UTF-8, a valid schedule)."""
    from ..sampling.guidance import PRESETS, CFGSchedule

    if value in PRESETS:
        return value
    path = Path(value)
    if path.suffix.lower() != ".json" and not path.exists():
        raise argparse.ArgumentTypeError(f"{value!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a JSON file")
    try:
        return CFGSchedule.from_json(read_text_file(path, "CFG schedule file"))
    except ConfigError as e:
        raise argparse.ArgumentTypeError(f"{path}: {e}") from None


def solver_name(value: str) -> str:
    from ..sampling.solvers import SOLVERS

    if value not in SOLVERS:
        raise argparse.ArgumentTypeError(f"unknown solver {value!r}; use one of {', '.join(sorted(SOLVERS))}")
    return value


def device_name(value: str) -> str:
    """--device: a torch device this machine has."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{value!r} is not a device name; use cpu, cuda, cuda:1, mps") from None
    backend = {"cuda": torch.cuda, "mps": getattr(torch.backends, "mps", None)}.get(device.type)
    if device.type != "cpu" and (backend is None or not backend.is_available()):
        raise argparse.ArgumentTypeError(f"{value}: this machine (or this PyTorch build) has no {device.type} device; "
                                         "use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{value}: there are {torch.cuda.device_count()} CUDA devices (0 to "
                                         f"{torch.cuda.device_count() - 1})")
    return value


def _load_model(args):
    from ..models.bundle import load_bundle, load_embedded, load_model_folder
    from ..models.loading import resolve_dtype

    dtype = resolve_dtype(args.dtype)
    files = [args.dit, args.vae, args.text_encoder]
    if args.model_dir:
        if any(files):
            raise InputError("give either --model-dir or --dit/--vae/--text-encoder, not both")
        return load_model_folder(args.model_dir, device=args.device, dtype=dtype)
    if any(files):
        if not all(files):
            missing = [n for n, f in zip(("--dit", "--vae", "--text-encoder"), files) if not f]
            raise InputError(f"a model from files needs --dit, --vae and --text-encoder; missing {', '.join(missing)}")
        return load_bundle(args.dit, args.vae, args.text_encoder, tokenizer=args.tokenizer, device=args.device,
                           dtype=dtype)
    return load_embedded(device=args.device)


def run(args) -> int:
    from tqdm import tqdm

    from ..io.images import load_image
    from ..io.video import write_video
    from ..pipeline import generate

    out = args.out
    if len(args.ref) > MAX_REFS:
        raise InputError(f"{len(args.ref)} --ref images were given; at most {MAX_REFS} are supported")
    if len(args.label) > len(args.ref):
        raise InputError(f"{len(args.label)} --label values for {len(args.ref)} --ref images; "
                         "give at most one label per reference, in the same order")
    refs = [load_image(p) for p in args.ref]  # read before the model: a bad image fails fast
    bundle = _load_model(args)
    if not bundle.card.trained:
        print(f"note: {bundle.card.name}: untrained weights, the video will be noise", flush=True)
    prompt = args.prompt
    if args.rewrite:
        from ..rewrite import rewrite
        from .rewrite import backend_options, print_warnings

        rewritten = rewrite(args.label, prompt, n_references=len(args.ref), bundle=bundle,
                            style_guide=args.rewrite_style_guide, **backend_options(args, "rewrite-"))
        print_warnings(rewritten)
        prompt = rewritten.prompt
        print(f"prompt ({rewritten.backend_used}):\n{prompt}", flush=True)
    steps = args.steps if args.steps is not None else bundle.card.defaults.steps
    with tqdm(total=steps, desc="sampling", unit="step") as bar:
        def progress(step, total, sigma, x0):
            bar.update(step - bar.n)
            bar.set_postfix(sigma=f"{sigma:.3f}")

        result = generate(bundle, refs, prompt, negative=args.negative, frames=args.frames,
                          height=args.height, width=args.width, steps=steps, shift=args.shift, solver=args.solver,
                          cfg=args.cfg, seed=args.seed, labels=args.label or None, callback=progress)
    write_video(out, result.frames, fps=args.fps if args.fps is not None else bundle.card.defaults.fps)
    t, h, w, _ = result.frames.shape
    print(json.dumps({"out": str(out), "frames": t, "height": h, "width": w, "seed": args.seed,
                      "seconds": round(result.seconds, 2), "model": bundle.card.name}))
    return 0
