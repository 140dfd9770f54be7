"""The one place where the node pack touches ComfyUI: model folders, the user folder, progress
and previews, interrupts, graphs as they are posted, device placement, and weight patches on core
MODELs. Outside ComfyUI each service falls back to plain behaviour (model folders under
$LIBRAGEN_MODELS_DIR, a tqdm bar, no interrupts, cuda-if-available), so the node classes run the
same way in a plain Python process and in unit tests; core MODELs exist only inside ComfyUI.

ComfyUI is detected by importing its modules; nothing here imports them at module import time.
"""
from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from libragen_core.errors import CheckpointError, InputError

if TYPE_CHECKING:
    from libragen_core.lora import LoraWeights

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


def user_folder() -> Path | None:
    """ComfyUI's user folder (its --user-directory), the server owner's settings; None outside ComfyUI."""
    c = _comfy()
    return Path(c["folder_paths"].get_user_directory()) if c is not None else None


def on_prompt(handler) -> bool:
    """Have handler(json_data) -> json_data see every graph posted to /prompt, before ComfyUI
    validates, queues or stores it. False when no server runs (outside ComfyUI, or ComfyUI's modules
    used without its server), where nothing is posted."""
    server = sys.modules.get("server") if _comfy() is not None else None
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None:
        return False
    if handler not in getattr(instance, "on_prompt_handlers", ()):
        instance.add_on_prompt_handler(handler)
    return True


def model_mtime(kind: str, name: str) -> float:
    try:
        return model_path(kind, name).stat().st_mtime
    except (CheckpointError, OSError):
        return float("nan")  # a missing file: the loader runs and names the problem


# ---------------------------------------------------------------- paths in messages to clients

PACK_DIR = Path(__file__).absolute().parents[1]
# an absolute path left after the known folders are replaced: its folders are dropped
_POSIX_DIRS = re.compile(r"(?<![\w./~-])/(?:[^/\s'\"`]+/)+")
_WINDOWS_DIRS = re.compile(r"(?<![\w])[A-Za-z]:[\\/](?:[^\\/\s'\"`]+[\\/])+")


def _path_roots() -> list[tuple[str, str]]:
    """(absolute folder, the name a workflow client knows it by), longest folder first."""
    named = [(str(PACK_DIR), f"custom_nodes/{PACK_DIR.name}")]
    c = _comfy()
    if c is not None:
        fp = c["folder_paths"]
        base = os.path.abspath(fp.base_path)
        named += [(fp.get_input_directory(), "input"), (fp.get_output_directory(), "output"),
                  (fp.get_temp_directory(), "temp"), (fp.get_user_directory(), "user"), (fp.models_dir, "models"),
                  (base, "ComfyUI")]
        # model folders from extra_model_paths.yaml may lie anywhere: shown as the kind's folder
        named += [(f, f"models/{kind}") for kind in MODEL_KINDS for f in fp.get_folder_paths(kind)
                  if not os.path.abspath(f).startswith(base + os.sep)]
    else:
        root = os.environ.get(MODELS_DIR_ENV)
        if root:
            named.append((root, "models"))
    roots: dict[str, str] = {}
    for folder, label in named:
        for variant in (os.path.abspath(folder), os.path.realpath(folder)):
            roots.setdefault(variant.rstrip("/\\"), label)
    return sorted(((r, label) for r, label in roots.items() if r), key=lambda x: -len(x[0]))


def client_text(text: str) -> str:
    """`text` with every absolute path as a workflow client sees it: relative to ComfyUI's folders
    (models/loras/x.safetensors, input/foo.png, output/...), other folders dropped (.../x.png).
    The server's own log keeps the full paths (see client_errors)."""
    for root, label in _path_roots():
        # not a longer name that starts the same ("loras2", "loras.bak"); a full stop may follow
        text = re.sub(re.escape(root) + r"(?![\w-]|\.\w)", lambda _, label=label: label, text)
    text = _POSIX_DIRS.sub(".../", text)
    return _WINDOWS_DIRS.sub("...\\\\", text)


