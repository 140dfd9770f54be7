"""Prompt Rewrite: subject labels + a plain prompt -> the LibraGen prompt (Ref lines + Video line).

The rewritten prompt shows on the node: the node returns it as ui text (as core's Preview Any
does) and as a STRING output for the sampler. The API key of an http endpoint is never a node
input: the node takes the NAME of an environment variable, which is all a workflow stores.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from libragen_core.errors import CheckpointError, ConfigError, InputError
from libragen_core.rewrite import (
    ALIASES,
    BACKENDS,
    STYLE_GUIDES,
    RewriteCache,
    choose_style_guide,
    default_cache_dir,
    make_backend,
    rewrite,
)

from . import adapter
from .types import MODEL, SUBJECTS
from .validation import check_ranges, first_error

LLM_KIND = "LLM"  # models/LLM: one sub-folder per local language model (config.json + safetensors + tokenizer)
NO_LLM = "(none)"
# "generic" stays selectable so workflows saved before the phantom guide still validate; it is libragen
STYLE_CHOICES = (*STYLE_GUIDES, *ALIASES)
log = logging.getLogger("libragen.rewrite")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_DEFAULT_LABEL = re.compile(r"^Ref \d+$")  # what Subject Encode stores for an unlabelled image


def llm_roots() -> list[Path]:
    """models/LLM folders: ComfyUI's (registered on first use, extra_model_paths entries kept), else
    $LIBRAGEN_MODELS_DIR/LLM."""
    if adapter.in_comfyui():
        import folder_paths

        # idempotent; keeps models/LLM even when extra_model_paths.yaml registered other LLM folders first
        folder_paths.add_model_folder_path(LLM_KIND, os.path.join(folder_paths.models_dir, LLM_KIND))
        return [Path(p) for p in folder_paths.get_folder_paths(LLM_KIND)]
    root = os.environ.get(adapter.MODELS_DIR_ENV)
    return [Path(root) / LLM_KIND] if root else []


def list_llms() -> list[str]:
    names = set()
    for root in llm_roots():
        if root.is_dir():
            names.update(p.parent.relative_to(root).as_posix() for p in root.rglob("config.json")
                         if p.parent != root)
    return sorted(names)


def llm_path(name: str) -> Path:
    for root in llm_roots():
        candidate = (root / name).resolve()
        if (candidate / "config.json").is_file() and root.resolve() in candidate.parents:
            return candidate
    where = ", ".join(str(r) for r in llm_roots()) or f"(none: set {adapter.MODELS_DIR_ENV})"
    raise ConfigError(f"the local language model {name!r} was not found in {where}; put its folder there and refresh.")


def cache_folder() -> Path:
    """Kept across restarts: ComfyUI's user folder inside ComfyUI, the user cache folder outside."""
    if adapter.in_comfyui():
        import folder_paths

        return Path(folder_paths.get_user_directory()) / "libragen" / "rewrite_cache"
    return default_cache_dir()


def _dit_file(model) -> Path | None:
    """The diffusion model file behind a loaded model, for its metadata (None: embedded or not found)."""
    if model is None or model.bundle.folder is not None or not model.bundle.card.dit:
        return None
    try:
        return adapter.model_path("diffusion_models", model.bundle.card.dit)
    except (CheckpointError, ConfigError):
        return None


