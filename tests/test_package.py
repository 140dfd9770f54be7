import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_core_is_installed_not_shadowed_by_repo():
    spec = importlib.util.find_spec("libragen_core")
    assert spec is not None and spec.origin is not None
    assert Path(spec.origin).resolve().is_relative_to(ROOT / "libragen_core")


def test_generic_names_are_not_installed():
    # ComfyUI has its own top-level `nodes` module; installing ours would break the server.
    code = "import importlib.util as u; print(u.find_spec('nodes'), u.find_spec('training'))"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None None"


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "libragen_core", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "inspect" in out.stdout
