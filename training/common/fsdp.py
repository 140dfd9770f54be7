"""FSDP for the LoRA stages: the frozen base sharded over the processes (torch FSDP2, `fully_shard`).

Under DDP every GPU holds the whole frozen base; a 14B base in bf16 (26.6 GiB) plus activations
does not leave room to train on one GPU. Here each DiT block is one FSDP unit: a process keeps
1/N of every weight, all-gathers one block's weights just before the block runs (again in the
backward pass) and frees them after it; the LoRA's gradients are reduce-scattered, so each process
also keeps 1/N of the LoRA, its gradients and AdamW's state. Only the main process reads the
base file (training/common/base_model.load_frozen_dit(sharded=True)); the others build the model
on the meta device and receive each unit from it as it is sharded.

What a run sees is that of a one-process run (training/common/loop.py): every process draws the
global batch and keeps its share, the reduce-scatter averages the shares' gradients as DDP's
all-reduce does, checkpoints and the final LoRA are gathered to full tensors, so a checkpoint
written under FSDP resumes under DDP or in one process and the other way round.

The mode comes from run.sharding: "fsdp", "ddp", or "auto" = FSDP when `accelerate launch` was
given an FSDP config (training/accelerate/fsdp-14b.yaml sets ACCELERATE_USE_FSDP), DDP otherwise.
accelerate's own FSDP wrapping is not used: on a machine without GPUs accelerate runs an FSDP
config as plain CPU processes, and the per-block units are the DiT's checkpoint keys
(blocks.N), not a size-based policy.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from libragen_core.errors import ConfigError


def _env_true(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes")


def sharding_mode(setting: str, world: int) -> str:
    """'none' (one process), 'ddp' or 'fsdp' for run.sharding = auto | ddp | fsdp."""
    if world == 1:
        return "none"
    if setting == "auto":
        return "fsdp" if _env_true("ACCELERATE_USE_FSDP") else "ddp"
    return setting


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The modules that get sharded as one unit each, before the model itself (which takes what is
    left: embeddings, head). A Wan DiT's transformer blocks; another model names its own with an
    `fsdp_units()` method."""
    if hasattr(model, "fsdp_units"):
        return list(model.fsdp_units())
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList) and len(blocks):
        return list(blocks)
    raise ConfigError(f"FSDP does not know how to split a {type(model).__name__} (no `blocks` list, no fsdp_units()); "
                      "train it with run.sharding = 'ddp'")


