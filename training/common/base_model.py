"""The base a subject-to-video stage trains on: its files, the frozen DiT, the LoRA's checkpoint state.

A base is three files (`model.dit`, `model.vae`, `model.text_encoder`: a Wan2.1 T2V or Phantom-Wan
DiT, the Wan2.1 VAE, umT5-XXL, as ComfyUI users have them) or, when those are not set, the
SpriteWorld model folder that pretraining exported. The DiT of a base from files is loaded frozen
in bf16, or with fp8 block linears (`Fp8Linear`, half the memory), straight from the file onto the
device: never as an fp32 copy. Only the LoRA trains, in fp32 (`add_lora`). The VAE and the text
encoder are used by the cache step only (training/common/cache.py) and are never on the device
during DiT steps.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from libragen_core.errors import CheckpointError, InputError

_WHERE = {
    "dit": "a Wan2.1 T2V or Phantom-Wan DiT, e.g. ComfyUI/models/diffusion_models/Phantom-Wan-1.3B_fp16.safetensors",
    "vae": "the Wan2.1 VAE, e.g. ComfyUI/models/vae/wan_2.1_vae.safetensors",
    "text_encoder": "umT5-XXL, e.g. ComfyUI/models/text_encoders/umt5_xxl_fp16.safetensors",
}


@dataclass(frozen=True)
class BaseFiles:
    dit: Path
    vae: Path
    text_encoder: Path
    tokenizer: Path | None
    name: str  # written into LoRA files as their base model
    from_files: bool  # a real base (model.*) rather than the SpriteWorld model folder


def base_files(cfg) -> BaseFiles:
    """The base of a chain config (a PostChainConfig): model.* files, else the exported model folder."""
    m = cfg.model
    if m.from_files:
        if m.tiny:
            from ..tiny_base import write_missing

            write_missing({k: Path(getattr(m, k)) for k in ("dit", "vae", "text_encoder")}, say=True)
        for key in ("dit", "vae", "text_encoder"):
            p = Path(getattr(m, key))
            if not p.is_file():
                raise CheckpointError(f"model.{key} = {str(p)!r} does not exist; it should be {_WHERE[key]} "
                                      f"(set it with --set model.{key}=PATH)")
        return BaseFiles(Path(m.dit), Path(m.vae), Path(m.text_encoder), Path(m.tokenizer) if m.tokenizer else None,
                         m.name or Path(m.dit).name.removesuffix(".safetensors"), True)
    from libragen_core.models.bundle import CARD_FILE, ModelCard

    from ..post_common import base_folder

    folder = base_folder(cfg)
    if not (folder / CARD_FILE).is_file():
        raise CheckpointError(f"no base: model.dit is not set and there is no pretrained model folder at {folder} "
                              f"({CARD_FILE} missing). Set model.dit / model.vae / model.text_encoder to a real "
                              "base, or run `python -m training.pretrain --config ...` (its export stage) first")
    card = ModelCard.read(folder / CARD_FILE)
    return BaseFiles(folder / card.dit, folder / card.vae, folder / card.text_encoder,
                     folder / card.tokenizer if card.tokenizer else None, card.name, False)


def make_encoders(files: BaseFiles, facts, device, tile: int = 0, batch: int = 8):
    """training.common.cache.Encoders for this base (the VAE in fp32; the text encoder as its loader picks)."""
    from libragen_core.models.text_encoders import load_text_encoder
    from libragen_core.models.vae_checkpoint import load_vae

    from .cache import Encoders

    device = file_device(device)

    def vae(dev):
        return load_vae(files.vae, device=dev)

    def text(dev):
        return load_text_encoder(files.text_encoder, tokenizer=files.tokenizer, device=dev)

    return Encoders(files.vae, files.text_encoder, vae, text, facts, device=device, stream=files.from_files,
                    tile=tile if files.from_files else 0, batch=batch)


# ---------------------------------------------------------------- the DiT
def dit_weight_bytes(path: Path, dtype: str) -> int:
    """Bytes the DiT's weights take once loaded: bf16 everywhere, or fp8 block linears + bf16 rest."""
    from libragen_core.io.safetensors_file import read_header
    from libragen_core.models.loading import inspect_checkpoint

    info = inspect_checkpoint(path)
    if dtype != "fp8":
        return 2 * info.n_params
    header, _ = read_header(path)
    total = 0
    for k, v in header.items():
        name = k[len(info.key_prefix):]
        if not k.startswith(info.key_prefix) or name.endswith((".scale_weight", ".scale_input")) or name == "scaled_fp8":
            continue
        n = 1
        for s in v["shape"]:
            n *= s
        linear = name.startswith("blocks.") and name.endswith(".weight") and len(v["shape"]) == 2
        total += n * (1 if linear else 2)
    return total


