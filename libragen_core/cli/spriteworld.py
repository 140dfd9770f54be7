"""`libragen spriteworld`: preview contact sheets, write datasets, render a scene, print the vocabulary."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import InputError


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise InputError(f"size must be N or HxW (e.g. 64 or 64x96); got {text!r}") from None
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise InputError(f"size must be N or HxW (e.g. 64 or 64x96); got {text!r}")


def _scene_options(args) -> dict:
    options: dict = {}
    if args.subjects:
        options["n_subjects"] = args.subjects
    if args.motions:
        options["motions"] = [m.strip() for m in args.motions.split(",") if m.strip()]
    if args.no_interactions:
        options["interactions"] = []
    flt = {}
    for name in ("shapes", "colors", "patterns", "sizes"):
        value = getattr(args, name)
        if value:
            flt[name] = [v.strip() for v in value.split(",") if v.strip()]
    if flt:
        options["identity_filter"] = flt
    if args.simple:
        options.update(p_camera=0.0, p_light=0.0, p_occluder=0.0, p_props=0.0, background_kinds=["plain", "gradient"])
    return options


def _common(p):
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument("--size", default="64", help="frame size N or HxW (default 64)")
    p.add_argument("--frames", type=int, default=17, help="frames per clip, 4k+1 (default 17)")
    p.add_argument("--split", default="train", choices=["train", "heldout"], help="identity split (default train)")
    p.add_argument("--subjects", type=int, choices=[1, 2, 3], help="subjects per clip (default: 1-3 at random)")
    p.add_argument("--motions", help="comma-separated single-subject motions to draw from (default all)")
    p.add_argument("--no-interactions", action="store_true", help="no chases, swaps or meetings")
    p.add_argument("--shapes", help="comma-separated shapes to draw identities from")
    p.add_argument("--colors", help="comma-separated body colours to draw identities from")
    p.add_argument("--patterns", help="comma-separated patterns to draw identities from")
    p.add_argument("--sizes", help="comma-separated size classes (small, medium, large)")
    p.add_argument("--simple", action="store_true",
                   help="curriculum start: plain or gradient backgrounds, no props, occluders, pans or light changes")


def add_parser(sub):
    p = sub.add_parser("spriteworld", help="SpriteWorld: preview clips, write datasets, render scenes")
    cmds = p.add_subparsers(dest="sw_command", required=True, metavar="ACTION")

    pv = cmds.add_parser("preview", help="render a contact sheet PNG of a few clips with their captions")
    pv.add_argument("--out", required=True, help="PNG file to write")
    pv.add_argument("--n", type=int, default=6, help="number of clips (default 6)")
    pv.add_argument("--zoom", type=int, default=2, help="pixel magnification (default 2)")
    pv.add_argument("--step", type=int, default=2, help="show every step-th frame (default 2)")
    pv.add_argument("--defects", action="store_true", help="one clip per defect kind instead")
    _common(pv)
    pv.set_defaults(run=_preview)

    ds = cmds.add_parser("dataset", help="write a dataset folder (videos, reference PNGs, manifest.jsonl)")
    ds.add_argument("--out", required=True, help="dataset folder (created; an existing complete one is kept)")
    ds.add_argument("--kind", required=True, choices=["t2v", "in_pair", "cross_pair", "defects"])
    ds.add_argument("--n", type=int, required=True, help="number of clips")
    ds.add_argument("--format", default="mp4", help="video container: mp4 (default), webm, webp, gif")
    ds.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    ds.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    _common(ds)
    ds.set_defaults(run=_dataset)

    rd = cmds.add_parser("render", help="render one scene JSON (Scene.to_dict) to a video file")
    rd.add_argument("--scene", required=True, help="scene JSON file")
    rd.add_argument("--out", required=True, help="video file (.mp4, .webm, .webp, .gif)")
    rd.set_defaults(run=_render)

    vc = cmds.add_parser("vocab", help="print the caption vocabulary as JSON")
    vc.add_argument("--out", help="write to this file instead of stdout")
    vc.set_defaults(run=_vocab)


def _preview(args):
    from ..io.images import save_png
    from ..spriteworld.preview import contact_sheet, preview_rows

    rows = preview_rows(args.n, args.seed, size=_size(args.size), n_frames=args.frames, split=args.split,
                        defects=args.defects, scene_options=_scene_options(args))
    save_png(args.out, contact_sheet(rows, step=args.step, zoom=args.zoom))
    print(f"wrote {args.out} ({len(rows)} clips)")


def _dataset(args):
    from ..spriteworld.dataset import write_dataset

    def progress(done, total):
        if done == total or done % 100 == 0:
            print(f"\r{done}/{total} clips", end="\n" if done == total else "", file=sys.stderr, flush=True)

    manifest = write_dataset(args.out, args.kind, args.n, args.seed, split=args.split, size=_size(args.size),
                             n_frames=args.frames, video_format=args.format, scene_options=_scene_options(args),
                             overwrite=args.overwrite, workers=args.workers, progress=progress)
    print(f"wrote {manifest}")


def _render(args):
    from ..io.video import write_video
    from ..spriteworld.render import render_scene
    from ..spriteworld.scene import Scene

    path = Path(args.scene)
    if not path.is_file():
        raise InputError(f"scene file not found: {path}")
    scene = Scene.from_json(path.read_text(encoding="utf-8"))
    write_video(args.out, render_scene(scene).frames, fps=scene.fps)
    print(f"wrote {args.out}")


def _vocab(args):
    from ..io.atomic import atomic_path
    from ..spriteworld.captions import caption_vocabulary

    text = json.dumps(caption_vocabulary(), indent=1)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
