"""The one place where the node pack touches ComfyUI: model folders, progress and previews,
interrupts, and device placement. Outside ComfyUI each service falls back to plain behaviour
(model folders under $LIBRAGEN_MODELS_DIR, a tqdm bar, no interrupts, cuda-if-available), so the
node classes run the same way in a plain Python process and in unit tests.

ComfyUI is detected by importing its modules; nothing here imports them at module import time.
"""
from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from libragen_core.errors import CheckpointError

# Folder kinds the pack reads; each exists in ComfyUI's folder_paths already, so
# extra_model_paths.yaml entries for them work without registering anything.
MODEL_KINDS = ("diffusion_models", "vae", "text_encoders", "loras")
MODEL_EXTENSIONS = (".safetensors", ".sft")
MODELS_DIR_ENV = "LIBRAGEN_MODELS_DIR"


@functools.lru_cache(maxsize=1)
def _comfy():
    """ComfyUI's service modules when running inside it, else None."""
    try:
        import comfy.model_management as model_management
        import comfy.model_patcher as model_patcher
        import comfy.utils as utils
        import folder_paths
    except ImportError:
        return None
    return {"folder_paths": folder_paths, "mm": model_management, "utils": utils, "patcher": model_patcher}


def in_comfyui() -> bool:
    return _comfy() is not None


# ---------------------------------------------------------------- model folders

def _plain_folders(kind: str) -> list[Path]:
    root = os.environ.get(MODELS_DIR_ENV)
    return [Path(root) / kind] if root else []


def model_folders(kind: str) -> list[Path]:
    c = _comfy()
    if c is not None:
        return [Path(p) for p in c["folder_paths"].get_folder_paths(kind)]
    return _plain_folders(kind)


def list_models(kind: str) -> list[str]:
    """Names (relative paths with '/') of the safetensors files of a model folder kind."""
    c = _comfy()
    if c is not None:
        names = c["folder_paths"].get_filename_list(kind)
        return sorted(n for n in names if n.lower().endswith(MODEL_EXTENSIONS))
    names = set()
    for folder in _plain_folders(kind):
        if folder.is_dir():
            for p in folder.rglob("*"):
                if p.is_file() and p.suffix.lower() in MODEL_EXTENSIONS:
                    names.add(p.relative_to(folder).as_posix())
    return sorted(names)


def model_path(kind: str, name: str) -> Path:
    """Full path of a listed model file; a CheckpointError names the folders searched."""
    c = _comfy()
    path = None
    if c is not None:
        found = c["folder_paths"].get_full_path(kind, name)
        path = Path(found) if found else None
    else:
        for folder in _plain_folders(kind):
            candidate = (folder / name).resolve()
            if candidate.is_file() and folder.resolve() in candidate.parents:
                path = candidate
                break
    if path is None or not path.is_file():
        where = ", ".join(str(f) for f in model_folders(kind)) or f"(none: set {MODELS_DIR_ENV})"
        raise CheckpointError(
            f"the {kind} file {name!r} was not found in {where}; put it there (or pick another file) and refresh.")
    return path


def save_folder(kind: str) -> Path:
    """Where the pack writes new files of a kind (the first folder ComfyUI lists for it)."""
    folders = model_folders(kind)
    if not folders:
        raise CheckpointError(f"no {kind} folder is configured; set {MODELS_DIR_ENV} to a models directory.")
    return folders[0]


def model_mtime(kind: str, name: str) -> float:
    try:
        return model_path(kind, name).stat().st_mtime
    except (CheckpointError, OSError):
        return float("nan")  # a missing file: the loader runs and names the problem


# ---------------------------------------------------------------- progress, previews, interrupts