def check_fits(need: int, device, what: str, fixes: str) -> None:
    """Refuse before allocating `need` bytes that `device` does not have free (the free memory as the
    sampler's checks read it: libragen_core.memory.available_bytes, a container's limit included)."""
    from libragen_core.memory import available_bytes

    have = available_bytes(device)
    if have is not None and need > have:
        raise InputError(f"{what} needs {need / 2**30:.1f} GiB but {torch.device(device)} has {have / 2**30:.1f} GiB "
                         f"free; {fixes}")


def file_device(device) -> str | torch.device:
    """Where to load safetensors files for `device`: accelerate names the CPU of a multi-process run
    "cpu:0", which safetensors refuses."""
    return "cpu" if torch.device(device).type == "cpu" else device


def load_frozen_dit(files: BaseFiles, dtype: str = "bf16", device="cpu", offload_blocks: int = 0,
                    sharded: bool = False):
    """The DiT, frozen: a real base in bf16 (or fp8 block linears), the SpriteWorld model as stored.

    offload_blocks: the last N blocks' weights stay in CPU memory (see offload_frozen_blocks).
    sharded: the base is about to be sharded with FSDP (training/common/fsdp.py): the main process
    reads it into CPU memory, every other process builds the same model on the meta device (no
    weights), and the sharding sends each block from the main process to all before cutting it,
    so one copy of the base is in CPU memory, not one per process."""
    from libragen_core.models.loading import load_dit

    dev = torch.device(device)
    dev_name = file_device(dev)
    if not files.from_files:
        dit = load_dit(files.dit, device=dev_name)
    else:
        need = dit_weight_bytes(files.dit, dtype)
        fixes = ("use model.dtype = 'fp8' (half the memory), model.offload_blocks = N (blocks wait in CPU memory), "
                 "or a smaller base")
        torch_dtype = torch.float8_e4m3fn if dtype == "fp8" else torch.bfloat16
        if sharded:
            import torch.distributed as dist

            if dist.get_rank() != 0:  # filled by the main process when FSDP shards it
                return load_dit(files.dit, device="meta", dtype=torch_dtype).requires_grad_(False)
            check_fits(need, "cpu", f"the DiT {files.dit.name} in {dtype}, read once before FSDP shards it",
                       "use model.dtype = 'fp8' or a machine with more memory")
        else:
            check_fits(need, "cpu" if offload_blocks else dev, f"the DiT {files.dit.name} in {dtype}", fixes)
        # with offloading (or sharding) the file is read into CPU memory and only the resident part moves
        dit = load_dit(files.dit, device="cpu" if offload_blocks or sharded else dev_name, dtype=torch_dtype)
    dit.requires_grad_(False)
    if offload_blocks:
        offload_frozen_blocks(dit, offload_blocks, dev)
    return dit


