"""Throughput of `libragen batch` against running ComfyUI servers: one job in flight per server
(the reference) versus two (the next prompt waits in the server's queue while the previous
one's files download). Core nodes only, so any ComfyUI works.

    .venv/bin/python benchmarks/batch_throughput.py --server http://127.0.0.1:8188 [--server URL2] \
        [--jobs 16] [--size 512]

Prints wall time and jobs/s for each setting, the ratio to the reference, and the client's peak RSS.
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from PIL import Image

from libragen_core.batch import BatchOptions, BatchRunner, load_workflow, parse_jobs


def workflow(size: int) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact",
                                                     "width": size, "height": size, "crop": "disabled"}},
        "3": {"class_type": "ImageAddNoise", "inputs": {"image": ["2", 0], "seed": 0, "strength": 0.1}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "bench"}},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", action="append", required=True)
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        Image.new("RGB", (64, 64), (120, 80, 200)).save(d / "ref.png")
        (d / "wf.json").write_text(json.dumps(workflow(args.size)))
        # a fresh seed per setting: ComfyUI would otherwise serve the second setting from its cache
        results = {}
        for per_server in (1, 2):
            lines = [json.dumps({"id": f"b{i}", "images": {"1.image": "ref.png"}, "seed": 1000 * per_server + i})
                     for i in range(args.jobs)]
            (d / f"jobs{per_server}.jsonl").write_text("\n".join(lines) + "\n")
            wf = load_workflow(d / "wf.json")
            jobs = parse_jobs(d / f"jobs{per_server}.jsonl", wf)
            t0 = time.perf_counter()
            summary = BatchRunner(wf, jobs, args.server, d / f"out{per_server}",
                                  BatchOptions(per_server=per_server)).run()
            wall = time.perf_counter() - t0
            assert summary.done == args.jobs, summary
            results[per_server] = wall
            print(f"per-server {per_server}: {args.jobs} jobs in {wall:.2f} s = {args.jobs / wall:.2f} jobs/s")
        print(f"ratio (per-server 2 / per-server 1 wall time): {results[2] / results[1]:.3f}")
        print(f"client peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
