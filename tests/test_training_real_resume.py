"""A real-data SFT run (tiny Wan-layout base files, mp4 clips) killed with SIGKILL mid-epoch and
resumed ends with the same LoRA, bit for bit, as an uninterrupted run; its checkpoints hold the
LoRA, the optimizer and the RNG state only."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from libragen_core.io.safetensors_file import load_state_dict, read_header
from tests.real_data import write_real_dataset
from tests.runs import sigkill_when
from training.tiny_base import write_tiny_base

REPO = Path(__file__).resolve().parents[1]
STEPS = 8


def _cmd(tmp: Path, name: str, base: dict, manifest: Path, delay: float) -> list[str]:
    sets = {"data.manifest": manifest, "run.out": tmp / name, "run.threads": 1, "data.heldout": 0,
            "model.dit": base["dit"], "model.vae": base["vae"], "model.text_encoder": base["text_encoder"],
            "model.tiny": "false", "sft_in.optim.steps": STEPS, "sft_in.optim.checkpoint_every": 2,
            "sft_in.optim.validate_every": 0, "sft_in.optim.debug_step_delay": delay, "sft_in.validation.clips": 0}
    args = [sys.executable, "-m", "training.sft", "--config", "training/configs/cpu-smoke.toml", "--stage", "sft_in"]
    for k, v in sets.items():
        args += ["--set", f"{k}={json.dumps(str(v)) if isinstance(v, Path) else v}"]
    return args


def _logged_steps(run: Path) -> list[int]:
    f = run / "sft_in" / "metrics.jsonl"
    if not f.is_file():
        return []
    return [json.loads(line)["step"] for line in f.read_text().splitlines() if line.strip() and '"loss"' in line]


@pytest.mark.slow
def test_real_data_sft_killed_mid_epoch_resumes_to_the_same_lora(tmp_path):
    base = write_tiny_base(tmp_path / "base")
    manifest = write_real_dataset(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(_cmd(tmp_path, "straight", base, manifest, 0.0), cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=600)

    proc = subprocess.Popen(_cmd(tmp_path, "killed", base, manifest, 1.0), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # 3 usable in-pair clips in 2 buckets at batch 1: an epoch is 3 steps. Step 5 is mid-epoch
    # and past the checkpoint of step 4; kill somewhere between it and the end
    sigkill_when(proc, lambda: max(_logged_steps(tmp_path / "killed"), default=0) >= 5, "step 5", 480)
    ckpts = tmp_path / "killed" / "sft_in" / "checkpoints"
    assert not (tmp_path / "killed" / "sft_in" / "lora.safetensors").exists(), "finished before the kill"
    assert proc.returncode == -signal.SIGKILL
    state = json.loads(sorted(ckpts.glob("step-*/state.json"))[-1].read_text())
    assert state["state"]["data"]["position"] not in (0, None), "the newest checkpoint should sit mid-epoch"

    done = subprocess.run(_cmd(tmp_path, "killed", base, manifest, 0.0), cwd=REPO, env=env, check=True,
                          capture_output=True, text=True, timeout=600)
    assert "resumed from" in done.stdout + done.stderr

    a = load_state_dict(tmp_path / "straight" / "sft_in" / "lora.safetensors")
    b = load_state_dict(tmp_path / "killed" / "sft_in" / "lora.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    assert any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_B" in k)  # it trained
    # a checkpoint is the LoRA + optimizer + RNG: no base weight in it, a fraction of the DiT's size
    last = ckpts / f"step-{STEPS:08d}"
    header, _ = read_header(last / "model-lora.safetensors")
    assert header and all(".lora_A." in k or ".lora_B." in k for k in header)
    size = sum(p.stat().st_size for p in last.iterdir())
    assert size < base["dit"].stat().st_size / 4