def check_interrupted() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel (no-op outside ComfyUI)."""
    c = _comfy()
    if c is not None:
        c["mm"].throw_exception_if_processing_interrupted()


def previews_enabled() -> bool:
    """Whether ComfyUI was started with a latent preview method (--preview-method)."""
    if _comfy() is None:
        return False
    from comfy.cli_args import LatentPreviewMethod, args

    return args.preview_method != LatentPreviewMethod.NoPreviews


def preview_max_size() -> int:
    if _comfy() is None:
        return 512
    from comfy.cli_args import args

    return int(args.preview_size)


class Progress:
    """A step counter shown as ComfyUI's node progress bar (with preview images) or a tqdm bar."""

    def __init__(self, total: int, node_id: str | None = None, desc: str = "LibraGen"):
        self.total = total
        c = _comfy()
        self._bar = c["utils"].ProgressBar(total, node_id=node_id) if c is not None else None
        self._tqdm = None
        if self._bar is None:
            from tqdm.auto import tqdm

            self._tqdm = tqdm(total=total, desc=desc, disable=None)

    def update(self, step: int, preview=None) -> None:
        """preview: a PIL image or None."""
        if self._bar is not None:
            image = None if preview is None else ("JPEG", preview, preview_max_size())
            self._bar.update_absolute(step, self.total, image)
        elif self._tqdm is not None:
            self._tqdm.update(step - self._tqdm.n)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()


# ---------------------------------------------------------------- devices

class _Holder(nn.Module):
    """Gives ComfyUI's ModelPatcher a module of its own to put its bookkeeping attributes on
    (it sets .device, which our text encoders expose as a read-only property)."""

    def __init__(self, part: nn.Module):
        super().__init__()
        self.part = part


def plain_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _same_device(module: nn.Module, device: torch.device) -> None:
    # a partial load (ComfyUI's --novram / lowvram modes) would split a module over two devices
    if any(p.device != device for p in module.parameters()):
        module.to(device)


_HOLDER_NAMES = {"dit": "LibraGenDiT", "vae": "LibraGenVAE", "text": "LibraGenTextEncoder"}


@functools.cache
def _holder_class(key: str) -> type:
    # ComfyUI logs the class name of what it loads ("Requested to load LibraGenDiT")
    return type(_HOLDER_NAMES.get(key, f"LibraGen_{key}"), (_Holder,), {})


def _patcher(handles: dict, key: str, module: nn.Module):
    c = _comfy()
    if key not in handles:
        mm = c["mm"]
        handles[key] = c["patcher"].ModelPatcher(_holder_class(key)(module), load_device=mm.get_torch_device(),
                                                 offload_device=mm.unet_offload_device())
    return handles[key]


def _unload(patchers) -> None:
    mm = _comfy()["mm"]
    for i in range(len(mm.current_loaded_models) - 1, -1, -1):
        loaded = mm.current_loaded_models[i]
        if any(loaded.model is p for p in patchers):
            loaded.model_unload()
            mm.current_loaded_models.pop(i)
    mm.soft_empty_cache()


@contextlib.contextmanager
def placed(modules: dict[str, nn.Module], handles: dict, policy: str = "auto",
           memory_required: int = 0) -> Iterator[torch.device]:
    """Put the named modules on the compute device for the duration of the block.

    Inside ComfyUI each module is wrapped once in a ModelPatcher and loaded with
    model_management.load_models_gpu, so ComfyUI's memory manager frees other models to make room
    (for the modules plus `memory_required` bytes of work memory) and can evict ours later when
    another node needs the memory. policy "offload after use" gives the memory back when the block
    ends; "cpu only" keeps everything on the CPU.
    """
    items: Sequence[tuple[str, nn.Module]] = list(modules.items())
    if policy == "cpu only":
        cpu = torch.device("cpu")
        for _, m in items:
            _same_device(m, cpu)
        yield cpu
        return
    c = _comfy()
    if c is not None:
        patchers = [_patcher(handles, key, m) for key, m in items]
        c["mm"].load_models_gpu(patchers, memory_required=memory_required, force_full_load=True)
        device = c["mm"].get_torch_device()
        if c["mm"].vram_state == c["mm"].VRAMState.NO_VRAM:
            device = c["mm"].unet_offload_device()
        for _, m in items:
            _same_device(m, device)
        try:
            yield device
        finally:
            if policy == "offload after use":
                _unload(patchers)
        return
    device = plain_device()
    for _, m in items:
        _same_device(m, device)
    try:
        yield device
    finally:
        if policy == "offload after use" and device.type != "cpu":
            for _, m in items:
                m.to("cpu")
            torch.cuda.empty_cache()


def loaded_device(module: nn.Module) -> torch.device:
    return _device_of(module)
