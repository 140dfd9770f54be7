"""LibraGen Dynamic CFG Guider: core MODEL + Phantom's three conditionings -> a core GUIDER.

The guider itself (a `comfy.samplers.CFGGuider` subclass) lives in comfy_guider.py, which imports
ComfyUI and is imported only when this node runs inside it, so the pack imports without ComfyUI.
The checks on the conditionings are plain Python and live here.
"""
from __future__ import annotations

import torch

from libragen_core.conditioning.references import MAX_REFERENCES
from libragen_core.errors import InputError
from libragen_core.sampling.guidance import PRESETS

from . import adapter
from .native_subjects import check_conditioning
from .types import CFG
from .validation import check_ranges, first_error

# the guider's inputs, named as core WanPhantomSubjectToVideo's outputs, for the passes of docs/method.md section 5
CONDITIONS = {"full": "positive", "ref": "negative_text", "null": "negative_img_text"}
SOURCE = ("connect the three outputs of one LibraGen Subject Conditioning (or core WanPhantomSubjectToVideo) in "
          "order: positive, negative_text, negative_img_text")


def _describe(shape) -> str:
    if shape is None:
        return "no references"
    _, count, h, w = shape
    return f"{count} reference frame(s) of {h}x{w} latents ({w * 8}x{h * 8} pixels)"


def reference_shape(name: str, conditioning, text_dim: int | None, channels: int | None):
    """(channels, count, h, w) of the references a conditioning carries (time_dim_concat), or None."""
    check_conditioning(name, conditioning)
    shapes = set()
    for features, options in conditioning:
        if features.ndim != 3:
            raise InputError(f"{name} holds text features of shape {tuple(features.shape)}; a Wan model takes "
                             "[batch, tokens, width] (CLIPTextEncode with CLIPLoader type wan).")
        if text_dim and features.shape[-1] != text_dim:
            raise InputError(f"{name} holds text features of width {features.shape[-1]} but this Wan model takes "
                             f"{text_dim} (umT5-XXL): encode the prompt with CLIPLoader type wan "
                             "(umt5_xxl_fp8_e4m3fn_scaled.safetensors) and CLIPTextEncode.")
        refs = options.get("time_dim_concat")
        if refs is not None and (not isinstance(refs, torch.Tensor) or refs.ndim != 5):
            raise InputError(f"{name} carries references (time_dim_concat) that are not Wan video latents "
                             f"[batch, channels, frames, h, w]; {SOURCE}.")
        shapes.add(None if refs is None else tuple(int(s) for s in refs.shape[1:]))
    if len(shapes) > 1:
        raise InputError(f"{name} combines entries with different references ({', '.join(map(_describe, shapes))}); "
                         f"{SOURCE}.")
    shape = shapes.pop()
    if shape is not None:
        if channels and shape[0] != channels:
            raise InputError(f"{name} carries references with {shape[0]} latent channels but the model works on "
                             f"{channels}: encode them with the Wan2.1 VAE (wan_2.1_vae.safetensors).")
        if shape[1] > MAX_REFERENCES:
            raise InputError(f"{name} carries {shape[1]} references; at most {MAX_REFERENCES} are supported. Give "
                             f"at most {MAX_REFERENCES} reference images.")
    return shape


def check_conditions(conds: dict, text_dim: int | None = None, channels: int | None = None):
    """The three conditionings' common reference shape (None: no references); InputError names the input."""
    shapes = {name: reference_shape(name, conds[name], text_dim, channels) for name in CONDITIONS.values()}
    if len(set(shapes.values())) > 1:
        found = "; ".join(f"{name}: {_describe(shape)}" for name, shape in shapes.items())
        raise InputError(f"the three conditionings must carry the same references ({found}); {SOURCE}.")
    return shapes["positive"]


