"""Exponential moving average of a module's floating-point weights (kept in fp32)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class EMA:
    """shadow = decay * shadow + (1 - decay) * weight, after every optimizer step.

    warmup: the effective decay is min(decay, (1 + n) / (10 + n)) after n updates, so early
    shadows are not dominated by the random init (the usual EMA warm-up).
    """

    def __init__(self, module: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.decay = float(decay)
        self.warmup = warmup
        self.updates = 0
        self.shadow = {k: v.detach().float().clone() for k, v in module.state_dict().items() if v.is_floating_point()}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = self.current_decay()
        for k, v in module.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach().float(), 1.0 - d)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = dict(self.shadow)
        out["__ema_updates__"] = torch.tensor([self.updates], dtype=torch.int64)
        return out

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        sd = dict(sd)
        self.updates = int(sd.pop("__ema_updates__")[0])
        missing = set(self.shadow) - set(sd)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:3]}")
        for k in self.shadow:
            self.shadow[k].copy_(sd[k])

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        sd = module.state_dict()
        for k, v in self.shadow.items():
            sd[k].copy_(v.to(sd[k].dtype))

    @contextlib.contextmanager
    def applied(self, module: nn.Module) -> Iterator[nn.Module]:
        """Temporarily swap the EMA weights into `module` (for validation), restoring them after."""
        backup = {k: v.detach().clone() for k, v in module.state_dict().items() if k in self.shadow}
        self.copy_to(module)
        try:
            yield module
        finally:
            sd = module.state_dict()
            with torch.no_grad():
                for k, v in backup.items():
                    sd[k].copy_(v)
