"""What happens around one sampling run of a LIBRAGEN_MODEL value: its LoRA patches folded into
the DiT and the attention backend chosen on the loader, both undone when the run ends, also on
an interrupt or an error.

Why patch-for-the-run rather than a patched copy: a LoRA'd copy of a 14B DiT would double the
memory, and every branch of a graph shares the loaded modules. Folding is exact to undo because
the originals are copied back, never subtracted (libragen_core.lora.apply).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch.nn.attention import SDPBackend, sdpa_kernel

from libragen_core.errors import InputError
from libragen_core.lora import LoraWeights, WeightBackup, merge_lora_into

from .types import LibraGenModel

_BACKENDS = {
    # flash and efficient cannot run every call (masked cross-attention, some devices): math
    # stays allowed behind them so a run never fails for that reason.
    "math": [SDPBackend.MATH],
    "flash": [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
}


@contextlib.contextmanager
def attention(choice: str) -> Iterator[None]:
    if choice == "auto":
        yield
        return
    if choice not in _BACKENDS:
        raise InputError(f"unknown attention choice {choice!r}; use auto, {', '.join(_BACKENDS)}.")
    with sdpa_kernel(_BACKENDS[choice]):
        yield


def _one_layer(lora: LoraWeights, name: str) -> LoraWeights:
    if name in lora.factors:
        return LoraWeights(factors={name: lora.factors[name]})
    return LoraWeights(diffs={name: lora.diffs[name]})


@contextlib.contextmanager
def patched(model: LibraGenModel) -> Iterator[None]:
    """The value's LoRA patches folded into the (shared) DiT for the block, then removed exactly."""
    if not model.patches:
        yield
        return
    dit = model.bundle.dit
    device = next(dit.parameters()).device
    backup = WeightBackup()
    try:
        for patch in model.patches:
            if device.type == "cpu":
                merge_lora_into(dit, patch.lora, patch.strength, backup)
                continue
            # layer by layer, keeping each original on the CPU: a full set of on-device copies
            # would double the accelerator memory the DiT needs
            for name in patch.lora.layer_names():
                fresh = name not in backup.originals
                merge_lora_into(dit, _one_layer(patch.lora, name), patch.strength, backup)
                if fresh:
                    backup.originals[name] = backup.originals[name].to("cpu")
        yield
    finally:
        backup.restore()

