"""Text encoders behind one interface, and one loader that tells the files apart.

Two kinds exist: umT5-XXL for real Wan2.1 / Phantom-Wan files (text_umt5.py) and the small
word-level encoder of the embedded SpriteWorld model (text_small.py). Both give [B, L, text_dim]
features with L = max_length, real tokens first and zeros after, which is what the DiT's
text_embedding expects.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from ..errors import CheckpointError
from ..io.safetensors_file import read_header
from .text_small import (
    SmallTextConfig,
    SmallTextEncoder,
    WordTokenizer,
    is_small_text_encoder,
    load_small_text_encoder,
)
from .text_umt5 import UMT5TextEncoder, load_umt5, umt5_layout

__all__ = [
    "TextEncoder", "load_text_encoder", "UMT5TextEncoder", "SmallTextEncoder", "SmallTextConfig", "WordTokenizer",
]


@runtime_checkable
class TextEncoder(Protocol):
    text_dim: int
    max_length: int

    def encode(self, prompts: list[str], device=None) -> torch.Tensor:
        """[B, max_length, text_dim] float32: features of each prompt's real tokens, zeros after."""
        ...


_WHERE = ("ComfyUI keeps text encoders in ComfyUI/models/text_encoders/ (Wan2.1 uses umt5_xxl_fp16.safetensors or "
          "umt5_xxl_fp8_e4m3fn_scaled.safetensors)")


def load_text_encoder(path_or_name: str | os.PathLike, tokenizer: str | os.PathLike | None = None, device="cpu",
                      dtype: torch.dtype | None = None, max_length: int | None = None) -> TextEncoder:
    """Load a text encoder from a local .safetensors file; never downloads anything.

    tokenizer: umT5: a spiece.model, tokenizer.json or a folder holding one (default: the model
    embedded in ComfyUI's files, else one beside the weights); small encoder: its vocab JSON
    (default: <weights>.vocab.json beside the file).
    dtype: default is the stored dtype, except fp8 (dequantized to bf16) and fp16 on CPU (bf16).
    """
    path = Path(path_or_name)
    if not path.exists():
        raise CheckpointError(f"text encoder file not found: {path}. {_WHERE}; pass the path of the .safetensors file.")
    header, metadata = read_header(path)
    keys = set(header)
    if is_small_text_encoder(keys, metadata):
        return load_small_text_encoder(path, metadata, tokenizer=tokenizer, device=device, dtype=dtype)
    found = umt5_layout(keys)
    if found is not None:
        layout, prefix = found
        return load_umt5(path, header, metadata, layout, prefix, tokenizer=tokenizer, device=device, dtype=dtype,
                         max_length=max_length)
    raise CheckpointError(f"{path} is not a text encoder: it looks like {_describe(path, header)}. {_WHERE}.")


def _describe(path: Path, header: dict) -> str:
    """What a wrong file looks like, using the DiT loader's family detection when it applies."""
    try:
        from .loading import inspect_checkpoint

        info = inspect_checkpoint(path)
        if info.family not in ("unknown", "umt5", "t5"):
            return info.description
    except (ImportError, CheckpointError):
        pass
    keys = [k.removeprefix("model.diffusion_model.").removeprefix("diffusion_model.") for k in header]
    if "patch_embedding.weight" in keys or any(k.startswith("blocks.0.self_attn.") for k in keys):
        return "a Wan video DiT (the diffusion model, not its text encoder)"
    if any(k.startswith(("encoder.downsamples.", "decoder.upsamples.")) for k in keys):
        return "a Wan video VAE"
    if any(("lora_A" in k or "lora_down" in k) for k in keys):
        return "a LoRA"
    names = sorted(header)[:3]
    return f"a model LibraGen does not recognise (first keys: {names})" if names else "an empty file (no tensors)"