class BlockOffload:
    """Frozen weights of some DiT blocks live in CPU memory; each block's visit to the device lasts
    one call of its forward (hooks), so the device holds one offloaded block at a time. It relies
    on gradient checkpointing: the backward pass calls the block again (recomputation), which
    brings the weights back; without it autograd would keep every block's device copy alive."""

    def __init__(self, blocks: list[nn.Module], device):
        self.device = torch.device(device)
        self.frozen: list[tuple[nn.Parameter, torch.Tensor]] = []
        self.handles = []
        pin = self.device.type == "cuda"
        for blk in blocks:
            mine = []
            for p in blk.parameters():
                if p.requires_grad:
                    p.data = p.data.to(self.device)
                else:
                    host = p.data.to("cpu")
                    host = host.pin_memory() if pin else host
                    p.data = host
                    mine.append((p, host))
            for b_name, b in list(blk.named_buffers()):
                owner = blk.get_submodule(b_name.rpartition(".")[0]) if "." in b_name else blk
                owner._buffers[b_name.rpartition(".")[2]] = b.to(self.device)
            self.frozen += mine
            self.handles.append(blk.register_forward_pre_hook(self._arrive(mine)))
            self.handles.append(blk.register_forward_hook(self._leave(mine)))

    def _arrive(self, params):
        def hook(module, args):
            for p, host in params:
                p.data = host.to(self.device, non_blocking=True)
        return hook

    def _leave(self, params):
        def hook(module, args, output):
            for p, host in params:
                p.data = host
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def offload_frozen_blocks(dit, n: int, device) -> BlockOffload | None:
    """Keep the frozen weights of the last n blocks in CPU memory; everything else goes to `device`."""
    blocks = list(dit.blocks)
    if n > len(blocks):
        raise InputError(f"model.offload_blocks = {n} but the DiT has {len(blocks)} blocks")
    rest = blocks[: len(blocks) - n]
    for name, child in dit.named_children():
        if name != "blocks":
            child.to(device)
    for blk in rest:
        blk.to(device)
    off = BlockOffload(blocks[len(blocks) - n:], device)
    dit._libragen_offload = off  # kept with the model: LoRA params added later are moved by move_adapters_to
    return off


# ---------------------------------------------------------------- checkpoints hold the LoRA only
class AdapterState(nn.Module):
    """The trainable parameters of a model (its LoRA) as one module for TrainLoop's checkpoints: its
    state dict holds those tensors only, so a checkpoint is the LoRA + optimizer + RNG state, never
    the frozen base. The model itself is not a submodule (it is not saved, moved or counted)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        object.__setattr__(self, "_model", model)
        self._names = [n for n, p in model.named_parameters() if p.requires_grad]
        if not self._names:
            raise InputError("the model has no trainable parameters; add the LoRA first")

    def _params(self) -> dict[str, nn.Parameter]:
        named = dict(self._model.named_parameters())
        return {n: named[n] for n in self._names}

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        yield from self._params().values()

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        for n, p in self._params().items():
            yield prefix + n, p

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self._params().items()}

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        params = self._params()
        missing, unexpected = sorted(set(params) - set(state_dict)), sorted(set(state_dict) - set(params))
        if strict and (missing or unexpected):
            raise RuntimeError(f"LoRA state mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
        from .fsdp import local_part

        with torch.no_grad():
            for n, p in params.items():
                if n in state_dict:
                    if tuple(state_dict[n].shape) != tuple(p.shape):
                        raise RuntimeError(f"{n}: checkpoint shape {tuple(state_dict[n].shape)} != {tuple(p.shape)}")
                    p.copy_(local_part(state_dict[n], p))
        return nn.modules.module._IncompatibleKeys(missing, unexpected)


def gradient_checkpointing_on(setting, from_files: bool) -> bool:
    """optim.gradient_checkpointing: True / False, or "auto" = on for a base from files."""
    return from_files if setting == "auto" else bool(setting)


def move_adapters_to(dit, device) -> None:
    """LoRA parameters follow the device (an offloaded block's adapter too: it trains on the device)."""
    for p in dit.parameters():
        if p.requires_grad and p.device != torch.device(device) and not p.is_meta:  # meta: FSDP fills it
            p.data = p.data.to(device)


__all__ = ["AdapterState", "BaseFiles", "BlockOffload", "base_files", "check_fits",
           "dit_weight_bytes", "file_device", "gradient_checkpointing_on", "load_frozen_dit", "make_encoders", "move_adapters_to",
           "offload_frozen_blocks"]

