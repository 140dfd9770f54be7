"""LibraGen ComfyUI nodes: the registry ComfyUI reads through the pack's root __init__.py."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


class DuplicatePackError(ImportError):
    """Another copy of the pack is already loaded in this process."""


def _package_folders(module) -> list[Path]:
    return [Path(p).resolve() for p in (getattr(module, "__path__", None) or [])]


def _ensure_core() -> None:
    """Make this copy's own `libragen_core` the one imported, also when the pack was cloned into
    custom_nodes without a pip install: load it from this checkout by path. sys.path is left alone
    on purpose, since adding the pack folder would expose its `nodes` package over ComfyUI's own
    `nodes` module.

    There is one `libragen_core` per process. When another copy of the pack (a second clone in
    custom_nodes) already loaded its own, this copy refuses to load (ComfyUI logs the error and
    keeps running with the first copy) rather than run its nodes over the other copy's core."""
    pack = Path(__file__).absolute().parents[1]  # as ComfyUI found it (custom_nodes/<name>, maybe a link)
    package = pack.resolve() / "libragen_core"
    loaded = sys.modules.get("libragen_core")
    if loaded is not None:
        folders = _package_folders(loaded)
        if package in folders:
            return
        other = getattr(loaded, "__libragen_pack__", None) or (folders[0].parent if folders else "(unknown)")
        fix = ("Remove or disable one of the two folders (e.g. rename it to end in .disabled) and restart ComfyUI."
               if (Path(other) / "nodes" / "__init__.py").is_file() else
               "That is a pip-installed libragen_core: run `pip uninstall libragen` with ComfyUI's Python and "
               "restart ComfyUI (the pack loads its own core from its folder).")
        raise DuplicatePackError(
            f"LibraGen is installed twice: the pack in {pack} was not loaded because the copy in {other} "
            f"already is (one LibraGen core per ComfyUI process). {fix}")
    spec = importlib.util.find_spec("libragen_core")
    if spec is not None and package in [Path(p).resolve() for p in spec.submodule_search_locations or []]:
        return  # pip-installed from this same folder (editable)
    # not installed, or installed from another folder: this copy's nodes run with this copy's core
    spec = importlib.util.spec_from_file_location("libragen_core", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    module.__libragen_pack__ = str(pack)  # named by a second copy's refusal
    sys.modules["libragen_core"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["libragen_core"]
        raise


_ensure_core()

from . import adapter  # noqa: E402
from .decode_nodes import LibraGenDecode  # noqa: E402
from .lora_nodes import LibraGenLoraMerge, LibraGenLoraMergeNative  # noqa: E402
from .model_nodes import LibraGenLoadModel  # noqa: E402
from .native_guider import LibraGenDynamicCFGGuider  # noqa: E402
from .native_subjects import LibraGenSubjectConditioning  # noqa: E402
from .rewrite_nodes import LibraGenPromptRewrite  # noqa: E402
from .sampler_nodes import LibraGenSampler  # noqa: E402
from .schedule_nodes import LibraGenCFGSchedule  # noqa: E402
from .standin_nodes import LibraGenStandInText  # noqa: E402
from .subject_nodes import LibraGenSubjectEncode  # noqa: E402

_NODES = {
    "LibraGenLoadModel": (LibraGenLoadModel, "Load LibraGen Model"),
    "LibraGenSubjectEncode": (LibraGenSubjectEncode, "LibraGen Subject Encode"),
    "LibraGenPromptRewrite": (LibraGenPromptRewrite, "LibraGen Prompt Rewrite"),
    "LibraGenCFGSchedule": (LibraGenCFGSchedule, "LibraGen CFG Schedule"),
    "LibraGenSampler": (LibraGenSampler, "LibraGen Dynamic CFG Sampler"),
    "LibraGenDecode": (LibraGenDecode, "LibraGen Decode"),
    "LibraGenLoraMerge": (LibraGenLoraMerge, "LibraGen LoRA Merge"),
    "LibraGenLoraMergeNative": (LibraGenLoraMergeNative, "LibraGen LoRA Merge (MODEL)"),
    # on core types (UNETLoader's MODEL, VAELoader's VAE, CLIPTextEncode's CONDITIONING)
    "LibraGenSubjectConditioning": (LibraGenSubjectConditioning, "LibraGen Subject Conditioning"),
    "LibraGenDynamicCFGGuider": (LibraGenDynamicCFGGuider, "LibraGen Dynamic CFG Guider"),
    "LibraGenStandInText": (LibraGenStandInText, "LibraGen Stand-in Text (no encoder)"),
}

# errors name files relative to ComfyUI's folders: clients see them (in /history too)
NODE_CLASS_MAPPINGS = {node_id: adapter.client_errors(cls) for node_id, (cls, _) in _NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: name for node_id, (_, name) in _NODES.items()}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
