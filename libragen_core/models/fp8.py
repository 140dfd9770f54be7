"""fp8 weight storage for the DiT's transformer-block linears.

ComfyUI's `*_fp8_e4m3fn_scaled` files store each linear weight as float8_e4m3fn next to a
float32 `scale_weight` (the real weight is weight * scale_weight), plus a `scaled_fp8` marker
tensor. Loading such a file with the default dtype or dtype=torch.float8_e4m3fn keeps that
representation (half the memory of bf16); fp32/bf16/fp16 dequantize at load time instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
SCALE_SUFFIXES = (".scale_weight", ".scale_input")
MARKER_KEY = "scaled_fp8"


class Fp8Linear(nn.Linear):
    """A Linear whose weight is stored in fp8 with one fp32 scale; computes in the input's dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 fp8_dtype: torch.dtype = torch.float8_e4m3fn, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=fp8_dtype),
                                   requires_grad=False)
        self.register_buffer("scale_weight", torch.ones((), device=device, dtype=torch.float32))

    def reset_parameters(self) -> None:  # weights always come from a file
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.scale_weight.to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, w, b)


def weight_bytes(model: nn.Module) -> int:
    """Bytes held by a model's parameters and buffers; on the meta device nothing is allocated,
    so this sizes a 14B layout on any machine."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    w = weight.to(torch.float32)
    if scale is not None:
        w = w * scale.to(torch.float32)
    return w.to(dtype)


def quantize(weight: torch.Tensor, fp8_dtype: torch.dtype = torch.float8_e4m3fn) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor scaled fp8 (scale = amax / fp8 max), the layout ComfyUI's scaled files use."""
    w = weight.to(torch.float32)
    scale = (w.abs().max() / torch.finfo(fp8_dtype).max).clamp(min=1e-12)
    return (w / scale).to(fp8_dtype), scale


def use_fp8_block_linears(model: nn.Module, fp8_dtype: torch.dtype = torch.float8_e4m3fn) -> list[str]:
    """Swap every nn.Linear inside model.blocks for an (empty) Fp8Linear; returns their names.

    Meant for a model on the meta device right before load_state_dict(..., assign=True).
    """
    names = []
    for block_name, block in model.blocks.named_children():
        for name, mod in list(block.named_modules()):
            if type(mod) is nn.Linear:
                parent = block.get_submodule(name.rsplit(".", 1)[0]) if "." in name else block
                new = Fp8Linear(mod.in_features, mod.out_features, bias=mod.bias is not None,
                                fp8_dtype=fp8_dtype, device=mod.weight.device, dtype=mod.weight.dtype)
                setattr(parent, name.rsplit(".", 1)[-1], new)
                names.append(f"blocks.{block_name}.{name}")
    return names


@torch.no_grad()
def quantize_block_linears(model: nn.Module, fp8_dtype: torch.dtype = torch.float8_e4m3fn,
                           compute_dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Turn an in-memory model into the layout load_dit(..., dtype=fp8) gives: every block linear
    becomes an Fp8Linear (per-tensor scale), everything else moves to compute_dtype. In place."""
    # quantize from the weights as they are (before any cast), attach after moving the rest:
    # Module.to would otherwise turn the fp8 weights back into compute_dtype
    swaps = []
    for block in model.blocks:
        for name, mod in list(block.named_modules()):
            if type(mod) is not nn.Linear:
                continue
            new = Fp8Linear(mod.in_features, mod.out_features, bias=mod.bias is not None, fp8_dtype=fp8_dtype,
                            device=mod.weight.device, dtype=compute_dtype)
            q, scale = quantize(mod.weight, fp8_dtype)
            new.weight = nn.Parameter(q, requires_grad=False)
            new.scale_weight.copy_(scale)
            if mod.bias is not None:
                new.bias = nn.Parameter(mod.bias.detach().to(compute_dtype), requires_grad=mod.bias.requires_grad)
            parent = block.get_submodule(name.rsplit(".", 1)[0]) if "." in name else block
            swaps.append((parent, name.rsplit(".", 1)[-1], new))
    model.to(compute_dtype)
    for parent, name, new in swaps:
        setattr(parent, name, new)
    return model
