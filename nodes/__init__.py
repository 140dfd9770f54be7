"""LibraGen ComfyUI nodes: the registry ComfyUI reads through the pack's root __init__.py."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _ensure_core() -> None:
    """Make `libragen_core` importable when the pack was cloned into custom_nodes without a pip
    install: load it from this checkout by path. sys.path is left alone on purpose, since adding
    the pack folder would expose its `nodes` package over ComfyUI's own `nodes` module."""
    if "libragen_core" in sys.modules or importlib.util.find_spec("libragen_core") is not None:
        return
    package = Path(__file__).resolve().parents[1] / "libragen_core"
    spec = importlib.util.spec_from_file_location("libragen_core", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["libragen_core"] = module
    spec.loader.exec_module(module)


_ensure_core()

from .decode_nodes import LibraGenDecode  # noqa: E402
from .lora_nodes import LibraGenLoraMerge  # noqa: E402
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
    # on core types (UNETLoader's MODEL, VAELoader's VAE, CLIPTextEncode's CONDITIONING)
    "LibraGenSubjectConditioning": (LibraGenSubjectConditioning, "LibraGen Subject Conditioning"),
    "LibraGenDynamicCFGGuider": (LibraGenDynamicCFGGuider, "LibraGen Dynamic CFG Guider"),
    "LibraGenStandInText": (LibraGenStandInText, "LibraGen Stand-in Text (no encoder)"),
}

NODE_CLASS_MAPPINGS = {node_id: cls for node_id, (cls, _) in _NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: name for node_id, (_, name) in _NODES.items()}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
