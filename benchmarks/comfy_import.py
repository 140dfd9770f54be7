"""Import ComfyUI inside a benchmark script (run with ComfyUI's python; COMFYUI_DIR or PYTHONPATH set)."""
from __future__ import annotations

import os
import sys


def import_comfy(device: str):
    """Put COMFYUI_DIR on sys.path, import ComfyUI's CLI args and pin it to the CPU when asked."""
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if comfy_dir and comfy_dir not in sys.path:
        sys.path.insert(0, comfy_dir)
    try:
        import comfy.cli_args
    except ImportError:
        sys.exit("cannot import ComfyUI: run with ComfyUI's python and COMFYUI_DIR (or PYTHONPATH) set")
    if device == "cpu":
        comfy.cli_args.args.cpu = True
    return comfy.cli_args.args
