"""LibraGen training entry points (run from the repo root: `python -m training.pretrain ...`).

Not installed with the package: pip installs `libragen_core` only, and a top-level module named
`training` must never shadow anything inside ComfyUI's environment.
"""