def check_video(shape, latent_shape) -> None:
    """The references against the latent SamplerCustomAdvanced samples [B, C, T, h, w]."""
    if shape is None:
        return
    if len(latent_shape) != 5:
        raise InputError(f"latent_image has shape {tuple(latent_shape)}; the Wan guider samples video latents "
                         "[batch, channels, frames, h, w].")
    if tuple(shape[2:]) != tuple(latent_shape[3:]):
        h, w = latent_shape[3:]
        raise InputError(f"positive carries {_describe(shape)} but latent_image is {h}x{w} ({w * 8}x{h * 8} pixels): "
                         "make the references at the video's width and height (the same Subject Conditioning node "
                         "gives both).")


def same_conditioning(a, b) -> bool:
    """Whether two conditionings are the same condition (core WanPhantomSubjectToVideo without images
    returns its negative as both negatives: then ref-only and null are one pass)."""
    if a is b:
        return True
    if len(a) != len(b):
        return False
    for (fa, oa), (fb, ob) in zip(a, b):
        if fa.shape != fb.shape or not torch.equal(fa, fb) or oa.keys() != ob.keys():
            return False
        for key, value in oa.items():
            other = ob[key]
            if isinstance(value, torch.Tensor) or isinstance(other, torch.Tensor):
                if not (isinstance(value, torch.Tensor) and isinstance(other, torch.Tensor)
                        and value.shape == other.shape and torch.equal(value, other)):
                    return False
            elif value != other:
                return False
    return True


class LibraGenDynamicCFGGuider:
    DESCRIPTION = ("Time-dependent three-condition CFG for core Wan2.1 / Phantom-Wan models, as a GUIDER for "
                   "SamplerCustomAdvanced: v = v_null + s_img(t) (v_ref - v_null) + s_txt(t) (v_full - v_ref), with "
                   "the scales taken per step from a schedule. All conditions a step needs run as one batch; a "
                   "pass whose weight is zero is skipped, and s_img == s_txt needs two passes instead of three. "
                   "Core's pre-/post-CFG hooks (RescaleCFG, APG, CFG-Zero*, CFG++ samplers) apply as in "
                   "DualCFGGuider.")
    CATEGORY = "LibraGen/sampling"
    RETURN_TYPES = ("GUIDER",)
    RETURN_NAMES = ("guider",)
    OUTPUT_TOOLTIPS = ("The guider, for SamplerCustomAdvanced's guider input.",)
    FUNCTION = "get_guider"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A Wan2.1 T2V or Phantom-Wan model (UNETLoader, optionally with "
                                               "ModelSamplingSD3 and LoRAs)."}),
                "positive": ("CONDITIONING", {"tooltip": "Full condition: the prompt with the references "
                                                         "(Subject Conditioning's positive)."}),
                "negative_text": ("CONDITIONING", {"tooltip": "Reference-only condition: the negative prompt with "
                                                              "the references (Subject Conditioning's "
                                                              "negative_text)."}),
                "negative_img_text": ("CONDITIONING", {"tooltip": "Null condition: the negative prompt with null "
                                                                  "references (Subject Conditioning's "
                                                                  "negative_img_text)."}),
                "cfg_preset": (list(PRESETS), {"default": "libragen",
                                               "tooltip": "Guidance schedule preset (phantom = static 5.0 / 7.5); "
                                                          "a CFG Schedule node connected to cfg overrides it."}),
            },
            "optional": {
                "cfg": (CFG, {"tooltip": "A schedule from LibraGen CFG Schedule; overrides cfg_preset."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, cfg_preset=None):
        return first_error([check_ranges(cls, cfg_preset=cfg_preset)])

    def get_guider(self, model, positive, negative_text, negative_img_text, cfg_preset, cfg=None):
        if not adapter.in_comfyui():
            raise InputError("the LibraGen Dynamic CFG Guider runs inside ComfyUI (it is a core GUIDER); outside it "
                             "use libragen_core.sampling.sampler.sample or the LibraGen Dynamic CFG Sampler.")
        from .comfy_guider import DynamicCFGGuider

        guider = DynamicCFGGuider(model)
        guider.set_conds(positive, negative_text, negative_img_text)
        guider.set_schedule(cfg if cfg is not None else PRESETS[cfg_preset])
        return (guider,)
