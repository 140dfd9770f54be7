"""In-memory LoRA: per-layer low-rank factors and/or full weight deltas, keyed by module name.

Layer names are the DiT's own module names (= Wan2.1 checkpoint keys without ".weight"), e.g.
"blocks.0.self_attn.q". Files use other spellings; formats.py translates at the boundary.

Convention (the one peft, ComfyUI and kohya share): for a Linear with weight W [out, in],
    dW = (alpha / rank) * up @ down,   down = lora_A [rank, in],  up = lora_B [out, rank].
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ..errors import CheckpointError


@dataclass
class LoraFactors:
    down: torch.Tensor  # lora_A / lora_down: [rank, in]
    up: torch.Tensor  # lora_B / lora_up: [out, rank]
    alpha: float

    def __post_init__(self):
        if self.down.ndim != 2 or self.up.ndim != 2:
            raise CheckpointError(
                f"LoRA factors must be 2-D (Linear layers only); got down {tuple(self.down.shape)}, "
                f"up {tuple(self.up.shape)}. Convolution LoRAs are not supported."
            )
        if self.down.shape[0] != self.up.shape[1]:
            raise CheckpointError(
                f"LoRA rank mismatch: down (lora_A) has {self.down.shape[0]} rows but up (lora_B) has "
                f"{self.up.shape[1]} columns; the two factors of a layer must share one rank"
            )
        self.alpha = float(self.alpha)

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the weight this LoRA patches: (out, in)."""
        return int(self.up.shape[0]), int(self.down.shape[1])

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """dW = scale * up @ down, computed in fp32 (or `dtype` if wider)."""
        work = torch.float64 if dtype == torch.float64 else torch.float32
        return (self.up.to(work) @ self.down.to(work)).mul_(self.scale).to(dtype)


@dataclass
class LoraWeights:
    """A LoRA for one model: low-rank `factors` and full-matrix `diffs` (dW) per layer name.

    A layer is in at most one of the two dicts. `diffs` hold merges that have no exact low-rank
    form (TIES, DARE without SVD); ComfyUI loads them as `.diff` patches.
    """

    factors: dict[str, LoraFactors] = field(default_factory=dict)
    diffs: dict[str, torch.Tensor] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        both = sorted(set(self.factors) & set(self.diffs))
        if both:
            raise CheckpointError(f"layers given both as factors and as full diffs: {both[:5]}")
        for name, d in self.diffs.items():
            if d.ndim != 2:
                raise CheckpointError(f"full diff for {name} must be 2-D [out, in], got {tuple(d.shape)}")

    def layer_names(self) -> list[str]:
        return sorted(set(self.factors) | set(self.diffs), key=natural_key)

    def __len__(self) -> int:
        return len(self.factors) + len(self.diffs)

    def __contains__(self, name: str) -> bool:
        return name in self.factors or name in self.diffs

    def shape(self, name: str) -> tuple[int, int]:
        if name in self.factors:
            return self.factors[name].shape
        return tuple(self.diffs[name].shape)

    def delta(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Full dW [out, in] of one layer."""
        if name in self.factors:
            return self.factors[name].delta(dtype)
        if name in self.diffs:
            return self.diffs[name].to(dtype)
        raise KeyError(name)

    def deltas(self, dtype: torch.dtype = torch.float32) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self.layer_names():
            yield name, self.delta(name, dtype)

    @property
    def ranks(self) -> dict[str, int]:
        return {n: f.rank for n, f in self.factors.items()}

    def summary(self) -> dict:
        ranks = sorted(set(self.ranks.values()))
        alphas = sorted({f.alpha for f in self.factors.values()})
        return {
            "layers": len(self), "factor_layers": len(self.factors), "diff_layers": len(self.diffs),
            "ranks": ranks, "alphas": alphas,
            "parameters": sum(f.down.numel() + f.up.numel() for f in self.factors.values())
            + sum(d.numel() for d in self.diffs.values()),
            "targets": sorted({target_of(n) for n in self.layer_names()}),
        }

    def to(self, dtype: torch.dtype) -> LoraWeights:
        return LoraWeights(
            {n: LoraFactors(f.down.to(dtype), f.up.to(dtype), f.alpha) for n, f in self.factors.items()},
            {n: d.to(dtype) for n, d in self.diffs.items()}, dict(self.metadata))


def target_of(layer_name: str) -> str:
    """The per-block part of a layer name: "blocks.3.self_attn.q" -> "self_attn.q"."""
    parts = layer_name.split(".")
    if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit():
        return ".".join(parts[2:])
    return layer_name


def natural_key(name: str):
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.split(".")]
