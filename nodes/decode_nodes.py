"""Decode: a Wan LATENT -> IMAGE frames [F, H, W, 3] for CreateVideo, SaveVideo, SaveAnimatedWEBP, VHS."""
from __future__ import annotations

import torch

from libragen_core.errors import InputError
from libragen_core.pipeline import decode_frames, decoding_estimate, video_size

from . import adapter
from .types import MODEL


def latent_to_normalized(vae, samples) -> torch.Tensor:
    """ComfyUI LATENT (raw VAE latents, from our sampler, core KSampler or VAEEncode) -> normalized."""
    if isinstance(samples, dict):
        samples = samples.get("samples")
    if not isinstance(samples, torch.Tensor):
        raise InputError("the latent input holds no 'samples' tensor; connect a LATENT from a sampler or VAEEncode.")
    if samples.ndim != 5:
        raise InputError(f"expected video latents [B, C, T, h, w]; got shape {tuple(samples.shape)} "
                         "(an image latent? use a Wan video latent).")
    if samples.shape[1] != vae.config.z_dim:
        raise InputError(f"the latent has {samples.shape[1]} channels but this model's VAE uses {vae.config.z_dim}; "
                         "decode it with the VAE of the model that made it.")
    return vae.normalize(samples.float())


class LibraGenDecode:
    DESCRIPTION = "Decodes video latents with the model's VAE into IMAGE frames (one image per frame)."
    CATEGORY = "LibraGen/decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("Video frames [F, H, W, 3] in 0..1 (batches of videos are concatenated frame-wise); "
                       "connect to CreateVideo, SaveAnimatedWEBP or VHS Video Combine.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The LibraGen model whose VAE decodes the latents."}),
            "latent": ("LATENT", {"tooltip": "Wan video latents (LibraGen sampler, core KSampler, VAEEncode)."}),
        }}

    def decode(self, model, latent):
        vae = model.bundle.vae
        z = latent_to_normalized(vae, latent)
        # asks ComfyUI to make this much room beside the VAE; decode_frames checks it fits
        room = decoding_estimate(model.bundle, *video_size(model.bundle, z)).total
        with adapter.placed({"vae": vae}, model.handles, model.offload, memory_required=room):
            frames = decode_frames(model.bundle, z)  # [B, F, H, W, 3]
        return (frames.reshape(-1, *frames.shape[2:]).contiguous(),)
