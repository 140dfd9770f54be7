"""Subject Encode: 1 to 4 reference images (+ optional masks and labels) -> reference latents."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from libragen_core.conditioning.references import MAX_REFERENCES
from libragen_core.errors import InputError
from libragen_core.pipeline import encode_subjects, references_estimate

from . import adapter
from .types import MODEL, SUBJECTS
from .validation import check_ranges, first_error

SLOTS = range(1, MAX_REFERENCES + 1)
_ABSENT = object()  # an optional input that is not connected (ComfyUI leaves it out entirely)


def comfy_mask_to_subject(mask: torch.Tensor | None, image: torch.Tensor, slot: int) -> torch.Tensor | None:
    """ComfyUI MASK (1 = transparent, as LoadImage makes it) -> subject mask (1 = subject) at the
    image's size, or None when the mask marks nothing transparent (LoadImage's mask of an opaque
    image is a 64x64 block of zeros, whatever the image size)."""
    if mask is None:
        return None
    m = mask.detach().float().cpu()
    if m.ndim == 3:
        if m.shape[0] != 1:
            raise InputError(f"mask_{slot} holds {m.shape[0]} masks; connect one mask per reference image.")
        m = m[0]
    if m.ndim != 2:
        raise InputError(f"mask_{slot} must be a ComfyUI MASK [H, W]; got shape {tuple(mask.shape)}.")
    if float(m.max()) <= 0.0:
        return None
    subject = 1.0 - m.clamp(0.0, 1.0)
    h, w = image.shape[-3], image.shape[-2]
    if tuple(subject.shape) != (h, w):
        subject = F.interpolate(subject[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    return subject


def single_image(image: torch.Tensor, slot: int) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim not in (3, 4):
        raise InputError(f"image_{slot} must be a ComfyUI IMAGE [B, H, W, C]; got {type(image).__name__}.")
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise InputError(
                f"image_{slot} holds a batch of {image.shape[0]} images; one image per input "
                "(pick one with ImageFromBatch, or connect the others to image_2..image_4: at most "
                f"{MAX_REFERENCES} references in all).")
        image = image[0]
    return image


def connected_references(image_1, optional: dict) -> list[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """(slot, image [H, W, C], subject mask or None) of each connected image_k, in slot order; a
    mask_k whose image_k is not connected is refused."""
    out = []
    for k in SLOTS:
        image = image_1 if k == 1 else optional.get(f"image_{k}")
        if image is None:
            if optional.get(f"mask_{k}") is not None:
                raise InputError(f"mask_{k} is connected but image_{k} is not; connect the image it belongs to.")
            continue
        image = single_image(image, k)
        out.append((k, image, comfy_mask_to_subject(optional.get(f"mask_{k}"), image, k)))
    return out


class LibraGenSubjectEncode:
    DESCRIPTION = ("Encodes 1 to 4 subject reference images for the sampler: each keeps its aspect ratio, is fitted "
                   "into the video frame on white (transparent or masked-out parts become white) and VAE-encoded "
                   "as one latent frame.")
    CATEGORY = "LibraGen/conditioning"
    RETURN_TYPES = (SUBJECTS,)
    RETURN_NAMES = ("subjects",)
    OUTPUT_TOOLTIPS = ("Encoded references with their labels, for the Dynamic CFG Sampler's subjects input.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        size = {"min": 16, "max": 4096, "step": 16}
        optional = {}
        for k in SLOTS:
            if k > 1:
                optional[f"image_{k}"] = ("IMAGE", {"tooltip": f"Reference image {k} (optional)."})
        for k in SLOTS:
            optional[f"mask_{k}"] = ("MASK", {
                "tooltip": f"Optional mask for image_{k}, as LoadImage gives it (1 = transparent): the transparent "
                           "part is painted white. Its size may differ; it is resized to the image."})
        for k in SLOTS:
            optional[f"label_{k}"] = ("STRING", {
                "default": "",
                "tooltip": f"Short name of subject {k} used in prompts (e.g. 'the red fox'); empty = 'Ref {k}'. "
                           "Leave empty when image_{k} is not connected."})
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The LibraGen model whose VAE encodes the references."}),
                "image_1": ("IMAGE", {"tooltip": "Reference image of subject 1 (e.g. from LoadImage)."}),
                "width": ("INT", {"default": 64, **size,
                                  "tooltip": "Video width in pixels: use the sampler's width (multiple of 16)."}),
                "height": ("INT", {"default": 64, **size,
                                   "tooltip": "Video height in pixels: use the sampler's height (multiple of 16)."}),
            },
            "optional": optional,
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, image_2=_ABSENT, image_3=_ABSENT, image_4=_ABSENT,
                        label_1="", label_2="", label_3="", label_4=""):
        images = {2: image_2, 3: image_3, 4: image_4}
        labels = {1: label_1, 2: label_2, 3: label_3, 4: label_4}
        problems = [check_ranges(cls, width=width, height=height)]
        for name, v in (("width", width), ("height", height)):
            if isinstance(v, int) and v % 16:
                problems.append(f"{name} {v} is not a multiple of 16; use {v - v % 16 or 16} or {v - v % 16 + 16}.")
        for k, label in labels.items():
            if k > 1 and label and images[k] is _ABSENT:
                problems.append(f"label_{k} is {label!r} but image_{k} is not connected; connect image_{k} or "
                                f"clear label_{k}.")
        return first_error(problems)

    def encode(self, model, image_1, width, height, **optional):
        for k in SLOTS:
            label = (optional.get(f"label_{k}") or "").strip()
            if label and (image_1 if k == 1 else optional.get(f"image_{k}")) is None:
                raise InputError(f"label_{k} is {label!r} but image_{k} is not connected.")
        refs = connected_references(image_1, optional)
        images, masks = [image for _, image, _ in refs], [mask for _, _, mask in refs]
        labels = [(optional.get(f"label_{k}") or "").strip() or f"Ref {i + 1}" for i, (k, _, _) in enumerate(refs)]
        bundle = model.bundle
        # asks ComfyUI to make this much room beside the VAE; encode_subjects checks it fits
        room = references_estimate(bundle, len(images), height, width).total
        with adapter.placed({"vae": bundle.vae}, model.handles, model.offload, memory_required=room):
            subjects = encode_subjects(bundle, images, height, width, masks=masks, labels=labels)
        # references are small; kept on the CPU so they never pin accelerator memory between nodes
        from libragen_core.conditioning.subjects import Subjects

        return (Subjects(latents=subjects.latents.cpu(), labels=subjects.labels),)
