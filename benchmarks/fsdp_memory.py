"""Memory per process of a LoRA SFT step under DDP and under FSDP (training/common/fsdp.py), with the
Wan2.1 1.3B shapes (random weights), against the per-GPU figures docs/training-real-data.md gives.

    .venv/bin/python benchmarks/fsdp_memory.py [--procs 2] [--frames 3 --height 16 --width 16]
    .venv/bin/python benchmarks/fsdp_memory.py --device cuda --procs 2        # NCCL, on GPUs
    .venv/bin/python benchmarks/fsdp_memory.py --table --tokens 33000         # the computed table only
    .venv/bin/python benchmarks/fsdp_memory.py --loading                      # CPU memory of loading a base file

Each layout runs in fresh processes (torch.distributed.run; gloo on CPU, NCCL on CUDA), so each
peak is its own. DDP: every process holds the whole frozen bf16 base (torch's DDP, as accelerate
wraps it); FSDP: the model is built on the meta device, sharded one block per unit, and only each
process's part is made, as the training loop's sharding leaves it. Both then take two LoRA steps
(rank 32, gradient checkpointing, the same per-process batch of one clip + one reference frame).
Peak = CUDA's max allocated, or on CPU the rise of the process's maximum resident memory over
what it had before building the model (with glibc's mmap threshold at 64 KiB, so that freed
tensors leave the process). The measured peaks are printed beside the computed ones
(weights / N + two gathered blocks + the rest of the model + LoRA state / N + activations), and
the computed table extends them to the 14B base and 1 to 8 GPUs.

--loading writes a base file of the preset's shapes (random fp16 weights) and measures each
process's own (anonymous) CPU memory while it loads it in bf16 and shards it: every process
reading the file (what DDP does) against the main process alone reading it and sending each block
to the others, which built the model on the meta device (load_frozen_dit(sharded=True), the FSDP
path). The file's pages in the page cache are shared and not counted.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lora_sft_memory import add_step_args, build, memory_table, random_init_  # noqa: E402  (beside this file)

GIB = 2**30


def _peak(device: torch.device, base_rss: int) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss


def worker(a) -> dict:
    import peft  # noqa: F401  (imported by add_lora; loaded here so its memory is not counted)
    import torch.distributed as dist

    from libragen_core.lora import add_lora
    from libragen_core.models.presets import DIT_PRESETS
    from libragen_core.models.wan_dit import WanDiT
    from training.common import fsdp
    from training.common.losses import flow_matching_loss

    torch.set_num_threads(a.threads)
    cuda = a.device == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo")
    # what the process holds before the model (python, torch, peft, the process group): not counted
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rank = dist.get_rank()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    with torch.device("meta"):
        dit = WanDiT(DIT_PRESETS[a.preset]).to(torch.bfloat16)
    dit.requires_grad_(False)
    torch.manual_seed(1)
    add_lora(dit, rank=a.rank, alpha=a.rank)  # on the meta device too: made below with the rest
    dit.gradient_checkpointing = True
    if a.layout == "fsdp":
        fsdp.shard_model(dit, device)
        dit.to_empty(device=device)
    else:
        dit.to_empty(device=device)
    random_init_(dit, torch.Generator(device=device).manual_seed(0))
    weights = sum((p.to_local() if fsdp.is_sharded(p) else p).nbytes for p in dit.parameters())
    built = _peak(device, base_rss)
    model = dit
    if a.layout == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(dit, device_ids=[device.index] if cuda else None)
    params = [p for p in dit.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(2 + rank)
    x0 = torch.randn(1, 16, a.frames, a.height, a.width, generator=g).to(device)
    refs = torch.randn(1, 16, 1, a.height, a.width, generator=g).to(device)
    ctx = torch.zeros(1, 512, 4096)
    ctx[:, :40] = torch.randn(1, 40, 4096, generator=g)
    ctx = ctx.to(device)
    dit.train()
    times = []
    for _ in range(2):
        t = time.perf_counter()
        eps = torch.randn(x0.shape, generator=g).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = flow_matching_loss(model, x0, ctx, torch.tensor([0.7], device=device), eps, refs=refs)
        loss.backward()
        fsdp.clip_grad_norm(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    out = {"rank": rank, "peak_bytes": _peak(device, base_rss), "built_bytes": built, "weights_bytes": weights,
           "step_s": min(times), "tokens": (a.frames + 1) * (a.height // 2) * (a.width // 2)}
    dist.destroy_process_group()
    return out


def _anon_bytes() -> int:
    """The process's anonymous resident memory (its own tensors; not the file's pages, which the
    page cache shares between processes and can drop)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (the loading measure needs Linux)")


