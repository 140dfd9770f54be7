"""Fold a LoRA into a model's weights (W += strength * dW) and undo it bit-exactly.

The fold is computed in fp32 (W.float() + strength * dW) and cast back once, so a bf16/fp16
model is rounded a single time. Undo never subtracts: it copies back the original tensors,
which is the only way to restore a low-precision weight exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import CheckpointError
from .weights import LoraWeights

_FP8 = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """Module name -> nn.Linear, seeing through peft wrappers (name of the wrapper, its base layer)."""
    out: dict[str, nn.Linear] = {}
    for name, mod in model.named_modules():
        base = mod.get_base_layer() if hasattr(mod, "get_base_layer") else mod
        if isinstance(base, nn.Linear) and not name.endswith(".base_layer") and ".lora_" not in name:
            out[_strip_peft_prefix(name)] = base
    return out


def _strip_peft_prefix(name: str) -> str:
    return name[len("base_model.model."):] if name.startswith("base_model.model.") else name


def check_lora_fits(lora: LoraWeights, layers: dict[str, nn.Linear] | nn.Module) -> dict[str, nn.Linear]:
    """Every LoRA layer must exist in the model with the same [out, in]; else a CheckpointError."""
    if isinstance(layers, nn.Module):
        layers = linear_layers(layers)
    check_lora_shapes(lora, {n: tuple(m.weight.shape) for n, m in layers.items()})
    return layers


def check_lora_shapes(lora: LoraWeights, shapes: dict[str, tuple[int, ...]]) -> None:
    """check_lora_fits against a model known by its weights' shapes (layer name -> [out, in])."""
    missing = [n for n in lora.layer_names() if n not in shapes]
    if missing:
        raise CheckpointError(
            f"the LoRA targets {len(missing)} layer(s) this model does not have, e.g. {', '.join(missing[:5])}; "
            "it was trained for a different model (or more blocks)"
        )
    bad = [f"{n}: LoRA {lora.shape(n)} vs model {tuple(shapes[n])}"
           for n in lora.layer_names() if tuple(shapes[n]) != lora.shape(n)]
    if bad:
        raise CheckpointError(
            f"the LoRA does not fit this model's layer shapes ({len(bad)} layer(s)), e.g. {'; '.join(bad[:3])}. "
            "It was trained for a model of another size."
        )


@dataclass
class WeightBackup:
    """Original weights of the layers a patch touched; `restore()` puts them back exactly."""

    layers: dict[str, nn.Linear] = field(default_factory=dict)
    originals: dict[str, torch.Tensor] = field(default_factory=dict)

    def restore(self) -> None:
        with torch.no_grad():
            for name, saved in self.originals.items():
                self.layers[name].weight.copy_(saved)
        self.originals.clear()

    def __len__(self) -> int:
        return len(self.originals)


def merge_lora_into(model: nn.Module, lora: LoraWeights, strength: float = 1.0,
                    backup: WeightBackup | None = None) -> WeightBackup:
    """W += strength * dW for every layer of `lora` (fp32 math, one cast back). Returns the undo.

    Passing an existing `backup` accumulates several patches into one undo; a layer already in it
    keeps its first (truly original) copy.
    """
    layers = check_lora_fits(lora, model)
    backup = backup if backup is not None else WeightBackup()
    with torch.no_grad():
        for name in lora.layer_names():
            w = layers[name].weight
            if name not in backup.originals:
                backup.originals[name] = w.detach().clone()
                backup.layers[name] = layers[name]
            if strength == 0:
                continue
            dw = lora.delta(name, torch.float32).to(w.device)
            scale = getattr(layers[name], "scale_weight", None)
            if w.dtype in _FP8 and scale is not None:
                # scaled fp8 (real weight = w * scale): patch the real weight, requantize with the
                # same scale (ComfyUI does the same), clamped to the fp8 range
                s = scale.float().to(w.device)
                q = ((w.float() * s + strength * dw) / s).clamp(-torch.finfo(w.dtype).max, torch.finfo(w.dtype).max)
                w.copy_(q.to(w.dtype))
            else:
                w.copy_((w.float() + strength * dw).to(w.dtype))
    return backup


def unmerge_lora(backup: WeightBackup) -> None:
    """Undo merge_lora_into exactly (same as backup.restore())."""
    backup.restore()


def merged_state_dict(state_dict: dict[str, torch.Tensor], lora: LoraWeights, strength: float = 1.0,
                      prefix: str = "") -> dict[str, torch.Tensor]:
    """A copy of a plain state dict with the LoRA folded in (fp32 math, original dtypes kept)."""
    out = dict(state_dict)
    missing = [n for n in lora.layer_names() if f"{prefix}{n}.weight" not in state_dict]
    if missing:
        raise CheckpointError(f"the state dict has no weight for LoRA layer(s) {', '.join(missing[:5])}")
    for name in lora.layer_names():
        key = f"{prefix}{name}.weight"
        w = state_dict[key]
        if tuple(w.shape) != lora.shape(name):
            raise CheckpointError(f"{key} has shape {tuple(w.shape)}, the LoRA expects {lora.shape(name)}")
        out[key] = (w.float() + strength * lora.delta(name)).to(w.dtype)
    return out
