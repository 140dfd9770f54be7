"""Subject Conditioning on core types: core VAE + 1 to 4 reference images + core CONDITIONING ->
the three conditionings and the empty latent of core `WanPhantomSubjectToVideo`.

The outputs carry the same keys as core's (each reference one VAE latent frame, concatenated on the
time axis as `time_dim_concat`, in the VAE's own latent space; zeros in the model's space for the
null condition), so either node feeds core `DualCFGGuider` or the LibraGen guider. What differs is
the preprocessing: core resizes and centre-crops every image to the video size, which cuts off the
parts of a subject outside the crop; here each reference keeps its aspect ratio and is fitted on
white, transparency and masks painted white (Phantom's preprocessing, libragen_core.conditioning).
"""
from __future__ import annotations

import math
import os

import torch

from libragen_core.conditioning.references import prepare_references
from libragen_core.errors import InputError
from libragen_core.models.wan_vae import WAN21_LATENTS_MEAN

from .subject_nodes import SLOTS, connected_references
from .validation import check_ranges, first_error

WAN21_CHANNELS = len(WAN21_LATENTS_MEAN)
_ABSENT = object()  # an optional input that is not connected (ComfyUI leaves it out entirely)


def label_lines(labels: str) -> list[str]:
    lines = [ln.strip() for ln in (labels or "").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def check_conditioning(name: str, conditioning) -> None:
    """A core CONDITIONING: a list of [tensor [B, L, D], dict] entries."""
    ok = isinstance(conditioning, (list, tuple)) and len(conditioning) > 0 and all(
        isinstance(e, (list, tuple)) and len(e) == 2 and isinstance(e[0], torch.Tensor) and isinstance(e[1], dict)
        for e in conditioning)
    if not ok:
        raise InputError(f"{name} is not a ComfyUI CONDITIONING (a list of [text features, options]); connect a "
                         "CLIPTextEncode output (CLIPLoader type wan).")


def with_values(conditioning, **values) -> list:
    """A copy of the CONDITIONING with the options set on every entry (the input is left as it is)."""
    return [[features, {**options, **values}] for features, options in conditioning]


def encode_references(vae, images: list[torch.Tensor], masks: list, width: int, height: int) -> torch.Tensor:
    """White-padded references -> one VAE latent frame each, [1, C, R, height/8, width/8] (VAE space)."""
    pixels = prepare_references(images, height, width, masks=masks)  # [R, 3, H, W] in [-1, 1]
    frames = []
    for k, image in enumerate(((pixels + 1.0) / 2.0).movedim(1, -1)):  # ComfyUI IMAGE [H, W, 3] in 0..1
        latent = vae.encode(image[None])
        if latent.ndim != 5 or latent.shape[1] != WAN21_CHANNELS or latent.shape[2] != 1:
            raise InputError(
                f"vae gave a latent of shape {tuple(latent.shape)} for reference {k + 1}; subject conditioning needs "
                f"the Wan2.1 VAE (wan_2.1_vae.safetensors: {WAN21_CHANNELS} channels, one latent frame per image).")
        frames.append(latent.float().cpu())
    return torch.cat(frames, dim=2)


def null_references(refs: torch.Tensor) -> torch.Tensor:
    """References that are zeros once the model normalizes them ((x - mean) / std): the mean itself."""
    mean = torch.tensor(WAN21_LATENTS_MEAN, dtype=refs.dtype).view(1, -1, 1, 1, 1)
    return mean.expand_as(refs).clone()


def check_latent_fits(shape) -> None:
    """Refuse an empty latent larger than the free memory (before allocating it)."""
    need = math.prod(shape) * 4
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # no sysconf (Windows): nothing to compare with
        return
    if need > free:
        raise InputError(f"the empty latent {list(shape)} needs {need / 2**30:.1f} GiB but {free / 2**30:.1f} GiB "
                         "of memory is free; lower width, height, length or batch_size.")


class LibraGenSubjectConditioning:
    DESCRIPTION = ("Phantom-style subject conditioning for core Wan2.1 / Phantom-Wan models (UNETLoader): 1 to 4 "
                   "reference images, each fitted into the video frame with its aspect ratio kept on white (masked-"
                   "out or transparent parts white) and VAE-encoded as one latent frame. Outputs what core "
                   "WanPhantomSubjectToVideo outputs (same keys), without its centre crop: feed them to the LibraGen "
                   "Dynamic CFG Guider (or core DualCFGGuider) and SamplerCustomAdvanced.")
    CATEGORY = "LibraGen/conditioning"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative_text", "negative_img_text", "latent")
    OUTPUT_TOOLTIPS = (
        "The prompt with the references (the guider's positive: full condition).",
        "The negative prompt with the references (the guider's negative_text: reference-only condition).",
        "The negative prompt with null references (the guider's negative_img_text: null condition).",
        "An empty video latent of the given size, length and batch, for SamplerCustomAdvanced's latent_image.",
    )
    FUNCTION = "condition"

    @classmethod
    def INPUT_TYPES(cls):
        size = {"min": 16, "max": 8192, "step": 16}
        optional = {f"image_{k}": ("IMAGE", {"tooltip": f"Reference image {k} (optional)."}) for k in SLOTS if k > 1}
        for k in SLOTS:
            optional[f"mask_{k}"] = ("MASK", {
                "tooltip": f"Optional mask for image_{k}, as LoadImage gives it (1 = transparent): the transparent "
                           "part is painted white. Its size may differ; it is resized to the image."})
        optional["labels"] = ("STRING", {
            "multiline": True, "default": "",
            "tooltip": "Optional: the subjects' labels, one line per connected image in order (what the prompt "
                       "calls Ref 1, Ref 2, ...). Checked against the images, so a prompt written from these labels "
                       "binds as many references as there are; the model does not see them."})
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "The prompt, from CLIPTextEncode (CLIPLoader type wan)."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative prompt, from CLIPTextEncode."}),
                "vae": ("VAE", {"tooltip": "The Wan2.1 VAE (VAELoader: wan_2.1_vae.safetensors)."}),
                "width": ("INT", {"default": 832, **size, "tooltip": "Video width in pixels (multiple of 16)."}),
                "height": ("INT", {"default": 480, **size, "tooltip": "Video height in pixels (multiple of 16)."}),
                "length": ("INT", {"default": 81, "min": 1, "max": 8192, "step": 4,
                                   "tooltip": "Number of video frames: 4k+1 (81 at 16 fps is 5 s)."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096,
                                       "tooltip": "Videos sampled at once from the same conditioning."}),
                "image_1": ("IMAGE", {"tooltip": "Reference image of subject 1 (e.g. from LoadImage)."}),
            },
            "optional": optional,
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, length=None, batch_size=None, labels=None,
                        image_2=_ABSENT, image_3=_ABSENT, image_4=_ABSENT):
        problems = [check_ranges(cls, width=width, height=height, length=length, batch_size=batch_size)]
        for name, v in (("width", width), ("height", height)):
            if isinstance(v, int) and v % 16:
                problems.append(f"{name} {v} is not a multiple of 16; use {v - v % 16 or 16} or {v - v % 16 + 16}.")
        if isinstance(length, int) and (length - 1) % 4:
            lower = length - (length - 1) % 4
            problems.append(f"length {length} is not 4k+1; use {lower} or {lower + 4}.")
        if isinstance(labels, str):
            connected = 1 + sum(image is not _ABSENT for image in (image_2, image_3, image_4))
            if len(label_lines(labels)) > connected:
                problems.append(f"labels has {len(label_lines(labels))} lines but {connected} reference image(s) are "
                                "connected; give one label per image, in order.")
        return first_error(problems)

    def condition(self, positive, negative, vae, width, height, length, batch_size, image_1, labels="", **optional):
        check_conditioning("positive", positive)
        check_conditioning("negative", negative)
        refs = connected_references(image_1, optional)
        images, masks = [image for _, image, _ in refs], [mask for _, _, mask in refs]
        lines = label_lines(labels)
        if len(lines) > len(images):
            raise InputError(f"labels has {len(lines)} lines but {len(images)} reference image(s) are connected; give "
                             "one label per image, in order.")
        shape = [batch_size, WAN21_CHANNELS, (length - 1) // 4 + 1, height // 8, width // 8]
        check_latent_fits(shape)
        refs = encode_references(vae, images, masks, width, height)
        latent = torch.zeros(shape)
        return (with_values(positive, time_dim_concat=refs),
                with_values(negative, time_dim_concat=refs),
                with_values(negative, time_dim_concat=null_references(refs)),
                {"samples": latent})