def _labels(subjects, labels_text: str) -> tuple[list[str], int | None]:
    lines = [ln.strip() for ln in (labels_text or "").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if subjects is None:
        return lines, None
    count = subjects.count
    if lines:
        return lines, count
    return ["" if _DEFAULT_LABEL.match(lb) else lb for lb in subjects.labels], count


class LibraGenPromptRewrite:
    DESCRIPTION = ("Rewrites a plain prompt into the prompt style the model was trained on: plain prose that "
                   "describes every subject (phantom), or one 'Ref k:' line per reference and a 'Video:' line that "
                   "binds each subject as Ref k[...] (libragen, spriteworld). offline = deterministic rules from "
                   "the style guide; http = an "
                   "OpenAI-compatible chat endpoint (Ollama, LM Studio, vLLM); transformers = a local language "
                   "model from models/LLM. LLM answers are checked and cached; a failure falls back to offline "
                   "with a warning on the node and in the console.")
    CATEGORY = "LibraGen/conditioning"
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("prompt", "report")
    OUTPUT_TOOLTIPS = ("The LibraGen prompt, for the sampler's prompt input.",
                       "Which backend produced it and any warnings (fallbacks, guesses), one per line.")
    FUNCTION = "rewrite"
    # an output node, so a graph with only this node runs and shows the rewrite: a prompt can be
    # previewed and edited before spending minutes on sampling
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "prompt": ("STRING", {"multiline": True, "default": "",
                                      "tooltip": "What should happen, in your words, e.g. 'make the dog chase the "
                                                 "ball across the lawn, camera panning left'."}),
                "backend": (list(BACKENDS), {"default": "offline",
                                             "tooltip": "offline: rules, no model, deterministic. http: an OpenAI-"
                                                        "compatible /chat/completions endpoint. transformers: a "
                                                        "local causal LM folder from models/LLM."}),
                "style_guide": (list(STYLE_CHOICES), {
                    "default": "auto",
                    "tooltip": "The prompt style to write. phantom: plain detailed prose naming every subject "
                               "(Phantom-Wan, Wan2.1). libragen: 'Ref k:' lines + a 'Video:' line (models post-"
                               "trained with LibraGen's recipe). spriteworld: the embedded model's captions. auto: "
                               "from the connected model (its guide file, its LoRAs' and its file's metadata), "
                               "else phantom. generic: the old name of libragen."}),
            },
            "optional": {
                "subjects": (SUBJECTS, {"tooltip": "Encoded references from Subject Encode: their number and "
                                                   "labels give the Ref lines."}),
                "model": (MODEL, {"tooltip": "The LibraGen model: with style_guide auto, its guide file, the "
                                             "metadata of its LoRAs and of its diffusion model file pick the "
                                             "style."}),
                "labels": ("STRING", {"multiline": True, "default": "",
                                      "tooltip": "One label per line, in reference order ('the dog'); overrides "
                                                 "the subjects' labels. Without subjects, the number of lines is "
                                                 "the number of references."}),
                "endpoint_url": ("STRING", {"default": "http://127.0.0.1:11434/v1",
                                            "tooltip": "http backend: the endpoint's base URL (Ollama "
                                                       "http://127.0.0.1:11434/v1, LM Studio "
                                                       "http://127.0.0.1:1234/v1, vLLM http://host:8000/v1)."}),
                "endpoint_model": ("STRING", {"default": "",
                                              "tooltip": "http backend: the model name the endpoint serves."}),
                "api_key_env": ("STRING", {"default": "LIBRAGEN_API_KEY",
                                           "tooltip": "http backend: the NAME of the environment variable that "
                                                      "holds the API key (set it before starting ComfyUI). Never "
                                                      "type the key itself here: workflows store this field."}),
                "llm": ([NO_LLM, *list_llms()], {"default": NO_LLM,
                                                  "tooltip": "transformers backend: a language model folder in "
                                                             "models/LLM (config.json + safetensors + tokenizer)."}),
                "timeout": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 600.0, "step": 1.0,
                                      "tooltip": "http backend: seconds to wait for each answer."}),
                "retries": ("INT", {"default": 2, "min": 0, "max": 5,
                                    "tooltip": "http backend: retries after a timeout, 429 or 5xx answer."}),
                "use_cache": ("BOOLEAN", {"default": True,
                                          "tooltip": "Reuse earlier LLM rewrites of the same inputs (stored in "
                                                     "ComfyUI's user folder) instead of asking again."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, backend=None, timeout=None, retries=None, api_key_env=None, llm=None,
                        endpoint_model=None):
        problems = [check_ranges(cls, backend=backend, timeout=timeout, retries=retries)]
        if isinstance(api_key_env, str) and api_key_env and not _ENV_NAME.match(api_key_env):
            # never echo the value: it may be a pasted key
            problems.append("api_key_env must be the NAME of an environment variable (letters, digits, _), not the "
                            "key itself; clear the field, set the variable before starting ComfyUI, and save the "
                            "workflow again.")
        if backend == "transformers" and llm == NO_LLM:
            problems.append("the transformers backend needs a model folder: pick one in llm (from models/LLM).")
        if backend == "http" and isinstance(endpoint_model, str) and not endpoint_model.strip():
            problems.append("the http backend needs endpoint_model (the model name the endpoint serves).")
        return first_error(problems)

    def rewrite(self, prompt, backend, style_guide, subjects=None, model=None, labels="",
                endpoint_url="http://127.0.0.1:11434/v1", endpoint_model="", api_key_env="LIBRAGEN_API_KEY",
                llm=NO_LLM, timeout=30.0, retries=2, use_cache=True):
        names, count = _labels(subjects, labels)
        if count is not None and len(names) > count:
            raise InputError(f"labels has {len(names)} lines but subjects holds {count} references; give one line "
                             "per reference.")
        if api_key_env and not _ENV_NAME.match(api_key_env):
            raise ConfigError("api_key_env must be the NAME of an environment variable, not the key itself.")
        options = {}
        if backend == "http":
            options = {"url": endpoint_url, "model": endpoint_model, "api_key_env": api_key_env or "LIBRAGEN_API_KEY",
                       "timeout": timeout, "retries": retries}
        elif backend == "transformers":
            if llm == NO_LLM:
                raise ConfigError("the transformers backend needs a model folder: pick one in llm (models/LLM).")
            options = {"model_dir": llm_path(llm)}
        engine = make_backend(backend, **options)
        guide, why = choose_style_guide(style_guide, model.bundle if model is not None else None,
                                        loras=[p.lora.metadata for p in model.patches] if model is not None else (),
                                        dit_file=_dit_file(model))
        result = rewrite(names, prompt, engine, guide, n_references=count,
                         cache=RewriteCache(cache_folder()) if use_cache else None)
        for w in result.warnings:
            log.warning("LibraGen Prompt Rewrite: %s", w)
        report = "\n".join([f"backend: {result.backend_used}", f"style: {guide.name} ({why})",
                            *(f"warning: {w}" for w in result.warnings)])
        return {"ui": {"text": [result.prompt, report]}, "result": (result.prompt, report)}