def client_path(path: str | os.PathLike) -> str:
    return client_text(str(path))


def _with_message(error: Exception, message: str) -> Exception:
    try:
        new = type(error)(message)
    except Exception:  # an exception class that takes other arguments
        new = None
    if new is None or str(new) != message:
        from libragen_core.errors import LibraGenError

        new = LibraGenError(message)
    return new


def client_errors(cls: type) -> type:
    """Make the node's FUNCTION raise errors whose messages name files as clients see them.

    ComfyUI sends an error's message to the workflow's client (and keeps it in /history); the
    rewritten error is raised from the original, so the server log's traceback still shows the
    original message with full paths. An error without paths (an interrupt, out of memory) passes
    through unchanged, so ComfyUI handles it as before."""
    fn = getattr(cls, cls.FUNCTION)
    if getattr(fn, "_client_errors", False):
        return cls

    @functools.wraps(fn)
    def run(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except Exception as e:
            message = client_text(str(e))
            if message == str(e):
                raise
            raise _with_message(e, message) from e

    run._client_errors = True
    setattr(cls, cls.FUNCTION, run)
    return cls


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


def free_ram_bytes() -> int | None:
    """Memory a new allocation on the CPU can take (ComfyUI's own figure inside it), or None if unknown."""
    c = _comfy()
    if c is not None:
        return int(c["mm"].get_free_memory(torch.device("cpu")))
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


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


# ---------------------------------------------------------------- core MODEL (ComfyUI's ModelPatcher)

CORE_PREFIX = "diffusion_model."  # where core's model keeps the DiT: its keys are ours behind it


def _core_model(model, what: str):
    if _comfy() is None:
        raise InputError(f"{what} works on ComfyUI's MODEL type and needs ComfyUI; outside it use LibraGen LoRA "
                         "Merge on Load LibraGen Model's output.")
    if not (hasattr(model, "clone") and hasattr(model, "add_patches") and hasattr(model, "model_state_dict")):
        raise InputError(f"{what}: the model input is {type(model).__name__}, not a core MODEL; connect a core "
                         "loader's MODEL (Load Diffusion Model / UNETLoader).")
    return model


def core_layer_shapes(model, what: str) -> dict[str, tuple[int, ...]]:
    """Layer name (as the DiT and our LoRAs name it) -> [out, in] of every 2-D weight of a core MODEL."""
    sd = _core_model(model, what).model_state_dict(filter_prefix=CORE_PREFIX)
    return {k[len(CORE_PREFIX):-len(".weight")]: tuple(v.shape) for k, v in sd.items()
            if k.endswith(".weight") and v.ndim == 2}


def with_lora_patches(model, lora: LoraWeights, strength: float, what: str):
    """A clone of a core MODEL carrying `lora` as core's own weight patches, the kind core's LoRA
    loader adds: low-rank factors as a LoRA weight adapter, full diffs as "diff" patches. Core
    folds them in when it loads the model (or layer by layer in low-VRAM partial loading, through
    a scaled-fp8 layer's own convert/set functions) and undoes them on unload, so the input MODEL
    and its weights are never changed."""
    from comfy.weight_adapter import LoRAAdapter

    patches = {}
    for name, f in lora.factors.items():
        patches[f"{CORE_PREFIX}{name}.weight"] = LoRAAdapter(set(), (f.up, f.down, f.alpha, None, None, None))
    for name, d in lora.diffs.items():
        patches[f"{CORE_PREFIX}{name}.weight"] = ("diff", (d,))
    clone = _core_model(model, what).clone()
    left = sorted(set(patches) - set(clone.add_patches(patches, strength)))
    if left:  # the caller checked the shapes; a key core does not know means another model layout
        raise CheckpointError(f"{what}: the model has no weight for {len(left)} LoRA layer(s), e.g. {', '.join(left[:3])}")
    return clone
