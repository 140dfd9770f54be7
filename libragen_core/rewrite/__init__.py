"""The two-stage prompt rewriter (docs/method.md section 2). See docs/rewrite.md.

    from libragen_core.rewrite import rewrite
    r = rewrite(["the blue star"], "I want the star to weave to the right", style_guide="spriteworld")
    r.prompt  # 'Ref 1: a blue star.\\nVideo: Ref 1[the blue star] zig-zags to the right on ...'
    rewrite(["the woman in a yellow raincoat", "the small white dog"],
            "she walks her dog along the pier at sunset, camera follows them", style_guide="phantom").prompt
    # 'A woman in a yellow raincoat walks her small white dog along the pier at sunset. The camera follows them.'
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from ..errors import ConfigError, InputError
from .base import MAX_SUBJECTS, Backend, BackendError, Captioner, Rewrite, check_inputs, validate_prompt
from .cache import RewriteCache, cache_key, default_cache_dir
from .offline import OfflineBackend, rewriter_for
from .style_guide import (
    ALIASES,
    AUTO,
    BUILT_IN,
    STYLE_METADATA_KEY,
    StyleGuide,
    choose_style_guide,
    generic_style_guide,
    libragen_style_guide,
    phantom_style_guide,
    resolve_style_guide,
    spriteworld_style_guide,
)

BACKENDS = ("offline", "http", "transformers")
log = logging.getLogger("libragen.rewrite")

STYLE_GUIDES = (AUTO, *BUILT_IN)  # what the node and the CLI offer; "generic" still works (ALIASES)

__all__ = ["ALIASES", "BACKENDS", "MAX_SUBJECTS", "STYLE_GUIDES", "STYLE_METADATA_KEY", "Backend", "BackendError",
           "Captioner", "Rewrite", "RewriteCache", "StyleGuide", "OfflineBackend", "choose_style_guide",
           "default_cache_dir", "generic_style_guide", "libragen_style_guide", "make_backend", "phantom_style_guide",
           "rewrite", "resolve_style_guide", "spriteworld_style_guide", "validate_prompt"]


def make_backend(name: str = "offline", *, url: str | None = None, model: str | None = None,
                 api_key_env: str | None = "LIBRAGEN_API_KEY", endpoint=None, model_dir=None, timeout: float = 30.0,
                 retries: int = 2, backoff: float = 0.5, should_stop=None, device: str = "cpu") -> Backend:
    """endpoint: a server-configured `endpoints.Endpoint` for http, instead of url/model/api_key_env.
    should_stop: http only; called while waiting, True (or an exception it raises) cancels."""
    if name == "offline":
        return OfflineBackend()
    if name == "http":
        from .http_backend import HTTPBackend

        if endpoint is not None:
            return HTTPBackend.configured(endpoint, timeout, retries, backoff, should_stop)
        return HTTPBackend(url or "", model or "", api_key_env, timeout, retries, backoff, should_stop=should_stop)
    if name == "transformers":
        if not model_dir:
            raise ConfigError("the transformers rewrite backend needs a local model folder (model_dir)")
        from .transformers_backend import TransformersBackend

        return TransformersBackend(model_dir, device=device)
    raise ConfigError(f"unknown rewrite backend {name!r}; choose one of {', '.join(BACKENDS)}")


def _describe(captioner: Captioner, images, labels: list[str], lines: list[str], warnings: list[str]) -> list[str]:
    out = list(lines)
    for k, image in enumerate(images or []):
        if k >= len(labels) or image is None:
            continue
        try:
            out[k] = f"Ref {k + 1}: {captioner.describe(image, k, labels[k])}."
        except BackendError as e:
            warnings.append(f"captioner failed for Ref {k + 1} ({e}); described it from its label")
    return out


def _with_warnings(result: Rewrite, warnings: Sequence[str]) -> Rewrite:
    if not warnings:
        return result
    return Rewrite(result.prompt, result.ref_lines, result.video_line, result.backend_used,
                   tuple(warnings) + result.warnings, result.style)


def rewrite(subject_labels: Sequence[str] | None, user_prompt: str, backend: str | Backend = "offline",
            style_guide=None, *, n_references: int | None = None, captioner: Captioner | None = None,
            images=None, cache: RewriteCache | str | bool | None = None, bundle=None, loras=(),
            **backend_options) -> Rewrite:
    """Labels (one per reference, '' = unlabelled) + the user's prompt -> a prompt in the model's style.

    backend: "offline" (default), "http", "transformers", or a Backend object; options such as
        url=, model=, api_key_env=, endpoint=, model_dir=, timeout=, retries=, should_stop= go to
        make_backend.
    style_guide: a StyleGuide, "phantom", "libragen" ("generic" is its old name), "spriteworld",
        a JSON path, or None / "auto": chosen from the model (bundle, and the metadata of the LoRAs
        applied to it, `loras`); see style_guide.choose_style_guide. Without a model: phantom.
    n_references: the number of reference images when labels may be fewer (the rest unlabelled).
    captioner + images: stage 1 from pixels (otherwise from the labels).
    cache: a RewriteCache or folder; None/False = no cache. Only answers of the requested
        backend are cached (never an offline fallback, so a server outage is not remembered).
    A failing LLM backend, or one whose answer is outside the style (a subject not named, a
    malformed format), falls back to the offline rewrite; the reason is in `.warnings` and logged
    on the 'libragen.rewrite' logger.
    """
    labels, prompt = check_inputs(subject_labels, user_prompt, n_references)
    guide = resolve_style_guide(style_guide, bundle, loras=loras)
    if guide.output == "ref":
        try:  # already a LibraGen prompt for these references: nothing to rewrite
            lines, video = validate_prompt(user_prompt.strip(), len(labels))
            return Rewrite("\n".join([*lines, video]), lines, video, "unchanged (already LibraGen format)",
                           style=guide.name)
        except InputError:
            pass
    engine = make_backend(backend, **backend_options) if isinstance(backend, str) else backend
    offline = rewriter_for(guide)
    captioning = captioner is not None and images is not None
    if engine.name == "offline" and not captioning:
        return offline.rewrite(labels, prompt)
    warnings: list[str] = []
    ref_lines = offline.stage1(labels, prompt)
    if captioning:
        ref_lines = _describe(captioner, images, labels, ref_lines, warnings)
    if engine.name == "offline":
        return _with_warnings(offline.rewrite(labels, prompt, ref_lines), warnings)
    store = RewriteCache(cache) if isinstance(cache, (str, bytes)) or hasattr(cache, "__fspath__") else \
        (RewriteCache() if cache is True else cache or None)
    key = cache_key(engine.name, engine.model, labels, prompt, guide.hash, ref_lines)
    if store is not None:
        hit = store.get(key)
        if hit is not None:
            return hit
    try:
        result = engine.rewrite(labels, prompt, guide, ref_lines)
    except BackendError as e:
        note = f"the {engine.name} rewrite backend failed ({e}); used the offline rewrite instead"
        log.warning("%s", note)
        fallback = offline.rewrite(labels, prompt, ref_lines)
        return Rewrite(fallback.prompt, fallback.ref_lines, fallback.video_line, "offline (fallback)",
                       tuple(warnings) + (note,) + fallback.warnings, fallback.style)
    result = _with_warnings(result, warnings)
    if store is not None:
        store.put(key, result)
    return result