def shard_model(model: nn.Module, device: torch.device, reshard_after_forward: bool | None = None
                ) -> tuple[int, int, bool]:
    """Shard `model` in place over every process of the default process group. Parameters move to
    `device` one unit at a time, so a base loaded in CPU memory never sits on a GPU whole. When
    some processes built the model on the meta device (only the main one read the file), each unit
    is broadcast from the main process just before it is cut; a model on the meta device in every
    process is sharded as it is.
    reshard_after_forward: free each block's gathered weights after its forward (gather again in
    the backward pass); default from accelerate's FSDP config (FSDP_RESHARD_AFTER_FORWARD), else on.
    Returns (bytes of weights this process keeps, bytes of the whole model's weights, whether the
    weights came from the main process)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if reshard_after_forward is None:
        reshard_after_forward = _env_true("FSDP_RESHARD_AFTER_FORWARD", True)
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    # a model some processes hold on the meta device only (load_frozen_dit(sharded=True)): the
    # main process sends each unit whole just before it is cut, so no process ever holds more
    # than one unit of it beyond its own parts. On the meta device everywhere, it stays there (the
    # caller makes each process's parts afterwards, e.g. with to_empty).
    meta = float(any(t.is_meta for t in _plain_tensors(model)))
    flags = torch.tensor([meta, -meta], device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)  # [meta somewhere, -(meta everywhere)]
    from_main = bool(flags[0].item() == 1.0 and flags[1].item() == 0.0)
    for unit in fsdp_units(model):
        if from_main:
            _send_from_main(unit, device)
        fully_shard(unit, mesh=mesh, reshard_after_forward=reshard_after_forward)
    if from_main:
        _send_from_main(model, device)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward)
    params = list(model.parameters())
    kept = sum((p.to_local() if is_sharded(p) else p).nbytes for p in params)
    return kept, sum(p.numel() * p.element_size() for p in params), from_main


def _plain_tensors(module: nn.Module) -> list[torch.Tensor]:
    """The parameters and buffers of `module` not sharded yet (a unit's, or what the units leave)."""
    return [t for t in (*module.parameters(), *module.buffers()) if not is_sharded(t)]


def _send_from_main(module: nn.Module, device: torch.device) -> None:
    """Broadcast the unsharded tensors of `module` from the main process (the one that read the
    file) to every process, on `device`; the others' meta tensors are replaced by real ones first.
    float8 travels as bytes (gloo has no float8 type)."""
    import torch.distributed as dist

    main = dist.get_rank() == 0
    for owner_name, owner in module.named_modules():
        for kind, table in (("parameter", owner._parameters), ("buffer", owner._buffers)):
            for name, t in list(table.items()):
                if t is None or is_sharded(t):
                    continue
                if main and t.is_meta:
                    raise RuntimeError(f"{kind} {owner_name}.{name} has no weights on the main process, which "
                                       "must load the model it shards")
                data = t.detach().to(device) if main else torch.empty(t.shape, dtype=t.dtype, device=device)
                wire = data.view(torch.uint8) if data.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) else data
                dist.broadcast(wire, src=0)
                # a new tensor object: a meta tensor cannot take real data in place
                table[name] = nn.Parameter(data, requires_grad=t.requires_grad) if kind == "parameter" else data


def is_sharded(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a shard (a collective: every process must call it, in the same order);
    a plain tensor as it is."""
    return t.full_tensor() if is_sharded(t) else t


def full_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: full_tensor(v.detach()) for k, v in state.items()}


def local_part(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` cut like the shard `like` (this process's part; no communication: every process read
    the same full tensor from the checkpoint); a plain tensor when `like` is one."""
    if not is_sharded(like):
        return full
    from torch.distributed.tensor import distribute_tensor

    mesh = like.device_mesh
    return distribute_tensor(full.to(mesh.device_type, like.dtype), mesh, like.placements, src_data_rank=None)


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """optimizer.state_dict() with every sharded state tensor gathered: the same dict a
    one-process run's optimizer gives."""
    sd = optimizer.state_dict()
    return {"state": {i: {k: full_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in st.items()}
                      for i, st in sd["state"].items()},
            "param_groups": sd["param_groups"]}


def shard_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """After optimizer.load_state_dict(full state): cut each state tensor of a sharded parameter
    to this process's part (AdamW's step counter stays a scalar)."""
    for p, st in optimizer.state.items():
        if not is_sharded(p):
            continue
        for k, v in list(st.items()):
            if isinstance(v, torch.Tensor) and not is_sharded(v) and tuple(v.shape) == tuple(p.shape):
                st[k] = local_part(v, p)


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> float:
    """Scale the gradients so that their norm (over all of them, whole or sharded) is at most
    max_norm, as torch's clip_grad_norm_ does; returns the norm before clipping. The sum of
    squares is taken in float64, so the parts of a sharded gradient add up to the norm of the
    whole one: one, DDP and FSDP processes get the same coefficient (the same LoRA file)."""
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    local = [g.to_local() if is_sharded(g) else g for g in grads]
    sq = torch.stack([g.detach().double().pow(2).sum() for g in local]).sum()
    if dist.is_initialized() and any(is_sharded(g) for g in grads):
        dist.all_reduce(sq)
    norm = float(sq.sqrt())
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for g in local:
            g.mul_(coef)
    return norm
