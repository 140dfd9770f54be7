"""LibraGen core: Wan2.1-layout subject-to-video generation in plain PyTorch (no ComfyUI imports)."""
__version__ = "0.1.0"
