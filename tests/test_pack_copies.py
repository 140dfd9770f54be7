"""Which libragen_core the pack runs on, loaded the way ComfyUI loads a custom-node folder
(spec_from_file_location on its __init__.py), in fresh processes."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LOAD = r"""
import importlib.util, sys
def load(folder, name):
    spec = importlib.util.spec_from_file_location(name, folder + "/__init__.py", submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
"""


def _copy(dst: Path) -> Path:
    dst.mkdir()
    for part in ("__init__.py", "nodes", "libragen_core"):
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dst / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / part)
    return dst


def _run(code: str, pythonpath: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LOAD + code], cwd="/", capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": pythonpath, "PATH": "/usr/bin:/bin"})


def test_the_pack_runs_its_own_core_when_another_is_importable(tmp_path):
    other = _copy(tmp_path / "other")  # e.g. a pip-installed release: first on the path
    out = _run(f"pack = load({str(REPO)!r}, 'pack_a')\n"
               "import libragen_core\n"
               "print(libragen_core.__path__[0])\n"
               "print(len(pack.NODE_CLASS_MAPPINGS))", str(other))
    assert out.returncode == 0, out.stderr[-3000:]
    path, n = out.stdout.split()
    assert Path(path) == REPO / "libragen_core" and int(n) >= 7


def test_a_second_copy_refuses_to_load_naming_both_folders(tmp_path):
    other = _copy(tmp_path / "other")
    out = _run(f"load({str(other)!r}, 'pack_a')\n"
               f"try:\n    load({str(REPO)!r}, 'pack_b')\n"
               "except ImportError as e:\n    print(type(e).__name__, e)\n"
               "import libragen_core\nprint(libragen_core.__path__[0])", "")
    assert out.returncode == 0, out.stderr[-3000:]
    first, core = out.stdout.strip().splitlines()
    assert first.startswith("DuplicatePackError LibraGen is installed twice"), first
    assert f"the pack in {REPO} was not loaded because the copy in {other} already is" in first
    assert Path(core) == other / "libragen_core"  # the first copy keeps its own core
