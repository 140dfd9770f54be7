"""Named DiT configurations and a builder that accepts a name or a config."""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .wan_dit import WanDiT, WanDiTConfig

DIT_PRESETS: dict[str, WanDiTConfig] = {
    # Published Wan2.1 T2V sizes (config.json of the official releases).
    "wan2.1-t2v-1.3b": WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
    "wan2.1-t2v-14b": WanDiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
    # Random test model. head_dim 128 and text_dim 4096 keep it loadable by ComfyUI's own WanModel
    # (which assumes heads = dim // 128) so integration tests can compare against it.
    "tiny": WanDiTConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2),
}


def resolve_config(preset_or_config: str | WanDiTConfig) -> WanDiTConfig:
    if isinstance(preset_or_config, WanDiTConfig):
        return preset_or_config
    try:
        return DIT_PRESETS[preset_or_config]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown DiT preset {preset_or_config!r}; known presets: {', '.join(sorted(DIT_PRESETS))}"
        ) from None


def build_dit(preset_or_config: str | WanDiTConfig, device: str | torch.device = "cpu",
              dtype: torch.dtype | str | None = None) -> WanDiT:
    """Build a randomly initialised DiT. device="meta" allocates nothing (shape and key checks)."""
    from .fp8 import FP8_DTYPES
    from .loading import resolve_dtype

    dtype = resolve_dtype(dtype)
    if dtype in FP8_DTYPES:
        raise ConfigError("fp8 weights come from a file: build in bf16, or load_dit(path, dtype=torch.float8_e4m3fn)")
    config = resolve_config(preset_or_config)
    with torch.device(device):
        model = WanDiT(config)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model
