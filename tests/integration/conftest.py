"""Integration tests run against a real ComfyUI checkout and its own Python environment.

Set COMFYUI_DIR (the ComfyUI checkout) and COMFYUI_PYTHON (its interpreter), e.g. with
`eval "$(../shared/tools/comfyui-harness env DIR)"`; without them these tests skip and say why.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ComfyUI:
    dir: Path
    python: Path

    def run(self, script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run a Python snippet with ComfyUI's interpreter, ComfyUI importable and cwd at its checkout."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(self.dir), str(REPO)]))
        out = subprocess.run([str(self.python), "-c", script, *args], cwd=self.dir, env=env,
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise AssertionError(f"ComfyUI snippet failed ({out.returncode}):\n{out.stderr[-4000:]}")
        return out


@pytest.fixture(scope="session")
def comfyui() -> ComfyUI:
    d, py = os.environ.get("COMFYUI_DIR"), os.environ.get("COMFYUI_PYTHON")
    if not d or not py:
        pytest.skip("COMFYUI_DIR and COMFYUI_PYTHON are not set; build them with ../shared/tools/comfyui-harness")
    if not (Path(d) / "comfy").is_dir() or not Path(py).exists():
        pytest.skip(f"COMFYUI_DIR={d} is not a ComfyUI checkout or COMFYUI_PYTHON={py} does not exist")
    return ComfyUI(Path(d), Path(py))
