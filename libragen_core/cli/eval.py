"""`libragen eval`: score a generator on the fixed SpriteWorld suite.

    libragen eval --model gt --suite small --out runs/eval-gt
    libragen eval --model copy-paste --suite small --out runs/eval-copy
    libragen eval --model embedded --suite full --out runs/eval-embedded

Writes results.json (per case, per metric, aggregates by split), report.md (the table) and
contact_sheet.png into --out. Exit status 2 with the reason on stderr for bad arguments or a
model that cannot be loaded.
"""
from __future__ import annotations

import sys

from ..errors import ConfigError, InputError

MODELS = ("embedded", "gt", "copy-paste")


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="score a model on the SpriteWorld eval suite",
                       description="Generate every suite case and score fidelity, motion, copy-paste, smoothness, dynamics, realness.")
    p.add_argument("--model", choices=MODELS, default="embedded",
                   help="embedded: the shipped SpriteWorld model (needs libragen_core.pipeline); gt: ground-truth renders "
                        "(upper bound); copy-paste: references pasted static (degenerate baseline)")
    p.add_argument("--suite", choices=("small", "full"), default="small", help="small: 6 cases x 3 prompts; full: 24 x 3")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--size", type=int, default=64, help="video height and width in pixels (default 64)")
    p.add_argument("--frames", type=int, default=17, help="frames per video, 4k+1 (default 17)")
    p.add_argument("--device", default="cpu", help="torch device for --model embedded (default cpu)")
    p.add_argument("--refs", choices=("cross", "inpair", "none"), default="cross",
                   help="references given to the model: cross = the identity on white (default); inpair = crops of the "
                        "true clip's last frame (where copy-paste shows); none = text-to-video from the prompt alone")
    p.add_argument("--prompts", default="all",
                   help="prompt kinds to generate, comma-separated from caption, user_seen, user_heldout, anonymous "
                        "(the caption without the subjects' looks; default all)")
    p.add_argument("--cases", type=int, default=None, help="score only the first N cases (a quick check)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _embedded_generator(device: str):
    try:
        from .. import pipeline
        from ..models.bundle import load_embedded
    except ImportError as e:
        raise ConfigError(
            f"--model embedded needs the generation pipeline (libragen_core.pipeline and models.bundle), "
            f"which could not be imported ({e}); use --model gt or --model copy-paste meanwhile"
        ) from e
    return pipeline.Generator(load_embedded(device=device))


def run(args) -> int:
    from ..eval.harness import CopyPasteGenerator, GroundTruthGenerator, run_eval
    from ..eval.report import markdown_table, write_report
    from ..eval.suite import build_suite, parse_prompt_kinds

    cases = build_suite(args.suite, size=(args.size, args.size), n_frames=args.frames)
    if args.cases is not None:
        if args.cases < 1:
            raise InputError(f"--cases must be at least 1; got {args.cases}")
        cases = cases[: args.cases]
    if args.model == "gt":
        gen = GroundTruthGenerator(cases)
    elif args.model == "copy-paste":
        gen = CopyPasteGenerator()
    else:
        gen = _embedded_generator(args.device)
    results = run_eval(gen, cases, model_name=args.model, progress=not args.no_progress, ref_kind=args.refs,
                       prompt_kinds=parse_prompt_kinds(args.prompts))
    paths = write_report(results, cases, args.out)
    sys.stdout.write(markdown_table(results))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
