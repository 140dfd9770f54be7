"""Import the repo root as a package, the way ComfyUI imports a custom-node folder.

Shared by the node tests (`from tests.pack import load_pack`; pytest puts the repo root on
sys.path). The package is named `libragen_pack` so `from libragen_pack.nodes import ...` works.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "libragen_pack"


def load_pack():
    if PACK_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK_NAME, REPO / "__init__.py",
                                                      submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK_NAME]
