"""scripts/gpu_chain.py (issue 21): the GPU run's script, checked on the CPU before any GPU time is spent."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import gpu_chain  # noqa: E402

from training.common.config import to_toml  # noqa: E402
from training.post_common import load_layered  # noqa: E402

GPU_LAYERS = [str(ROOT / f) for f in gpu_chain.BASE_LAYERS]
TINY = str(ROOT / "training" / "configs" / "spriteworld-gpu-tiny.toml")


def test_sizing_scales_every_stage_with_its_measured_step_time(tmp_path):
    cfg = load_layered(GPU_LAYERS)
    timings = {"vae_image": 0.004, "vae_video": 0.02, "base": 0.02, "sft": 0.01, "dpo": 0.04}
    layer, plan = gpu_chain.size(cfg, timings, minutes=7.0)
    train_s = 7 * 60 * gpu_chain.TRAIN_FRACTION
    base_s = gpu_chain.STAGE_SHARES["base"] * train_s
    assert plan["base"]["steps"] == int(gpu_chain.EFFICIENCY * base_s / 0.02)
    assert layer["base"]["optim"]["max_minutes"] == pytest.approx(gpu_chain.GUARD * base_s / 60, abs=1e-3)
    # the curriculum keeps its proportions (the chain config ends its phases at 1/2, 5/6 and all of the steps)
    ends = plan["base"]["phase_ends"]
    assert ends[-1] == plan["base"]["steps"] and ends[0] == round(ends[-1] / 2)
    assert plan["dpo_consis"]["steps"] * 4 == pytest.approx(plan["sft_in"]["steps"], rel=0.02)
    # the VAE keeps the config's image / video split
    assert layer["vae"]["image_steps"] == round(plan["vae"]["steps"] * cfg.vae.image_steps / cfg.vae.optim.steps)
    # the layer is a valid config on top of the others, and it is what the chain then runs
    (tmp_path / "sized.toml").write_text(to_toml(layer))
    sized = load_layered([*GPU_LAYERS, str(tmp_path / "sized.toml")])
    assert sized.base.optim.steps == plan["base"]["steps"] and [p.until_step for p in sized.base.phases] == ends
    assert [p.clips for p in sized.base.phases] == [p.clips for p in cfg.base.phases]
    assert sized.base.phases[0].data == cfg.base.phases[0].data
    assert sized.sft_cross.optim.steps == plan["sft_cross"]["steps"] and sized.base.probe.every > 0
    # slower steps, fewer steps; the floor keeps a stage alive on a slow machine
    slow, _ = gpu_chain.size(cfg, {k: 10 * v for k, v in timings.items()}, minutes=7.0)
    assert slow["base"]["optim"]["steps"] < layer["base"]["optim"]["steps"]
    fast, _ = gpu_chain.size(cfg, {k: v / 100 for k, v in timings.items()}, minutes=7.0)
    assert fast["sft_in"]["optim"]["steps"] == gpu_chain.LORA_CAP * cfg.sft_in.optim.steps  # LoRAs are capped
    assert fast["base"]["optim"]["steps"] == 100 * plan["base"]["steps"] or \
        abs(fast["base"]["optim"]["steps"] - 100 * plan["base"]["steps"]) <= 100  # the base is not
    # the VAE renders its clips as it goes: a slow renderer, not the device, then sets its steps
    bound, bound_plan = gpu_chain.size(cfg, {**timings, "render_clips_per_s": 100.0}, minutes=7.0)
    assert bound_plan["vae"]["render_bound"] and not plan["vae"]["render_bound"]
    assert bound["vae"]["optim"]["steps"] < layer["vae"]["optim"]["steps"]
    floor, _ = gpu_chain.size(cfg, {k: 1e3 for k in timings}, minutes=0.1)
    assert floor["base"]["optim"]["steps"] == 8 and floor["sft_in"]["optim"]["steps"] == 4


def test_the_model_is_packed_in_parts_below_the_return_limits(tmp_path):
    run, out = tmp_path / "run", tmp_path / "out"
    (run / "final").mkdir(parents=True)
    (run / "model").mkdir()
    out.mkdir()
    big = bytes(range(256)) * (20 * 2**20 // 256)  # a 20 MiB DiT file
    (run / "final" / "dit.safetensors").write_bytes(big)
    (run / "final" / "model.json").write_text("{}")
    (run / "model" / "dit.safetensors").write_bytes(big[::-1])
    (run / "model" / "vae.safetensors").write_bytes(b"v" * 1000)
    (run / "base").mkdir()
    (run / "base" / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    log = gpu_chain.Log(out / "run.log")
    packed = gpu_chain.pack(run, out, True, log)
    assert packed["model_files"] == ["final/dit.safetensors", "final/model.json", "base/dit.safetensors"]
    assert all((out / p).stat().st_size <= gpu_chain.PART for p in packed["model_parts"])
    data = b"".join((out / p).read_bytes() for p in packed["model_parts"])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.extractfile("final/dit.safetensors").read() == big
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert "base/metrics.jsonl" in tar.getnames()
    # over the 60 MiB budget the base DiT is left out, and said so
    (run / "final" / "vae.safetensors").write_bytes(b"x" * (25 * 2**20))
    again = gpu_chain.pack(run, tmp_path, True, log)
    assert again["left_out"] == ["base/dit.safetensors"]


@pytest.mark.slow
def test_the_script_trains_the_whole_chain_on_the_cpu_with_the_tiny_layer(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "scripts" / "gpu_chain.py"), "--out", str(out), "--device", "cpu",
           "--layer", TINY, "--run", str(tmp_path / "run"), "--minutes", "0.5", "--deadline", "30"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / f).stat().st_size < 16 * 2**20 for f in files), files
    assert {"run.log", "summary.json", "bench.json", "logs.tar.gz", "model.tar.part00"} <= set(files)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["chain"]["final_written"], proc.stdout[-3000:]
    assert set(summary["sizing"]["plan"]) == set(gpu_chain.TRAINING)
    assert summary["chain"]["stages"]["base"]["probe_curve"], "the base stage logs the direction probe"
    # the parts are one tar of a model folder that loads and generates like the embedded model
    data = b"".join((out / p).read_bytes() for p in summary["outputs"]["model_parts"])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    from libragen_core.models.bundle import load_model_folder
    from libragen_core.pipeline import generate

    bundle = load_model_folder(tmp_path / "unpacked" / "final")
    video = generate(bundle, [], "Video: Ref 1[the red square] moves to the left on a plain white background.",
                     seed=0, steps=2)
    assert video.frames.shape == (5, 32, 32, 3)
    bench = {(b["preset"], b["what"]): b for b in json.loads((out / "bench.json").read_text())}
    forward = bench[("tiny", "forward")]
    assert forward["forward"]["ours_ms"] > 0 or "skipped" in forward
