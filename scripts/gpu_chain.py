"""Train the whole SpriteWorld chain on one GPU from scratch in about 8 minutes, then measure Wan shapes.

On the lent GPU machine, from the repo root (one command; the machine has Python 3.12, torch,
accelerate, peft, safetensors, numpy, pillow, tqdm and opencv, and this script needs nothing else):

    PYTHONUNBUFFERED=1 python3 scripts/gpu_chain.py --out "$OUT"
The CPU check (tests/test_gpu_chain.py), with the tiny layer:

    python scripts/gpu_chain.py --out /tmp/o --device cpu --layer training/configs/spriteworld-gpu-tiny.toml \\
        --minutes 1.5 --deadline 4

What it does, each step logged to <out>/run.log as it goes:
 1. Environment: Python, torch, the device, CPU cores, and every package the chain imports; a
    missing one stops the run here, named.
 2. Sizing (~20 s on a GPU): one timed training step per stage at the config's shapes with random
    data (VAE image and video steps, base DiT + text encoder, SFT LoRA, DPO LoRA) gives each stage
    its steps from its share of --minutes (STAGE_SHARES, 80% efficiency for data, EMA, logs);
    curriculum phases, warm-up, checkpoint / validation / probe intervals scale with them. Written
    as a third config layer, <run>/gpu-sizing.toml, with the timings in gpu-sizing.json. Each
    training stage gets max_minutes at 1.3x its share as a guard.
 3. The chain: `python -m training.pipeline` over the layers. A stage the guard stopped is
    finished at the step it reached (its steps set to that step; it resumes from its checkpoint),
    so the chain reaches the final model folder before --deadline (less a minute to pack) even on a
    machine slower than the sizing measured.
 4. Outputs in --out (at most 8 files, each < 16 MiB, 60 MiB together): model.tar.partNN (the
    final model folder, plus the base DiT when it fits), logs.tar.gz (metrics.jsonl of every stage
    with the direction-probe curves, configs, the last sample sheet of each stage, pipeline.json,
    the sizing), summary.json, bench.json, run.log.
 5. If time is left before --deadline: benchmarks/wan_shapes.py at the Wan2.1 1.3B and 14B shapes
    with random weights (forward ours vs ComfyUI's WanModel when ComfyUI is importable, guidance
    batched vs sequential, LoRA SFT and DPO steps with checkpointing: peak memory, tokens/s, MFU),
    each in its own process with the time left as its timeout; what does not fit is listed as skipped.

Run it with a timeout_s of 600 and --deadline 9.5 (the default): with the machine's start (1-2
min) that leaves 15 - 11.5 = 3.5 min of the session's device time; a failure shows in the first
minute (the environment check and the sizing come first), which leaves room to rerun once. On the
same warm machine a rerun resumes: finished stages are skipped, an interrupted one continues.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE_LAYERS = ("training/configs/spriteworld.toml", "training/configs/spriteworld-gpu.toml")
TRAINING = ("vae", "base", "sft_in", "sft_cross", "dpo_consis", "dpo_realfake")
# shares of the training time (the rest of --minutes: caches, pair generation, validation, export, merges)
STAGE_SHARES = {"vae": 0.22, "base": 0.58, "sft_in": 0.05, "sft_cross": 0.05, "dpo_consis": 0.05, "dpo_realfake": 0.05}
TRAIN_FRACTION = 0.65  # of --minutes
EFFICIENCY = 0.8  # a stage's steps run at this share of the calibrated rate (data, EMA, logs, checkpoints)
GUARD = 1.3  # max_minutes = GUARD x the stage's share
LORA_CAP = 2  # SFT / DPO steps at most this many times the config's
PACKAGES = ("torch", "numpy", "safetensors", "accelerate", "peft", "PIL", "tqdm")
PART = 15 * 2**20  # bytes per model part (each returned file must stay under 16 MiB)
MAX_TOTAL = 60 * 2**20  # all returned files together (the limit is 64 MiB)
GPU_BENCH = (
    ("wan2.1-t2v-1.3b", "forward", "21x60x104"), ("wan2.1-t2v-1.3b", "guidance", "21x60x104"),
    ("wan2.1-t2v-1.3b", "sft", "21x60x104"), ("wan2.1-t2v-1.3b", "dpo", "21x60x104"),
    ("wan2.1-t2v-14b", "forward", "21x60x104"), ("wan2.1-t2v-14b", "guidance", "21x30x52"),
    ("wan2.1-t2v-14b", "sft", "21x30x52"), ("wan2.1-t2v-14b", "dpo", "21x30x52"),
)
CPU_BENCH = (("tiny", "forward", "5x8x8"), ("tiny", "sft", "5x8x8"))
PROBE_KEYS = tuple(f"probe/dir_{k}" for k in ("gap", "gap_0.9", "share", "vdiff", "text_diff", "sample_ratio"))


class Log:
    """Lines to stdout and to <out>/run.log, flushed as they come (a killed run keeps what it printed)."""

    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - open for the whole run

    def __call__(self, *parts) -> None:
        line = " ".join(str(p) for p in parts)
        print(line, flush=True)
        self.file.write(line + "\n")


# ---------------------------------------------------------------- 1. environment

def environment(device_arg: str, log: Log) -> dict:
    import importlib

    missing = []
    versions = {}
    for name in PACKAGES:
        try:
            mod = importlib.import_module(name)
            versions[name] = getattr(mod, "__version__", "?")
        except ImportError as e:
            missing.append(f"{name} ({e})")
    if missing:
        raise SystemExit("missing Python packages: " + ", ".join(missing) + ". Carry them as wheels (the device "
                         "README: pip download ... -d .whl, then pip install --target /tmp/site .whl/*.whl)")
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if device_arg == "auto" and cuda else ("cpu" if device_arg == "auto" else device_arg)
    if device == "cuda" and not cuda:
        raise SystemExit("--device cuda but torch sees no CUDA device")
    env = {"python": platform.python_version(), "packages": versions, "device": device, "cpus": os.cpu_count(),
           "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
           "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if device == "cuda"
           else None}
    log("[env]", json.dumps(env))
    return env


# ---------------------------------------------------------------- 2. sizing

def _timed(step, device: str, warmup: int = 1, repeats: int = 3, clock=time.perf_counter) -> float:
    import torch

    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t = clock()
    for _ in range(repeats):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (clock() - t) / repeats


def calibrate(cfg, device: str, log: Log, clock=time.perf_counter) -> dict[str, float]:
    """Seconds per optimizer step of each training stage at the config's shapes, random data.
    clock=time.process_time measures a CPU's own work, which the load of a shared machine does not inflate."""
    import torch

    from training.common.losses import flow_matching_loss
    from training.pretrain.base import build_dit, build_text, text_features
    from training.pretrain.vae import build_vae, image_grad_l1, vae_forward
    from training.spriteworld.clips import ProceduralClips

    dev = torch.device(device)
    def amp():  # a fresh context per step, as the training loop's accelerator makes
        return torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    out = {}
    vc = cfg.vae
    vae = build_vae(vc).to(dev)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-4)

    def vae_step(batch: int, frames: int, crop: int):
        def step():
            x = torch.rand(batch, 3, frames, crop, crop, device=dev) * 2 - 1
            with amp():
                y = vae_forward(vae, x)
                loss = (y - x).abs().mean() + (y - x).square().mean() + 0.5 * image_grad_l1(y, x)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    # the VAE stage renders its clips as it goes (one clip per window): the render workers' rate
    # bounds its steps on a fast device. Far from index 0, so nothing was rendered ahead yet.
    from training.common.prefetch import parallel

    src = parallel(ProceduralClips(vc.data), cfg.run.render_workers)
    src[0]  # the workers start
    n = 8 * max(1, cfg.run.render_workers)
    t = time.perf_counter()
    for i in range(100_000, 100_000 + n):
        src[i]
    out["render_clips_per_s"] = n / (time.perf_counter() - t)
    if hasattr(src, "close"):
        src.close()
    h, w = vc.data.size
    out["vae_image"] = _timed(vae_step(vc.image_batch, 1, vc.image_crop or min(h, w)), device, clock=clock)
    out["vae_video"] = _timed(vae_step(vc.optim.batch, vc.crop_frames, vc.crop or min(h, w)), device, clock=clock)
    vae = opt = None  # freed before the next stage's models

    bc = cfg.base
    z = vc.z_dim
    data = bc.phases[-1].data
    lat_shape = ((data.frames - 1) // 4 + 1, data.size[0] // 8, data.size[1] // 8)
    clips = ProceduralClips(data)
    captions = [clips[i].caption for i in range(8)]
    dit, text = build_dit(bc, z).to(dev), build_text(bc).to(dev)
    opt = torch.optim.AdamW([*dit.parameters(), *text.parameters()], lr=1e-4)
    b = bc.optim.batch
    caps = [captions[i % len(captions)] for i in range(b)]
    x0, noise = torch.randn(b, z, *lat_shape, device=dev), torch.randn(b, z, *lat_shape, device=dev)

    def base_step():
        with amp():
            ctx = text_features(text, text, caps, dev)
            loss = flow_matching_loss(dit, x0, ctx, torch.rand(b, device=dev), noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    out["base"] = _timed(base_step, device, clock=clock)
    opt = None
    text.eval().requires_grad_(False)
    for stage in ("sft_in", "dpo_consis"):
        out["sft" if stage == "sft_in" else "dpo"] = _timed(
            _lora_step(cfg, stage, text, captions, lat_shape, dev, amp), device, clock=clock)
    log("[sizing] seconds per step:", json.dumps({k: round(v, 5) for k, v in out.items()}))
    return out


def _lora_step(cfg, stage: str, text, captions: list[str], lat_shape, dev, amp):
    """One SFT (or, for a dpo_* stage, Flow-DPO) LoRA step on a fresh base-shaped DiT."""
    import torch

    from libragen_core.lora import add_lora, fold_adapters
    from training.common.losses import flow_matching_loss
    from training.flow_dpo import DPOBatch, flow_dpo_backward
    from training.pretrain.base import build_dit, text_features

    sc = getattr(cfg, stage)
    b, z = sc.optim.batch, cfg.vae.z_dim
    model = build_dit(cfg.base, z).to(dev)
    add_lora(model, rank=sc.lora.rank, adapter_name="sft")
    dpo = stage.startswith("dpo")
    if dpo:
        fold_adapters(model)
        add_lora(model, rank=sc.lora.rank, adapter_name="dpo")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    with torch.no_grad():
        ctx = text_features(text, text, [captions[i % len(captions)] for i in range(b)], dev)
    xw, xl, eps = (torch.randn(b, z, *lat_shape, device=dev) for _ in range(3))
    refs = torch.randn(b, z, 1, *lat_shape[1:], device=dev)
    sig = torch.rand(b, device=dev)

    def step():
        with amp():
            if dpo:
                flow_dpo_backward(model, DPOBatch(winner=xw, loser=xl, context=ctx, refs=refs), eps, sig, beta=500.0)
            else:
                flow_matching_loss(model, xw, ctx, sig, eps, refs=refs).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def size(cfg, timings: dict, minutes: float) -> tuple[dict, dict]:
    """(config layer with every stage's steps and intervals, the plan as data)."""
    train_s = 60.0 * minutes * TRAIN_FRACTION
    layer: dict = {}
    plan = {}

    def intervals(optim, steps: int, share_s: float, validations: int = 2) -> dict:
        return {"steps": steps, "warmup": min(optim.warmup, max(1, steps // 10)),
                "checkpoint_every": max(1, steps // 4), "log_every": max(1, min(optim.log_every, steps // 20)),
                "validate_every": max(1, steps // validations), "max_minutes": round(GUARD * share_s / 60.0, 3)}

    # VAE: image and video steps in the config's proportion
    vc = cfg.vae
    share = STAGE_SHARES["vae"] * train_s
    img_frac = vc.image_steps / vc.optim.steps if vc.optim.steps else 0.0
    # a step takes its compute or the rendering of its clips, whichever is longer (rendered ahead)
    rate = timings.get("render_clips_per_s", float("inf"))
    per = (img_frac * max(timings["vae_image"], vc.image_batch / rate)
           + (1 - img_frac) * max(timings["vae_video"], vc.optim.batch / rate))
    steps = max(8, int(EFFICIENCY * share / per))
    layer["vae"] = {"image_steps": int(round(img_frac * steps)), "optim": intervals(vc.optim, steps, share)}
    plan["vae"] = {"seconds": share, "steps": steps, "image_steps": layer["vae"]["image_steps"],
                   "render_bound": per > img_frac * timings["vae_image"] + (1 - img_frac) * timings["vae_video"]}

    bc = cfg.base
    share = STAGE_SHARES["base"] * train_s
    steps = max(8, int(EFFICIENCY * share / timings["base"]))
    ends = [p.until_step / bc.optim.steps for p in bc.phases]
    until = [max(i + 1, int(round(f * steps))) for i, f in enumerate(ends)]
    until[-1] = steps
    phases = []
    for p, u in zip(bc.phases, until):
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(p.data).items()}
        phases.append({"until_step": u, "clips": p.clips, "data": d})
    layer["base"] = {"optim": intervals(bc.optim, steps, share),
                     "probe": {"every": max(1, steps // 12) if bc.probe.every else 0},
                     "phases": phases}
    plan["base"] = {"seconds": share, "steps": steps, "phase_ends": until, "samples": steps * bc.optim.batch}

    for stage in TRAINING[2:]:
        sc = getattr(cfg, stage)
        share = STAGE_SHARES[stage] * train_s
        t = timings["dpo" if stage.startswith("dpo") else "sft"]
        # at most LORA_CAP x the configured steps: a LoRA on a fixed cache of clips or pairs only
        # overfits beyond that, and the time left goes to the Wan-shape measurements
        steps = max(4, min(LORA_CAP * sc.optim.steps, int(EFFICIENCY * share / t)))
        layer[stage] = {"optim": intervals(sc.optim, steps, share, validations=1)}
        if hasattr(sc, "probe"):
            layer[stage]["probe"] = {"every": max(1, steps // 4) if sc.probe.every else 0}
        plan[stage] = {"seconds": share, "steps": steps}
    return layer, plan


# what each timing's batch is, as config keys (the estimate scales a small CPU batch up to them)
BATCH_KEYS = {"vae_image": "vae.image_batch", "vae_video": "vae.optim.batch", "base": "base.optim.batch",
              "sft": "sft_in.optim.batch", "dpo": "dpo_consis.optim.batch"}


def estimate(layers: list[str], factor: float, minutes: float, log: Log) -> dict:
    """The GPU run's expected figures from this CPU: each stage's step timed in CPU seconds
    (process time, one thread) at a small batch, scaled linearly to the config's batch, divided by
    `factor` (the GPU's speed over one core of this CPU on these shapes)."""
    import torch

    from training.post_common import load_layered

    torch.set_num_threads(1)
    cfg = load_layered(layers)
    small_batch = {"vae_image": 4, "vae_video": 1, "base": 8, "sft": 4, "dpo": 2}
    small = load_layered(layers, ["run.device=cpu", "run.render_workers=0"]
                         + [f"{BATCH_KEYS[k]}={v}" for k, v in small_batch.items()]
                         + [f"sft_in.clips={small_batch['sft']}", f"dpo_consis.pairs={small_batch['dpo']}"])
    cpu = calibrate(small, "cpu", log, clock=time.process_time)

    def batch_of(key: str) -> int:
        section, *rest = BATCH_KEYS[key].split(".")
        node = getattr(cfg, section)
        for r in rest:
            node = getattr(node, r)
        return node

    per_step = {k: cpu[k] * batch_of(k) / small_batch[k] for k in cpu if k in small_batch}
    gpu = {k: v / factor for k, v in per_step.items()}
    # rendering stays on the CPU: this machine's one-core rate times the GPU machine's render workers
    gpu["render_clips_per_s"] = cpu["render_clips_per_s"] * max(1, cfg.run.render_workers)
    configured = {
        "vae": vae_seconds(cfg, gpu), "base": cfg.base.optim.steps * gpu["base"],
        **{s: getattr(cfg, s).optim.steps * gpu["dpo" if s.startswith("dpo") else "sft"] for s in TRAINING[2:]}}
    _, plan = size(cfg, gpu, minutes)
    return {"factor": factor, "cpu_seconds_per_step_at_config_batch": per_step, "gpu_seconds_per_step": gpu,
            "configured_steps_gpu_seconds": configured, "plan_for_minutes": plan, "minutes": minutes}


def vae_seconds(cfg, t: dict) -> float:
    vc = cfg.vae
    rate = t.get("render_clips_per_s", float("inf"))
    return (vc.image_steps * max(t["vae_image"], vc.image_batch / rate)
            + (vc.optim.steps - vc.image_steps) * max(t["vae_video"], vc.optim.batch / rate))


# ---------------------------------------------------------------- 3. the chain

def stage_step(run: Path, stage: str) -> int:
    from training.common.checkpoint import latest_checkpoint

    ck = latest_checkpoint(run / stage / "checkpoints")
    return int(ck.name.split("-")[1]) if ck is not None else 0


def run_chain(layers: list[str], sized: Path, run: Path, deadline: float, log: Log) -> bool:
    """The pipeline over the layers; a stage stopped by its guard is finished at the step it
    reached. Returns True when the final model folder was written."""
    import tomllib

    from training.common.config import to_toml
    from training.pipeline import STAGES

    for _ in range(len(TRAINING) + 1):
        left = deadline - time.time()
        if left < 20:
            log(f"[chain] {left:.0f} s left before the deadline; stopping here")
            return False
        cmd = [sys.executable, "-m", "training.pipeline"] + [a for f in [*layers, str(sized)] for a in ("--config", f)]
        log("[chain]", " ".join(cmd))
        with open(run / "chain.log", "a", encoding="utf-8") as f:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
            try:
                for line in proc.stdout:
                    f.write(line)
                    if "\r" not in line and line.strip():
                        log("  " + line.rstrip())
                    if time.time() > deadline + 30:
                        proc.kill()
                        log("[chain] past the chain's deadline: stopped")
                        return False
                proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
        state = json.loads((run / "pipeline.json").read_text()) if (run / "pipeline.json").is_file() else {"done": []}
        if "final" in state["done"]:
            return True
        if proc.returncode != 0:
            log(f"[chain] training.pipeline exited with {proc.returncode}; see chain.log")
            return False
        stopped = next((s for s in STAGES if s not in state["done"] and s in TRAINING), None)
        if stopped is None:
            return False
        reached = stage_step(run, stopped)
        layer = tomllib.loads(sized.read_text())
        optim = layer.setdefault(stopped, {}).setdefault("optim", {})
        log(f"[chain] {stopped} stopped by its guard at step {reached} of {optim.get('steps')}: finishing it there")
        optim["steps"] = max(1, reached)
        if stopped == "vae":
            layer["vae"]["image_steps"] = min(layer["vae"].get("image_steps", 0), optim["steps"])
        if stopped == "base":
            for p in layer["base"]["phases"]:
                p["until_step"] = min(p["until_step"], optim["steps"])
            # phase ends must increase: drop the phases the guard cut off
            keep, last = [], 0
            for p in layer["base"]["phases"]:
                if p["until_step"] > last:
                    keep.append(p)
                    last = p["until_step"]
            layer["base"]["phases"] = keep
        sized.write_text(to_toml(layer))
    return False


# ---------------------------------------------------------------- 4. outputs

def pack(run: Path, out: Path, final_ok: bool, log: Log) -> dict:
    """model.tar.partNN + logs.tar.gz in out; returns what went where."""
    model_files = []
    final = run / "final"
    if final_ok and final.is_dir():
        model_files += [(p, f"final/{p.name}") for p in sorted(final.iterdir()) if p.is_file()]
        lora = run / "final.lora.safetensors"
        if lora.is_file():
            model_files.append((lora, "final.lora.safetensors"))
    base = run / "model"
    if base.is_dir():
        names = [p for p in sorted(base.iterdir()) if p.is_file()]
        # without a final folder the base model goes whole; beside it only its DiT (the rest is the same)
        model_files += [(p, f"base/{p.name}") for p in names if not final_ok or p.name == "dit.safetensors"]
    budget, chosen, left_out = MAX_TOTAL - 4 * 2**20, [], []
    for p, arc in model_files:
        if p.stat().st_size + 4096 <= budget:
            chosen.append((p, arc))
            budget -= p.stat().st_size + 4096
        else:
            left_out.append(arc)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p, arc in chosen:
            tar.add(p, arcname=arc)
    data = buf.getvalue() if chosen else b""
    parts = []
    for i in range(0, len(data), PART):
        name = f"model.tar.part{i // PART:02d}"
        (out / name).write_bytes(data[i:i + PART])
        parts.append(name)
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for p in sorted(run.rglob("*")):
            rel = p.relative_to(run)
            if not p.is_file() or "checkpoints" in rel.parts or "cache" in rel.parts or "pairs" in rel.parts:
                continue
            if p.suffix in (".jsonl", ".json", ".toml", ".log", ".md") or (p.suffix == ".png" and _last_sheet(p)):
                tar.add(p, arcname=str(rel))
    log(f"[pack] {len(chosen)} model files in {len(parts)} part(s) ({len(data) / 2**20:.1f} MiB)"
        + (f"; left out (size): {left_out}" if left_out else "") + "; unpack: cat model.tar.part* | tar x")
    return {"model_parts": parts, "model_files": [a for _, a in chosen], "left_out": left_out}


def _last_sheet(p: Path) -> bool:
    sheets = sorted(p.parent.glob(p.stem.rsplit("-", 1)[0] + "-*.png"))
    return bool(sheets) and sheets[-1] == p


def summarize(run: Path) -> dict:
    from training.common.logs import read_metrics

    out = {}
    for stage in TRAINING:
        m = read_metrics(run / stage / "metrics.jsonl")
        if not m:
            continue
        rows = [m[s] for s in sorted(m)]
        last = {k: v for r in rows for k, v in r.items() if k.startswith(("val/", "probe/"))}
        sps = [r["samples_per_s"] for r in rows if "samples_per_s" in r]
        out[stage] = {"last_step": max(m), "loss": next((r["loss"] for r in reversed(rows) if "loss" in r), None),
                      "samples_per_s": sorted(sps)[len(sps) // 2] if sps else None, "last_values": last,
                      "probe_curve": {s: {k: m[s][k] for k in PROBE_KEYS if k in m[s]}
                                      for s in sorted(m) if "probe/dir_gap" in m[s]}}
    return out


# ---------------------------------------------------------------- 5. benchmarks

def benchmarks(plan, device: str, dtype: str, out: Path, deadline: float, log: Log) -> list[dict]:
    import tempfile

    results = []
    tmp = Path(tempfile.mkdtemp(prefix="wan-shapes-"))
    for preset, what, latent in plan:
        left = deadline - time.time()
        entry = {"preset": preset, "what": what, "latent": latent}
        if left < 15:
            entry["skipped"] = f"no time left ({left:.0f} s before the deadline)"
            results.append(entry)
            continue
        js = tmp / f"{preset}-{what}.json"
        cmd = [sys.executable, str(ROOT / "benchmarks" / "wan_shapes.py"), "--preset", preset, "--what", what,
               "--latent", latent, "--device", device, "--dtype", dtype, "--json", str(js)]
        log("[bench]", " ".join(cmd[1:]))
        t = time.time()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=left - 5)
        except subprocess.TimeoutExpired:
            entry["skipped"] = f"timed out after {time.time() - t:.0f} s (the time left)"
            results.append(entry)
            log(f"[bench] {preset} {what}: timed out")
            continue
        if proc.returncode != 0 or not js.is_file():
            entry["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            log(f"[bench] {preset} {what}: failed: {entry['error']}")
        else:
            entry.update(json.loads(js.read_text()))
            entry["seconds"] = round(time.time() - t, 1)
            log(f"[bench] {preset} {what}:", json.dumps({k: entry.get(k) for k in (what,)}))
        results.append(entry)
    return results


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path, help="folder for what comes back ($OUT on the device machine)")
    p.add_argument("--minutes", type=float, default=7.0, help="the chain's time budget after the sizing (default 7)")
    p.add_argument("--deadline", type=float, default=9.5,
                   help="minutes from start after which nothing new starts (default 9.5; run it with timeout_s 600)")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--layer", action="append", default=[], help="another config layer after the GPU one (repeatable)")
    p.add_argument("--run", type=Path, help="run folder (default: the config's run.out)")
    p.add_argument("--only", default="all", choices=["all", "chain", "bench"])
    p.add_argument("--estimate", type=float, metavar="FACTOR",
                   help="no run: time each stage's step on this CPU and print the GPU's expected times with "
                        "the GPU FACTOR times faster than one core (docs/training.md, 'The GPU run')")
    args = p.parse_args(argv)
    start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "run.log")
    if args.estimate:
        layers = [str(ROOT / f) for f in BASE_LAYERS] + [str(Path(f).resolve()) for f in args.layer]
        est = estimate(layers, args.estimate, args.minutes, log)
        (args.out / "estimate.json").write_text(json.dumps(est, indent=1))
        log("[estimate]", json.dumps(est, indent=1))
        return 0
    env = environment(args.device, log)
    device = env["device"]
    summary: dict = {"env": env, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))}

    from training.common.config import to_toml
    from training.post_common import load_layered

    layers = [str(ROOT / f) for f in BASE_LAYERS] + [str(Path(f).resolve()) for f in args.layer]
    overrides = [f"run.device={device}"] + ([f"run.out={args.run}"] if args.run else [])
    cfg = load_layered(layers, overrides)
    run = Path(cfg.run.out) if Path(cfg.run.out).is_absolute() else ROOT / cfg.run.out
    run.mkdir(parents=True, exist_ok=True)
    device_layer = run / "gpu-device.toml"
    device_layer.write_text(to_toml({"run": {"device": device, "out": str(run)}}))
    layers.append(str(device_layer))
    import torch

    if cfg.run.threads > 0:  # as the stages set it (two spinning OpenMP threads on a busy CPU ran 10x slower)
        torch.set_num_threads(cfg.run.threads)
    if args.only in ("all", "chain"):
        sized = run / "gpu-sizing.toml"
        if not sized.is_file():  # a rerun keeps the first run's sizes, so its checkpoints still fit
            timings = calibrate(cfg, device, log)
            layer, plan = size(cfg, timings, args.minutes)
            sized.write_text(to_toml(layer))
            (run / "gpu-sizing.json").write_text(json.dumps({"seconds_per_step": timings, "plan": plan,
                                                             "minutes": args.minutes}, indent=1))
        summary["sizing"] = json.loads((run / "gpu-sizing.json").read_text())
        log("[sizing] plan:", json.dumps(summary["sizing"]["plan"]))
        t = time.time()
        # the sizing aims at --minutes; a slower machine runs on to the deadline (less a minute to pack):
        # a stage its guard stops is finished where it stopped, so the chain still reaches the final folder
        final_ok = run_chain(layers, sized, run, start + 60 * args.deadline - 60, log)
        summary["chain"] = {"final_written": final_ok, "minutes": round((time.time() - t) / 60, 2),
                            "stages": summarize(run)}
        summary["outputs"] = pack(run, args.out, final_ok, log)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
        log(f"[chain] {'final model written' if final_ok else 'NO final model'} after "
            f"{summary['chain']['minutes']} min")
    if args.only in ("all", "bench"):
        plan = GPU_BENCH if device == "cuda" else CPU_BENCH
        results = benchmarks(plan, device, "bf16" if device == "cuda" else "fp32", args.out,
                             start + 60 * args.deadline, log)
        (args.out / "bench.json").write_text(json.dumps(results, indent=1))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    log(f"[done] {(time.time() - start) / 60:.2f} min; files in {args.out}: "
        f"{', '.join(sorted(p.name for p in args.out.iterdir()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
