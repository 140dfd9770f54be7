"""SpriteWorld render throughput: clips/s at 64x64x17 (render only), single process and N workers.

Reference in the same run: the same renderer driven one frame at a time (the per-frame loop a
straightforward implementation would use), to show what vectorising over frames buys.
Also reported: scene sampling rate, render + mp4 encode rate, peak Python heap per clip
(tracemalloc) and process RSS.

    .venv/bin/python benchmarks/render_speed.py [--clips 400] [--workers 2] [--size 64] [--frames 17]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from libragen_core.io.video import write_video
from libragen_core.spriteworld.render import render_scene
from libragen_core.spriteworld.scene import Scene, sample_scene


def _scenes(n, size, frames, seed=0):
    return [sample_scene(np.random.default_rng([seed, i]), size=(size, size), n_frames=frames) for i in range(n)]


def render_framewise(scene: Scene) -> np.ndarray:
    """Reference: every frame rendered on its own, as a single-frame scene at that moment."""
    from libragen_core.spriteworld.scene import world_tracks

    world, scales, angles = world_tracks(scene)
    out = []
    for t in range(scene.n_frames):
        subs = []
        for k, s in enumerate(scene.subjects):
            h, w = scene.size
            subs.append(type(s)(s.identity, "stay", {}, (world[k, t, 0] / w, world[k, t, 1] / h), float(scales[k, t]), float(angles[k, t])))
        one = Scene(scene.seed, subs, scene.size, 1, scene.background, type(scene.camera)(), type(scene.light)(), scene.occluder)
        out.append(render_scene(one).frames[0])
    return np.stack(out)


def _render_chunk(jsons):
    for text in jsons:
        render_scene(Scene.from_json(text))
    return len(jsons)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=17)
    args = ap.parse_args()

    t0 = time.perf_counter()
    scenes = _scenes(args.clips, args.size, args.frames)
    sample_rate = args.clips / (time.perf_counter() - t0)
    for s in scenes[:20]:  # warm the sprite cache like a long dataset run would
        render_scene(s)

    t0, c0 = time.perf_counter(), time.process_time()
    for s in scenes:
        render_scene(s)
    single = args.clips / (time.perf_counter() - t0)
    # CPU time is what one core delivers even when other jobs share the machine
    single_cpu = args.clips / (time.process_time() - c0)

    same = [s for s in scenes[:60] if not s.camera.pan and not s.light.change]
    assert all(np.array_equal(render_framewise(s), render_scene(s).frames) for s in same), "reference differs"
    n_ref = max(20, args.clips // 10)
    t0 = time.perf_counter()
    for s in scenes[:n_ref]:
        render_framewise(s)
    reference = n_ref / (time.perf_counter() - t0)

    jsons = [s.to_json() for s in scenes]
    chunks = [jsons[i :: args.workers * 4] for i in range(args.workers * 4)]
    with mp.get_context("fork").Pool(args.workers) as pool:
        pool.map(_render_chunk, [c[:2] for c in chunks])  # start-up and imports outside the timing
        t0 = time.perf_counter()
        pool.map(_render_chunk, chunks)
        parallel = args.clips / (time.perf_counter() - t0)

    n_enc = max(20, args.clips // 10)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for i, s in enumerate(scenes[:n_enc]):
            write_video(Path(tmp) / f"{i}.mp4", render_scene(s).frames, fps=s.fps)
        encoded = n_enc / (time.perf_counter() - t0)

    tracemalloc.start()
    peak = 0
    for s in scenes[:50]:
        tracemalloc.reset_peak()
        render_scene(s)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"clip: {args.size}x{args.size}x{args.frames}, {args.clips} sampled scenes (1-3 subjects)")
    print(f"scene sampling            {sample_rate:8.1f} scenes/s")
    print(f"render, 1 process         {single:8.1f} clips/s wall, {single_cpu:.1f} clips per CPU-second")
    print(f"machine load average      {os.getloadavg()[0]:8.1f} (2 cores)")
    print(f"render, {args.workers} processes       {parallel:8.1f} clips/s  ({parallel / single:.2f}x)")
    print(f"reference, frame by frame {reference:8.1f} clips/s  (vectorised is {single / reference:.1f}x faster)")
    print(f"render + mp4 encode       {encoded:8.1f} clips/s")
    print(f"peak Python heap per clip {peak / 2**20:8.2f} MiB;  process max RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
