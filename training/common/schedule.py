"""Learning rate as a pure function of the step (so resuming needs no scheduler state)."""
from __future__ import annotations

import math


def lr_at(step: int, base_lr: float, warmup: int, total: int, decay: str = "constant", min_ratio: float = 0.1) -> float:
    """Linear warm-up over `warmup` steps, then constant or cosine down to base_lr * min_ratio at `total`."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    if decay == "constant" or total <= warmup:
        return base_lr
    if decay == "cosine":
        p = min(1.0, (step - warmup) / max(1, total - warmup))
        return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p)))
    raise ValueError(f"unknown lr decay {decay!r}")


def set_lr(optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
