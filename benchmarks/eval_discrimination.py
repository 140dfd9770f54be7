"""How well the SpriteWorld metrics separate right from wrong, and what they cost.

For N clean single-subject clips (no occluder) it renders the true clip and three clips of the
same scene with one identity attribute changed (shape, body colour, pattern), and scores subject
fidelity of each against the TRUE identity; then the true motion vs the same identity doing
"stay" / "spin_cw" / "grow". Prints means, worst cases and the smallest per-clip gaps, plus CPU
seconds per tracked subject (single BLAS thread) and peak RSS.

    .venv/bin/python benchmarks/eval_discrimination.py --clips 12
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import resource
import time

import numpy as np

from libragen_core.eval.metrics_identity import subject_fidelity
from libragen_core.eval.metrics_motion import motion_alignment
from libragen_core.eval.tracking import track_scene
from libragen_core.spriteworld.identity import COLORS, PATTERNS, SHAPES
from libragen_core.spriteworld.render import render_scene
from libragen_core.spriteworld.scene import sample_scene


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--seed", type=int, default=100)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    fid = {"right": [], "shape": [], "color": [], "pattern": []}
    mot = {"right": [], "stay": [], "spin_cw": [], "grow": []}
    acc = []
    cpu = []
    for i in range(args.clips):
        scene = sample_scene(args.seed + i, n_subjects=1, p_occluder=0.0)
        ident = scene.subjects[0].identity
        alts = {
            "shape": dataclasses.replace(ident, shape=[s for s in SHAPES if s != ident.shape][rng.integers(9)]),
            "color": dataclasses.replace(ident, color=[c for c in COLORS if c not in (ident.color, ident.color2)][rng.integers(8)]),
            "pattern": dataclasses.replace(ident, pattern=[p for p in PATTERNS if p != ident.pattern][rng.integers(5)]),
        }
        t0 = time.process_time()
        tr = track_scene(render_scene(scene).frames, scene)
        cpu.append(time.process_time() - t0)
        fid["right"].append(subject_fidelity(tr)[0]["mean"])
        m = motion_alignment(tr, scene)[0]
        mot["right"].append(m["score"])
        acc.append(m["correct"])
        for k, alt in alts.items():
            wrong = copy.deepcopy(scene)
            wrong.subjects[0].identity = alt
            fid[k].append(subject_fidelity(track_scene(render_scene(wrong).frames, scene))[0]["mean"])
        if scene.subjects[0].motion not in ("stay", "spin_cw", "spin_ccw", "grow", "shrink"):
            for motion, params in (("stay", {}), ("spin_cw", {"turns": 1.0}), ("grow", {"factor": 1.6})):
                other = copy.deepcopy(scene)
                other.subjects[0].motion, other.subjects[0].params = motion, params
                other.subjects[0].start = (0.5, 0.5)
                mot[motion].append(motion_alignment(track_scene(render_scene(other).frames, scene), scene)[0]["score"])
    print(f"{args.clips} clips, 64x64x17")
    for name, table in (("subject fidelity", fid), ("motion alignment", mot)):
        print(f"{name}:")
        for k, v in table.items():
            if v:
                print(f"  {k:8s} mean {np.mean(v):.3f}  min {np.min(v):.3f}  max {np.max(v):.3f}  (n={len(v)})")
    gaps = np.array(fid["right"]) - np.max([fid[k] for k in ("shape", "color", "pattern")], axis=0)
    print(f"fidelity gap right - best wrong per clip: mean {gaps.mean():.3f}  min {gaps.min():.3f}")
    print(f"motion classifier accuracy on true clips: {np.mean(acc):.3f}")
    print(f"tracking CPU per subject-clip: mean {np.mean(cpu):.2f} s  max {np.max(cpu):.2f} s")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