def loading_worker(a) -> dict:
    import threading

    import torch.distributed as dist

    from libragen_core.models.loading import load_dit
    from training.common import fsdp

    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    base, peak, done = _anon_bytes(), [0], threading.Event()

    def sample():  # the peak of anonymous memory, every 2 ms
        while not done.is_set():
            peak[0] = max(peak[0], _anon_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    meta = a.layout == "main-reads" and rank != 0
    dit = load_dit(a.file, device="meta" if meta else "cpu", dtype=torch.bfloat16).requires_grad_(False)
    kept, whole, _ = fsdp.shard_model(dit, torch.device("cpu"))
    seconds = time.perf_counter() - t
    done.set()
    sampler.join()
    out = {"rank": rank, "peak_bytes": max(peak[0], _anon_bytes()) - base, "weights_bytes": kept,
           "whole_bytes": whole, "load_s": seconds}
    dist.destroy_process_group()
    return out


def predicted(row: dict, layout: str, gpus: int, tokens: int, fp8: bool = False) -> int:
    """Computed bytes per GPU (benchmarks/lora_sft_memory.memory_table's pieces)."""
    weights = row["weights_fp8" if fp8 else "weights_bf16"]
    lora_state = row["lora_fp32"] + row["lora_grads"] + row["adamw"]
    act = row["act_per_1k_tokens"] * tokens // 1000
    if layout == "ddp" or gpus == 1:
        return weights + lora_state + act
    block = row["block_fp8" if fp8 else "block_bf16"] + row["lora_fp32"] // row["layers"]
    rest = weights - row["layers"] * row["block_fp8" if fp8 else "block_bf16"]
    # each block's weights gathered while it runs, the next one's gather in flight; the rest of
    # the model (patch and text embeddings, head) stays gathered through the forward pass
    return weights // gpus + 2 * block + rest + lora_state // gpus + act


def launch(a, layout: str, *extra: str) -> list[dict]:
    """Run `a.procs` worker processes of one layout; their figures, one dict per process."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(a.procs),
               __file__, "--layout", layout, "--results", folder, "--device", a.device, "--preset", a.preset,
               "--frames", str(a.frames), "--height", str(a.height), "--width", str(a.width), "--rank", str(a.rank),
               "--threads", str(a.threads), *extra]
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(a.threads)}
        if a.device == "cpu":
            # glibc keeps freed heap blocks in the process: the blocks FSDP gathers and frees one
            # after the other would show as resident memory never given back (1.3B, 2 processes:
            # +1.6 GiB after one forward); served by mmap, a freed block leaves the process, so
            # the peak counts live tensors, as CUDA's max_memory_allocated does
            env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}")
        return [json.loads(f.read_text()) for f in sorted(Path(folder).glob("*.json"))]


def measure_loading(a) -> int:
    import tempfile

    from libragen_core.models.loading import save_dit

    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "base.safetensors"
        # fp16, as the common Phantom-Wan / Wan2.1 downloads: loading it in bf16 converts every tensor,
        # so each process that reads the file holds a copy of its own
        save_dit(build(a.preset, torch.float16), file)
        size = file.stat().st_size
        results = {layout: launch(a, layout, "--file", str(file)) for layout in ("all-read", "main-reads")}
    print(f"\nloading a {a.preset} base file ({size / GIB:.2f} GiB, fp16) in bf16 and sharding it over {a.procs} CPU "
          "processes:")
    print("| who reads the file | process | weights kept (GiB) | peak own memory (GiB) | seconds |")
    print("|---|---:|---:|---:|---:|")
    for layout, rs in results.items():
        for r in rs:
            print(f"| {'every process' if layout == 'all-read' else 'the main process'} | {r['rank']} | "
                  f"{r['weights_bytes'] / GIB:.2f} | {r['peak_bytes'] / GIB:.2f} | {r['load_s']:.1f} |")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--procs", type=int, default=2, help="processes per layout (GPUs with --device cuda)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--preset", default="wan2.1-t2v-1.3b")
    add_step_args(p)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    p.add_argument("--table", action="store_true", help="print the computed per-GPU table only")
    p.add_argument("--tokens", type=int, default=33000,
                   help="tokens per GPU for the table (a 480x832 81-frame clip + 1 reference: about 33,000)")
    p.add_argument("--loading", action="store_true", help="measure the CPU memory of loading a base file instead")
    p.add_argument("--file", help=argparse.SUPPRESS)  # the base file a loading worker reads
    p.add_argument("--layout", choices=["ddp", "fsdp", "all-read", "main-reads"], help=argparse.SUPPRESS)  # a worker
    p.add_argument("--results", help=argparse.SUPPRESS)  # the folder a worker writes its figures to
    a = p.parse_args(argv)
    if a.layout:
        r = loading_worker(a) if a.file else worker(a)
        Path(a.results, f"{r['rank']}.json").write_text(json.dumps(r))
        return 0

    rows = {r["base"]: r for r in memory_table(a.rank)}
    print(f"computed memory per GPU, LoRA rank {a.rank}, {a.tokens} tokens per GPU, gradient checkpointing (GiB):")
    print("| base | weights | DDP | FSDP 2 GPUs | FSDP 4 | FSDP 8 |")
    print("|---|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        for fp8 in (False, True):
            cells = [predicted(row, "ddp", 1, a.tokens, fp8)] + [predicted(row, "fsdp", n, a.tokens, fp8) for n in (2, 4, 8)]
            print(f"| {name} | {'fp8' if fp8 else 'bf16'} | " + " | ".join(f"{c / GIB:.1f}" for c in cells) + " |")
    if a.table:
        return 0

    if a.loading:
        return measure_loading(a)
    results = {layout: launch(a, layout) for layout in ("ddp", "fsdp")}
    row = rows[a.preset]
    tokens = results["ddp"][0]["tokens"]
    print(f"\nmeasured, {a.preset} shapes, {a.procs} processes ({a.device}), {tokens} tokens per process, "
          f"LoRA rank {a.rank}:")
    print("| layout | weights kept / process (GiB) | after building (GiB) | peak / process (GiB) | computed (GiB) "
          "| vs DDP | step (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ddp_peak = max(r["peak_bytes"] for r in results["ddp"])
    for layout, rs in results.items():
        peak = max(r["peak_bytes"] for r in rs)
        comp = predicted(row, layout, a.procs, tokens)
        print(f"| {layout} | {max(r['weights_bytes'] for r in rs) / GIB:.2f} | "
              f"{max(r['built_bytes'] for r in rs) / GIB:.2f} | {peak / GIB:.2f} | {comp / GIB:.2f} | "
              f"{peak / ddp_peak:.2f} | {max(r['step_s'] for r in rs):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
