"""A training run killed with SIGKILL mid-epoch and resumed ends bitwise equal to an uninterrupted one."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from libragen_core.io.safetensors_file import load_state_dict
from libragen_core.models.vae_checkpoint import save_vae
from libragen_core.models.wan_vae import VAEConfig, WanVAE
from tests.runs import sigkill_when

REPO = Path(__file__).resolve().parents[1]
STEPS = 12

CONFIG = """
[run]
out = "{out}"
threads = 1
seed = 3

[base]
vae = "{vae}"
encode_batch = 4
caption_dropout = 0.25
[base.dit]
dim = 64
ffn_dim = 128
num_heads = 2
num_layers = 1
[base.text]
text_dim = 32
num_layers = 1
num_heads = 2
[base.optim]
steps = {steps}
batch = 4
lr = 1e-3
warmup = 3
decay = "cosine"
ema_decay = 0.9
log_every = 1
checkpoint_every = 2
keep_checkpoints = 2
debug_step_delay = {delay}
[base.validation]
prompts = 1
steps = 1
[[base.phases]]
until_step = 5
clips = 12
[base.phases.data]
size = [32, 32]
frames = 5
motions = ["move_left", "move_right"]
[[base.phases]]
until_step = {steps}
clips = 10
[base.phases.data]
seed = 1
size = [32, 32]
frames = 5
"""


def _write_config(tmp: Path, name: str, vae: Path, delay: float) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(CONFIG.format(out=tmp / name, vae=vae, steps=STEPS, delay=delay), encoding="utf-8")
    return path


def _cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "training.pretrain", "--config", str(config), "--stages", "base"]


def _logged_steps(run: Path) -> list[int]:
    f = run / "base" / "metrics.jsonl"
    if not f.is_file():
        return []
    return [json.loads(line)["step"] for line in f.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path):
    torch.manual_seed(0)
    vae = save_vae(WanVAE(VAEConfig.small(4)), tmp_path / "vae.safetensors")
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    straight = _write_config(tmp_path, "straight", vae, 0.0)
    subprocess.run(_cmd(straight), cwd=REPO, env=env, check=True, capture_output=True, timeout=300)

    killed = _write_config(tmp_path, "killed", vae, 0.4)
    proc = subprocess.Popen(_cmd(killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # step 7 is mid-epoch in phase 2 (10 clips, batch 4: 2 steps per epoch, the 3rd batch would
    # wrap) and past a checkpoint at step 6; kill while it is somewhere between 7 and the end
    sigkill_when(proc, lambda: max(_logged_steps(tmp_path / "killed"), default=0) >= 7, "step 7", 240)
    ckpts = tmp_path / "killed" / "base" / "checkpoints"
    assert not (ckpts / f"step-{STEPS:08d}").exists(), "the run finished before the kill; the test proved nothing"
    assert proc.returncode == -signal.SIGKILL

    subprocess.run(_cmd(killed), cwd=REPO, env=env, check=True, capture_output=True, timeout=300)

    a = tmp_path / "straight" / "base" / "checkpoints" / f"step-{STEPS:08d}"
    b = ckpts / f"step-{STEPS:08d}"
    for name in ("model-dit", "model-text", "ema-dit", "ema-text", "optimizer"):
        sa, sb = load_state_dict(a / f"{name}.safetensors"), load_state_dict(b / f"{name}.safetensors")
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{name}:{k} differs after resume"
    sa = json.loads((a / "state.json").read_text())
    sb = json.loads((b / "state.json").read_text())
    assert sa["state"]["data"] == sb["state"]["data"]
    # the final exported weights are the same too
    for f in ("dit.safetensors", "text.safetensors"):
        da = load_state_dict(tmp_path / "straight" / "base" / f)
        db = load_state_dict(tmp_path / "killed" / "base" / f)
        assert all(torch.equal(da[k], db[k]) for k in da)
