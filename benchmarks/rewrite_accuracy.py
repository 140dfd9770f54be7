"""Offline rewriter on SpriteWorld: exact-match rate of motions + bindings, and speed.

For each scene, every user phrasing (9 training templates, 3 held-out templates) is rewritten
with the subjects' labels; the rewrite must parse (parse_caption) and caption_facts must give
the same per-subject motions and the same interaction (swap/meet compared as unordered pairs) as
the scene's true caption. Label forms: ref_name ("the blue star"), name ("a blue striped star"),
description (the full Ref line), and none (unlabelled references: mentions bind by order, which
cannot recover which image is which when the user names the chaser first).

Speed: rewrites per second, against caption_facts on the true caption in the same run.

    .venv/bin/python benchmarks/rewrite_accuracy.py --n 500
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from libragen_core.rewrite import rewrite
from libragen_core.spriteworld.captions import caption_facts, scene_caption, user_prompts
from libragen_core.spriteworld.scene import sample_scene


def key(facts):
    inter = facts["interaction"]
    if inter and inter["kind"] in ("swap", "meet"):
        inter = {**inter, "subjects": sorted(inter["subjects"])}
    return facts["motions"], inter


def labels_of(scene, form):
    ids = [s.identity for s in scene.subjects]
    return {"ref_name": [i.ref_name for i in ids], "name": [i.name for i in ids],
            "description": [i.description for i in ids], "none": [""] * len(ids)}[form]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--forms", default="ref_name,name,description,none")
    args = ap.parse_args()
    scenes = []
    for i in range(args.n):
        # half the scenes draw held-out identities (unseen looks), half training ones
        scene = sample_scene(np.random.default_rng([args.seed, i]), split="heldout" if i % 2 else "train")
        scenes.append((scene, key(caption_facts(scene_caption(scene))),
                       {s: user_prompts(scene, s) for s in ("train", "heldout")}))
    table = {}
    examples = []
    t_rewrite, n_rewrite = 0.0, 0
    for form in args.forms.split(","):
        hits = {"train": [0, 0], "heldout": [0, 0]}
        for scene, truth, prompts in scenes:
            labels = labels_of(scene, form)
            for split, texts in prompts.items():
                for text in texts:
                    t0 = time.perf_counter()
                    result = rewrite(labels, text, style_guide="spriteworld")
                    t_rewrite += time.perf_counter() - t0
                    n_rewrite += 1
                    ok = key(caption_facts(result.prompt)) == truth
                    hits[split][0] += ok
                    hits[split][1] += 1
                    if not ok and len(examples) < 5:
                        examples.append({"form": form, "prompt": text, "rewrite": result.video_line,
                                         "truth": scene_caption(scene).splitlines()[-1]})
        table[form] = {s: {"match": a, "total": b, "rate": round(a / b, 4)} for s, (a, b) in hits.items()}
    t0 = time.perf_counter()
    for scene, _, _ in scenes:
        caption_facts(scene_caption(scene))
    t_ref = (time.perf_counter() - t0) / len(scenes)
    per = t_rewrite / n_rewrite
    print(json.dumps({"scenes": args.n, "seed": args.seed, "exact_match": table,
                      "rewrite_ms": round(per * 1e3, 3), "rewrites_per_s": round(1 / per, 1),
                      "ratio_vs_caption_facts": round(per / t_ref, 2),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "misses": examples}, indent=1))


if __name__ == "__main__":
    main()
