"""peft for training: add LoRA adapters to the DiT in place, read them out, switch them off.

`inject_adapter_in_model` (not get_peft_model) is used so the model keeps its class, forward
signature and module names: "blocks.0.self_attn.q" stays that name (now a peft LoRA wrapper whose
`base_layer` holds the original Linear), and the rest of the code base never sees a PeftModel.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from ..errors import ConfigError, InputError
from .apply import linear_layers
from .weights import LoraFactors, LoraWeights

# Per-block Linear layers of a Wan2.1 DiT block (attention projections and the MLP).
DEFAULT_TARGETS = (
    "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
    "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o",
    "ffn.0", "ffn.2",
)


def _lora_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    for name, mod in model.named_modules():
        if isinstance(mod, LoraLayer):
            yield (name[len("base_model.model."):] if name.startswith("base_model.model.") else name), mod


def add_lora(model: nn.Module, rank: int, alpha: float | None = None, targets: Iterable[str] = DEFAULT_TARGETS,
             adapter_name: str = "default", dropout: float = 0.0, use_rslora: bool = False) -> nn.Module:
    """Inject a peft LoRA adapter (in place) into every Linear whose name ends with a target.

    alpha defaults to rank (scale 1). lora_B starts at zero (peft's default), so the adapted
    model starts out identical to the base. Base weights are frozen; the adapter is trainable and
    kept in fp32 whatever the base's dtype (bf16, fp8).
    Adding a second adapter stacks it on the first: both are active, only the new one trains.
    """
    from peft import LoraConfig, inject_adapter_in_model

    targets = list(targets)
    if not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"LoRA rank must be a positive integer, got {rank!r}")
    if not targets:
        raise ConfigError("add_lora needs at least one target module name (e.g. 'self_attn.q')")
    if adapter_name in adapter_names(model):
        raise ConfigError(f"the model already has a LoRA adapter named {adapter_name!r}; choose another name")
    names = list(linear_layers(model))  # sees through adapters added before
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        raise ConfigError(
            f"LoRA target(s) {unmatched} match no Linear layer of this model; valid per-block targets are "
            f"{', '.join(DEFAULT_TARGETS)} (module names as in Wan2.1 checkpoints)"
        )
    config = LoraConfig(r=rank, lora_alpha=float(rank if alpha is None else alpha), target_modules=targets,
                        lora_dropout=float(dropout), bias="none", use_rslora=use_rslora)
    earlier = [p for _, layer in _lora_layers(model) for p in layer.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    with warnings.catch_warnings():
        # peft warns when a model gets a second adapter; stacking adapters is intended here
        warnings.filterwarnings("ignore", message=".*peft_config.*multiple adapters")
        inject_adapter_in_model(config, model, adapter_name=adapter_name)
    for _, layer in _lora_layers(model):
        # Adapters stack: every adapter of every layer stays active (peft makes the new one the
        # only active adapter, even in layers it does not cover), and only the newest trains.
        layer.set_adapter(sorted(layer.lora_A.keys()))
        if adapter_name in layer.lora_A:
            # new dropout modules start in training mode; follow the model's mode instead
            layer.lora_dropout[adapter_name].train(model.training)
    for p in earlier:
        p.requires_grad_(False)
    for p in lora_trainable_parameters(model, adapter_name):
        # peft gives the adapter its base layer's dtype; on a bf16 or fp8 base the LoRA still trains
        # in fp32 (peft casts the layer input to the adapter's dtype, and the sum back to the base's)
        if p.dtype != torch.float32:
            p.data = p.data.float()
        p.requires_grad_(True)
    return model


def adapter_names(model: nn.Module) -> list[str]:
    found: set[str] = set()
    for _, layer in _lora_layers(model):
        found.update(layer.lora_A.keys())
    return sorted(found)


def lora_trainable_parameters(model: nn.Module, adapter_name: str = "default") -> list[nn.Parameter]:
    """The parameters of one adapter (what the optimizer gets)."""
    params = []
    for _, layer in _lora_layers(model):
        if adapter_name in layer.lora_A:
            params += [layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight]
    if not params:
        raise InputError(f"the model has no LoRA adapter named {adapter_name!r} (has: {adapter_names(model)})")
    return params


def _whole(t: torch.Tensor) -> torch.Tensor:
    """A sharded (FSDP DTensor) weight gathered; a plain one as it is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def extract_lora(model: nn.Module, adapter_name: str = "default") -> LoraWeights:
    """The adapter's weights as a LoraWeights keyed by DiT module names (detached copies).

    alpha is written so that alpha / rank equals peft's scaling (which differs under rsLoRA).
    A model sharded with FSDP gives its whole weights: every process must call this (a gather).
    """
    factors = {}
    for name, layer in _lora_layers(model):
        if adapter_name not in layer.lora_A:
            continue
        down = _whole(layer.lora_A[adapter_name].weight.detach()).clone()
        up = _whole(layer.lora_B[adapter_name].weight.detach()).clone()
        factors[name] = LoraFactors(down, up, layer.scaling[adapter_name] * down.shape[0])
    if not factors:
        raise InputError(f"the model has no LoRA adapter named {adapter_name!r} (has: {adapter_names(model)})")
    return LoraWeights(factors)


def lora_state_dict(model: nn.Module, adapter_name: str = "default", naming: str = "comfyui") -> dict[str, torch.Tensor]:
    """The adapter as file tensors (default: ComfyUI's native Wan LoRA key names)."""
    from .formats import to_state_dict

    return to_state_dict(extract_lora(model, adapter_name), naming)


def load_into_adapter(model: nn.Module, lora: LoraWeights, adapter_name: str = "default") -> None:
    """Copy a LoraWeights into an existing adapter of the same ranks (resume training, or start
    DPO from a merged LoRA). The LoRA's alpha/rank becomes the layer scale."""
    layers = {n: m for n, m in _lora_layers(model) if adapter_name in m.lora_A}
    if not layers:
        raise InputError(f"the model has no LoRA adapter named {adapter_name!r} (has: {adapter_names(model)})")
    if lora.diffs:
        raise InputError("full-matrix diffs cannot be loaded into a LoRA adapter; merge with a target rank first")
    extra = sorted(set(lora.factors) - set(layers))
    if extra:
        raise InputError(f"the LoRA has layers the adapter does not cover, e.g. {extra[:5]}")
    with torch.no_grad():
        for name, f in lora.factors.items():
            layer = layers[name]
            a, b = layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight
            if a.shape != f.down.shape or b.shape != f.up.shape:
                raise InputError(
                    f"layer {name}: LoRA factors {tuple(f.down.shape)}/{tuple(f.up.shape)} do not match the "
                    f"adapter's {tuple(a.shape)}/{tuple(b.shape)} (rank {a.shape[0]})"
                )
            a.copy_(f.down)
            b.copy_(f.up)
            layer.scaling[adapter_name] = f.scale


@contextlib.contextmanager
def disable_adapter(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block the model computes with its base weights only (every adapter off).

    DPO's reference model is the policy under this context. Unlike toggling peft layers by hand,
    this restores each parameter's requires_grad exactly (peft's enable/disable resets them).
    """
    layers = [m for _, m in _lora_layers(model)]
    was_disabled = [m.disable_adapters for m in layers]
    grads = [(p, p.requires_grad) for m in layers for p in m.parameters()]
    for m in layers:
        m.enable_adapters(False)
    try:
        yield model
    finally:
        for m, off in zip(layers, was_disabled):
            m.enable_adapters(not off)
        for p, g in grads:
            p.requires_grad_(g)


def remove_lora(model: nn.Module) -> dict[str, LoraWeights]:
    """Take every peft wrapper out (in place), leaving the plain Linear layers with unchanged base
    weights; returns the adapters that were there so they can be saved or merged. requires_grad
    flags are left as they are (add_lora froze the base)."""
    out = {a: extract_lora(model, a) for a in adapter_names(model)}
    for name, layer in list(_lora_layers(model)):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    return out


def fold_adapters(model: nn.Module, strength: float = 1.0):
    """Unwrap every adapter and fold it into the base weights (fp32 math): the "SFT merged into the
    base" step before DPO adds its own adapter. Returns the WeightBackup that undoes the fold."""
    from .apply import merge_lora_into

    backup = None
    for lora in remove_lora(model).values():
        backup = merge_lora_into(model, lora, strength, backup=backup)
    return backup


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict in plain checkpoint names (no peft wrappers, no adapter tensors)."""
    sd = {}
    for k, v in model.state_dict().items():
        if ".lora_" in k:
            continue
        sd[k.replace(".base_layer.", ".")] = v
    return sd
