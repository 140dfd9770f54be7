"""Prompt Rewrite: subject labels + a plain prompt -> the LibraGen prompt (Ref lines + Video line).

The rewritten prompt shows on the node: the node returns it as ui text (as core's Preview Any
does) and as a STRING output for the sampler.

Endpoints belong to the server's owner: the node offers by name the endpoints listed in
<ComfyUI user folder>/libragen/rewrite_endpoints.json (or $LIBRAGEN_REWRITE_ENDPOINTS) and nothing
else, so no workflow can name a URL or an environment variable. A graph posted with key-shaped
text in this node's fields (or with the inputs that once named a URL and a key variable) is
scrubbed before ComfyUI stores or logs it, and refused when it held a key; what the node returns
and logs is redacted. An http rewrite stops at ComfyUI's interrupt, also mid-request.
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
from libragen_core.rewrite.endpoints import FILE_NAME, Endpoint, load_endpoints
from libragen_core.rewrite.redact import REDACTED, looks_like_key, redact

from . import adapter
from .types import MODEL, SUBJECTS
from .validation import check_ranges, first_error

LLM_KIND = "LLM"  # models/LLM: one sub-folder per local language model (config.json + safetensors + tokenizer)
NO_LLM = "(none)"
NODE_TYPE = "LibraGenPromptRewrite"
NO_ENDPOINT = "(none)"
# the inputs that named a URL, a model and a key variable before endpoints became server configuration
REMOVED_INPUTS = ("endpoint_url", "endpoint_model", "api_key_env")
# what scrub_posted_graph puts in `endpoint` when it blanked out a key, so that validation refuses the graph
KEY_FOUND = "(key-shaped value removed from: "
CONFIG_PLACE = f"libragen/{FILE_NAME} in ComfyUI's user folder; see docs/rewrite.md"
UNKNOWN_ENDPOINT = ("endpoint is not one of the endpoints this server offers; pick one from the list (refresh the "
                    "page if it changed). A workflow names a configured endpoint, never a URL or a variable.")
NEEDS_ENDPOINT = ("the http backend needs an endpoint: pick one of the endpoints this server offers in endpoint. "
                  "Workflows saved before endpoints became server settings held endpoint_url, endpoint_model and "
                  f"api_key_env; those inputs are gone. The server's owner lists endpoints in {CONFIG_PLACE}.")
KEY_IN_FIELD = ("holds what looks like an API key or token; remove it. Keys never go in a workflow: the server's "
                f"owner keeps them in environment variables, named in {CONFIG_PLACE}.")
# "generic" stays selectable so workflows saved before the phantom guide still validate; it is libragen
STYLE_CHOICES = (*STYLE_GUIDES, *ALIASES)
log = logging.getLogger("libragen.rewrite")
_FIELD = re.compile(r"^[A-Za-z0-9_]+$")
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
    user = adapter.user_folder()
    return user / "libragen" / "rewrite_cache" if user is not None else default_cache_dir()


def endpoints_file() -> Path | None:
    user = adapter.user_folder()
    return user / "libragen" / FILE_NAME if user is not None else None


def configured_endpoints() -> dict[str, Endpoint]:
    """The server's endpoints, read afresh (an edit needs no restart); ConfigError names the file."""
    return load_endpoints(endpoints_file())


_logged: set[str] = set()


def endpoint_names() -> list[str]:
    """The endpoint list's choices; a broken configuration offers none, and the log says why (once)."""
    try:
        return list(configured_endpoints())
    except ConfigError as e:
        if str(e) not in _logged:
            _logged.add(str(e))
            log.error("LibraGen Prompt Rewrite offers no endpoint: %s", e)
        return []


def _key_problem(**fields) -> str | None:
    """A field holding key-shaped text (or the mark scrub_posted_graph leaves), as a message that
    names the field but never quotes it."""
    for name, value in fields.items():
        if isinstance(value, str) and value.startswith(KEY_FOUND):
            names = [n.strip() for n in value[len(KEY_FOUND):].rstrip(")").split(",")]
            shown = ", ".join(n for n in names if _FIELD.match(n)) or "a field"
            return (f"{shown} held what looks like an API key or token; the server dropped it before storing or "
                    f"logging this graph. Remove it from the workflow: keys never go in a workflow (the server's "
                    f"owner keeps them in environment variables, named in {CONFIG_PLACE}).")
        if isinstance(value, str) and looks_like_key(value):
            return f"{name} {KEY_IN_FIELD}"
    return None


def _endpoint_problem(backend, endpoint) -> str | None:
    chosen = endpoint or NO_ENDPOINT
    try:
        names = configured_endpoints()
    except ConfigError as e:
        return str(e) if backend == "http" or chosen != NO_ENDPOINT else None
    if chosen != NO_ENDPOINT and chosen not in names:
        return UNKNOWN_ENDPOINT
    if backend == "http" and chosen == NO_ENDPOINT:
        return NEEDS_ENDPOINT + ("" if names else " This server offers none yet.")
    return None


