"""Does the prompt rewriter help the trained model follow prompts? (issue 7's must-show table)

For each SpriteWorld scene (held-out user phrasings, cross-pair references rendered on white),
the model generates three videos from the SAME references, seed and size, differing only in the
prompt:
  caption   the scene's training-style caption (the upper bound: what the model was trained on)
  raw       a held-out user phrasing, as typed ("I want the star to weave to the right ...")
  rewrite   that phrasing after the offline rewriter (or --backend http/transformers)
Each video is tracked (libragen_core.eval.tracking.track_scene) and scored against the scene's
true motions (libragen_core.eval.metrics_motion.motion_alignment): mean alignment score (0..1)
and motion-class accuracy per subject. Text-level agreement of the rewrite with the caption
(caption_facts) is reported too.

It needs the trained embedded model (or --model-dir); on the untrained placeholder the numbers
mean nothing, so it refuses unless --allow-untrained (a smoke run of the script itself).

    .venv/bin/python benchmarks/rewrite_alignment.py --n 100 --out runs/rewrite_alignment.json
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from libragen_core.rewrite import rewrite
from libragen_core.spriteworld.captions import caption_facts, scene_caption, user_prompts
from libragen_core.spriteworld.render import render_identity
from libragen_core.spriteworld.scene import sample_scene

CONDITIONS = ("caption", "raw", "rewrite")


def facts_key(text):
    try:
        f = caption_facts(text)
    except Exception:  # a raw user prompt is outside the grammar
        return None
    inter = f["interaction"]
    if inter and inter["kind"] in ("swap", "meet"):
        inter = {**inter, "subjects": sorted(inter["subjects"])}
    return f["motions"], inter


def load(args):
    from libragen_core.models.bundle import load_embedded, load_model_folder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = load_model_folder(args.model_dir, device=args.device) if args.model_dir else \
            load_embedded(device=args.device)
    if not bundle.card.trained and not args.allow_untrained:
        sys.exit(f"{bundle.card.name}: untrained weights; alignment numbers would be noise. Train/ship the model "
                 "first, pass --model-dir, or --allow-untrained for a smoke run of this script.")
    return bundle


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=100, help="scenes")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--split", default="heldout", choices=["train", "heldout"], help="identity split of the scenes")
    ap.add_argument("--steps", type=int, help="sampling steps (default: the model card's)")
    ap.add_argument("--backend", default="offline", choices=["offline", "http", "transformers"])
    ap.add_argument("--url")
    ap.add_argument("--llm-model")
    ap.add_argument("--llm-dir")
    ap.add_argument("--allow-untrained", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()

    from libragen_core.eval.metrics_motion import motion_alignment
    from libragen_core.eval.tracking import track_scene
    from libragen_core.pipeline import generate

    bundle = load(args)
    options = {"offline": {}, "http": {"url": args.url, "model": args.llm_model},
               "transformers": {"model_dir": args.llm_dir}}[args.backend]
    scores = {c: [] for c in CONDITIONS}
    correct = {c: [] for c in CONDITIONS}
    text_match = []
    seconds = {c: 0.0 for c in CONDITIONS}
    for i in range(args.n):
        scene = sample_scene(np.random.default_rng([args.seed, i]), split=args.split,
                             size=(bundle.card.defaults.height, bundle.card.defaults.width),
                             n_frames=bundle.card.defaults.frames)
        h, w = scene.size
        refs = [render_identity(s.identity, size=(h, w))[0] for s in scene.subjects]
        labels = [s.identity.ref_name for s in scene.subjects]
        raw = user_prompts(scene, "heldout")[i % 3]
        rewritten = rewrite(labels, raw, args.backend, bundle=bundle, **options)
        prompts = {"caption": scene_caption(scene), "raw": raw, "rewrite": rewritten.prompt}
        text_match.append(facts_key(rewritten.prompt) == facts_key(prompts["caption"]))
        for cond, prompt in prompts.items():
            t0 = time.perf_counter()
            frames = generate(bundle, refs, prompt, seed=args.seed * 100003 + i, frames=scene.n_frames, height=h,
                              width=w, steps=args.steps, labels=labels).frames
            seconds[cond] += time.perf_counter() - t0
            per_subject = motion_alignment(track_scene(frames, scene), scene)
            scores[cond] += [s["score"] for s in per_subject]
            correct[cond] += [s["correct"] for s in per_subject]
        print(f"scene {i + 1}/{args.n}: " + ", ".join(f"{c} {np.mean(scores[c]):.3f}" for c in CONDITIONS),
              flush=True)
    base = float(np.mean(scores["caption"])) or float("nan")
    table = {c: {"alignment": round(float(np.mean(scores[c])), 4),
                 "motion_accuracy": round(float(np.mean(correct[c])), 4),
                 "vs_caption": round(float(np.mean(scores[c])) / base, 3),
                 "seconds_per_video": round(seconds[c] / args.n, 2)} for c in CONDITIONS}
    report = {"model": bundle.card.name, "trained": bundle.card.trained, "scenes": args.n, "split": args.split,
              "seed": args.seed, "backend": args.backend, "subjects": len(scores["caption"]),
              "rewrite_text_match": round(float(np.mean(text_match)), 4), "table": table,
              "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(json.dumps(report, indent=1))
    if args.out:
        from libragen_core.io.atomic import atomic_path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
