"""Files the project writes get the mode a plain open() would give them (0666 minus the umask) and
folders 0777 minus the umask, whichever writer made them: safetensors (whose own save replaces the
file it is given with a private 0600 one), LoRA files, training checkpoints, JSON, videos, PNGs.

Each umask runs in a fresh process: the project reads the umask once per process.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

WRITE_EVERYTHING = r"""
import json, os, stat, sys
from pathlib import Path
import numpy as np, torch
from torch import nn
from libragen_core.io.atomic import atomic_path, write_json
from libragen_core.io.safetensors_file import save_state_dict
from libragen_core.io.video import write_video
from libragen_core.lora import LoraFactors, LoraWeights, save_lora
from training.common.checkpoint import save_checkpoint

out = Path(sys.argv[1])
save_state_dict({"a": torch.zeros(3)}, out / "plain.safetensors")
save_lora(LoraWeights(factors={"blocks.0.self_attn.q": LoraFactors(torch.ones(2, 8), torch.ones(8, 2), 2.0)}),
          out / "lora.safetensors")
write_json(out / "data.json", {"k": 1})
write_video(out / "clip.mp4", np.zeros((5, 16, 16, 3), np.uint8), fps=8)
write_video(out / "clip.webp", np.zeros((5, 16, 16, 3), np.uint8), fps=8)
with atomic_path(out / "text.txt") as tmp:
    tmp.write_text("x")
model = nn.Linear(2, 2)
ck = save_checkpoint(out / "checkpoints", 3, modules={"m": model},
                     optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3))
modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in sorted(out.rglob("*"))}
print(json.dumps(modes))
"""


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_written_files_respect_the_umask(tmp_path, umask):
    script = f"import os; os.umask({umask:#o})\n" + WRITE_EVERYTHING
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    modes = json.loads(out.stdout.strip().splitlines()[-1])
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    expected = {"plain.safetensors", "lora.safetensors", "data.json", "clip.mp4", "clip.webp", "text.txt",
                "checkpoints/step-00000003/model-m.safetensors", "checkpoints/step-00000003/optimizer.safetensors",
                "checkpoints/step-00000003/rng.safetensors", "checkpoints/step-00000003/state.json"}
    assert expected <= set(modes), sorted(modes)
    wrong = {name: oct(mode) for name, mode in modes.items()
             if mode != (dir_mode if (tmp_path / name).is_dir() else file_mode)}
    assert not wrong, f"umask {umask:#o}: expected files {file_mode:#o} and folders {dir_mode:#o}; got {wrong}"
    assert not [p for p in tmp_path.rglob("*partial*")], "a temporary file was left behind"
