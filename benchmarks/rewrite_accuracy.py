"""Offline rewriter on SpriteWorld: stated motions on user phrasings, exact match on template phrasings, speed.

1. User phrasings (tests/data/rewrite_dev.jsonl, tests/data/rewrite_heldout.jsonl), written before the
   rewriter was read, independently of our templates: paths by start and end points or a goal,
   rising/sinking/falling, passive voice, camera moves apart from subject motion, negation,
   pronouns, several clauses and subjects. The rewriter was tuned on the dev set only; the held-out
   set is scored, never tuned on. Per set: the share of stated subject motions the rewrite gets
   right (caption_facts of the rewrite against the expected label, through the label map in
   libragen_core/eval/rewrite_phrasings.py), the number rewritten in the opposite direction,
   unstated subjects left still (nothing invented), and camera pans.
2. Templates: for each scene, every user phrasing (9 training templates, 3 held-out templates) is
   rewritten with the subjects' labels; the rewrite must parse (parse_caption) and caption_facts
   must give the same per-subject motions and interaction (swap/meet as unordered pairs) as the
   scene's true caption. Label forms: ref_name ("the blue star"), name ("a blue striped star"),
   description (the full Ref line), none (unlabelled: mentions bind by order, which cannot recover
   which image is which when the user names the chaser first).

Speed: rewrites per second, against caption_facts on the true caption in the same run.

--everyday prints instead the markdown table of docs/rewrite.md: the 30 everyday prompts of
tests/data/rewrite_everyday.jsonl (people, pets, products) in the libragen and phantom styles.

    .venv/bin/python benchmarks/rewrite_accuracy.py                      # both phrasing sets + 500 scenes
    .venv/bin/python benchmarks/rewrite_accuracy.py --sets dev --n 0 -v  # the dev set only, with misses
    .venv/bin/python benchmarks/rewrite_accuracy.py --everyday           # the table of everyday rewrites
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

from libragen_core.eval.rewrite_phrasings import load_set, score_set
from libragen_core.rewrite import rewrite
from libragen_core.spriteworld.captions import caption_facts, scene_caption, user_prompts
from libragen_core.spriteworld.scene import sample_scene

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def key(facts):
    inter = facts["interaction"]
    if inter and inter["kind"] in ("swap", "meet"):
        inter = {**inter, "subjects": sorted(inter["subjects"])}
    return facts["motions"], inter


def labels_of(scene, form):
    ids = [s.identity for s in scene.subjects]
    return {"ref_name": [i.ref_name for i in ids], "name": [i.name for i in ids],
            "description": [i.description for i in ids], "none": [""] * len(ids)}[form]


def phrasings(sets: list[str], verbose: bool) -> dict:
    out = {}
    for name in sets:
        rows = load_set(DATA / f"rewrite_{name}.jsonl")
        score = score_set(rows, lambda labels, prompt: rewrite(labels, prompt, style_guide="spriteworld").prompt)
        out[name] = {"prompts": len(rows), **score.as_dict()}
        if verbose:
            out[name]["misses"] = score.misses
    return out


def templates(n: int, seed: int, forms: list[str]) -> tuple[dict, list, float, float]:
    scenes = []
    for i in range(n):
        # half the scenes draw held-out identities (unseen looks), half training ones
        scene = sample_scene(np.random.default_rng([seed, i]), split="heldout" if i % 2 else "train")
        scenes.append((scene, key(caption_facts(scene_caption(scene))),
                       {s: user_prompts(scene, s) for s in ("train", "heldout")}))
    table, examples = {}, []
    t_rewrite, n_rewrite = 0.0, 0
    for form in forms:
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
    t_ref = (time.perf_counter() - t0) / max(len(scenes), 1)
    return table, examples, t_rewrite / max(n_rewrite, 1), t_ref


def everyday_table() -> str:
    rows = ["| labels | prompt | libragen (Video line) | phantom |", "|---|---|---|---|"]
    for line in (DATA / "rewrite_everyday.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        lib = rewrite(row["subjects"], row["prompt"], style_guide="libragen").video_line
        ph = rewrite(row["subjects"], row["prompt"], style_guide="phantom").prompt
        cells = ["; ".join(row["subjects"]), row["prompt"], lib.removeprefix("Video: "), ph]
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="dev,heldout", help="phrasing sets under tests/data ('' = none)")
    ap.add_argument("--n", type=int, default=500, help="template scenes (0 = skip the templates)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--forms", default="ref_name,name,description,none")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every miss of the phrasing sets")
    ap.add_argument("--everyday", action="store_true", help="print the markdown table of everyday rewrites")
    args = ap.parse_args()
    if args.everyday:
        print(everyday_table())
        return
    report: dict = {}
    if args.sets:
        report["phrasings"] = phrasings([s for s in args.sets.split(",") if s], args.verbose)
    if args.n:
        table, examples, per, ref = templates(args.n, args.seed, args.forms.split(","))
        report["templates"] = {"scenes": args.n, "seed": args.seed, "exact_match": table,
                               "rewrite_ms": round(per * 1e3, 3), "rewrites_per_s": round(1 / per, 1),
                               "ratio_vs_caption_facts": round(per / ref, 2), "misses": examples}
    report["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