def scrub_posted_graph(json_data):
    """ComfyUI on_prompt handler, run on each posted graph before ComfyUI validates, queues, stores
    (/history) or logs it. In each Prompt Rewrite node: the removed inputs are dropped, and any
    key-shaped value is replaced by [redacted] and the node marked, so that validation refuses the
    graph with a message naming the field."""
    prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
    if not isinstance(prompt, dict):
        return json_data
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or node.get("class_type") != NODE_TYPE or not isinstance(node.get("inputs"),
                                                                                                 dict):
            continue
        inputs = node["inputs"]
        found = [name for name, value in inputs.items() if isinstance(value, str) and looks_like_key(value)]
        removed = [name for name in REMOVED_INPUTS if inputs.pop(name, None) is not None]
        for name in found:
            if name in inputs:
                inputs[name] = REDACTED
        if found:
            inputs["endpoint"] = KEY_FOUND + ", ".join(n for n in found if _FIELD.match(n)) + ")"
        if removed:
            log.warning("LibraGen Prompt Rewrite (node %s): dropped %s from the posted graph; these inputs are gone, "
                        "endpoints are chosen by name from the server's configuration (docs/rewrite.md)",
                        node_id, ", ".join(removed))
    return json_data


adapter.on_prompt(scrub_posted_graph)


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
                   "the style guide; http = one of the OpenAI-compatible chat endpoints (Ollama, LM Studio, vLLM) "
                   "the server's owner configured, picked by name; transformers = a local language model from "
                   "models/LLM. LLM answers are checked and cached; a failure falls back to offline with a "
                   "warning on the node and in the console.")
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
                                             "tooltip": "offline: rules, no model, deterministic. http: one of "
                                                        "the server's configured chat endpoints (see endpoint). "
                                                        "transformers: a local causal LM folder from models/LLM."}),
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
                "endpoint": ([NO_ENDPOINT, *endpoint_names()], {
                    "default": NO_ENDPOINT,
                    "tooltip": "http backend: one of the endpoints this server's owner configured (URL, model and "
                               "key stay on the server, in libragen/rewrite_endpoints.json of ComfyUI's user "
                               "folder). A workflow names an endpoint, never a URL or a key."}),
                "llm": ([NO_LLM, *list_llms()], {"default": NO_LLM,
                                                  "tooltip": "transformers backend: a language model folder in "
                                                             "models/LLM (config.json + safetensors + tokenizer)."}),
                "timeout": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 600.0, "step": 1.0,
                                      "tooltip": "http backend: seconds to wait for each answer (Cancel "
                                                 "stops the wait at once)."}),
                "retries": ("INT", {"default": 2, "min": 0, "max": 5,
                                    "tooltip": "http backend: retries after a timeout, 429 or 5xx answer."}),
                "use_cache": ("BOOLEAN", {"default": True,
                                          "tooltip": "Reuse earlier LLM rewrites of the same inputs (stored in "
                                                     "ComfyUI's user folder) instead of asking again."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, backend=None, timeout=None, retries=None, llm=None, endpoint=None, prompt=None,
                        labels=None):
        # the key check comes first, and none of these messages quotes a value
        problems = [_key_problem(endpoint=endpoint, prompt=prompt, labels=labels, llm=llm),
                    check_ranges(cls, backend=backend, timeout=timeout, retries=retries),
                    _endpoint_problem(backend, endpoint)]
        if llm is not None and llm != NO_LLM and llm not in list_llms():
            problems.append("llm is not one of the language model folders in models/LLM; pick one from the list "
                            "(refresh the page after adding a folder).")
        if backend == "transformers" and llm == NO_LLM:
            problems.append("the transformers backend needs a model folder: pick one in llm (from models/LLM).")
        return first_error(problems)

    def rewrite(self, prompt, backend, style_guide, subjects=None, model=None, labels="", endpoint=NO_ENDPOINT,
                llm=NO_LLM, timeout=30.0, retries=2, use_cache=True):
        names, count = _labels(subjects, labels)
        if count is not None and len(names) > count:
            raise InputError(f"labels has {len(names)} lines but subjects holds {count} references; give one line "
                             "per reference.")
        problem = _key_problem(prompt=prompt, labels=labels)  # a linked prompt is first seen here
        if problem:
            raise InputError(problem)
        options, secrets = {}, []
        if backend == "http":
            endpoints = configured_endpoints()
            if endpoint not in endpoints:
                raise ConfigError(NEEDS_ENDPOINT if endpoint in (None, "", NO_ENDPOINT) else UNKNOWN_ENDPOINT)
            options = {"endpoint": endpoints[endpoint], "timeout": timeout, "retries": retries,
                       "should_stop": adapter.check_interrupted}
            secrets = [endpoints[endpoint].key()]
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
        warnings = [redact(w, secrets) for w in result.warnings]
        for w in warnings:
            log.warning("LibraGen Prompt Rewrite: %s", w)
        text = redact(result.prompt, secrets)
        report = "\n".join([f"backend: {result.backend_used}", f"style: {guide.name} ({why})",
                            *(f"warning: {w}" for w in warnings)])
        return {"ui": {"text": [text, report]}, "result": (text, report)}
