"""Reading and writing Wan2.1-layout VAE files (safetensors), with the config read from shapes.

A file that is not a Wan2.1 VAE gets an error naming the file, what it looks like, and the first
missing / unexpected keys, so a user who picked the wrong file in a dropdown knows which one.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..io.safetensors_file import load_state_dict, read_header, save_state_dict

STATS_KEYS = ("latents_mean", "latents_std")  # our own addition: a trained VAE's latent statistics
_PREFIXES = ("first_stage_model.", "vae.")
_FORMAT = "libragen-wan2.1-vae"


def _strip_prefix(keys: list[str]) -> str:
    for p in _PREFIXES:
        if keys and all(k.startswith(p) for k in keys):
            return p
    return ""


def describe_family(keys) -> str:
    """A short phrase saying what a state dict looks like, from its key names alone."""
    keys = set(keys)

    def has(pattern: str) -> bool:
        rx = re.compile(pattern)
        return any(rx.search(k) for k in keys)

    if has(r"^decoder\.upsamples\.\d+\.upsamples\.") or has(r"^encoder\.downsamples\.\d+\.downsamples\."):
        return ("a Wan2.2 VAE (z_dim 48, 16x spatial, a different block layout), which is not supported: "
                "Wan2.1-family models (and LibraGen) use the Wan2.1 VAE, wan_2.1_vae.safetensors")
    if "decoder.middle.0.residual.0.gamma" in keys or "encoder.conv1.weight" in keys:
        return "a Wan2.1 VAE"
    if has(r"lora_[AB]\.|lora_(up|down)\.|^lora_unet_"):
        return "a LoRA, not a VAE"
    if has(r"(^|\.)blocks\.\d+\.self_attn\.") or has(r"(^|\.)patch_embedding\."):
        return ("a Wan DiT (diffusion model), not a VAE: load it as the model and pick the VAE file "
                "(wan_2.1_vae.safetensors) here")
    if has(r"^encoder\.conv_in\.") and has(r"^decoder\.up_blocks\."):
        return ("a diffusers-format VAE (e.g. AutoencoderKLWan); use ComfyUI's repackaged "
                "wan_2.1_vae.safetensors instead")
    if has(r"^(encoder|decoder)\.conv_in\.") or has(r"^encoder\.down\.\d+\.block\."):
        return "an image VAE of another family (SD/SDXL/Flux style), not the Wan2.1 video VAE"
    if has(r"^(encoder\.)?block\.\d+\.layer\.") or "shared.weight" in keys:
        return "a T5 text encoder, not a VAE"
    if has(r"^model\.diffusion_model\.") or has(r"^first_stage_model\.") or has(r"^conditioner\."):
        return "a full checkpoint bundling several models; extract the VAE into its own file"
    return "not a model family this loader recognises"


def _indices(keys, prefix: str) -> list[int]:
    rx = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def detect_vae_config(shapes: dict[str, tuple[int, ...]], stats: tuple | None = None):
    """VAEConfig from {key: shape} of a Wan2.1 VAE (raises CheckpointError if it is not one)."""
    from .wan_vae import VAEConfig

    try:
        dim = shapes["encoder.conv1.weight"][0]
        z_dim = shapes["conv2.weight"][0]
        mults, temporal, blocks_per_level, count = [], [], [], 0
        for i in _indices(shapes, "encoder.downsamples."):
            p = f"encoder.downsamples.{i}."
            if p + "residual.0.gamma" in shapes:
                out = shapes[p + "residual.6.weight"][0]
                if count == 0:
                    mults.append(out // dim)
                count += 1
            elif p + "resample.1.weight" in shapes:
                temporal.append(p + "time_conv.weight" in shapes)
                blocks_per_level.append(count)
                count = 0
            else:
                raise KeyError(p)
        blocks_per_level.append(count)
    except (KeyError, IndexError) as e:
        raise CheckpointError(f"cannot read the VAE layout (missing {e})") from e
    if len(set(blocks_per_level)) != 1 or not mults:
        raise CheckpointError(f"irregular encoder layout: residual blocks per level {blocks_per_level}")
    mean, std = stats if stats is not None else (None, None)
    return VAEConfig(dim=dim, z_dim=z_dim, dim_mult=tuple(mults), num_res_blocks=blocks_per_level[0],
                     temperal_downsample=tuple(temporal), latents_mean=mean, latents_std=std)


def _listing(names: list[str], n: int = 5) -> str:
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def load_vae(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """Load a Wan2.1-layout VAE from a .safetensors file, strictly (every key, every shape).

    Accepts bare keys or a `first_stage_model.` / `vae.` prefix. Latent statistics come from the
    file when it has them (files written by save_vae), else the published Wan2.1 ones.
    """
    from .wan_vae import WanVAE

    path = Path(path)
    header, _ = read_header(path)
    prefix = _strip_prefix(list(header))
    shapes = {k[len(prefix):]: tuple(v["shape"]) for k, v in header.items()}
    family = describe_family(shapes)
    if family != "a Wan2.1 VAE":
        raise CheckpointError(f"{path.name} is not a Wan2.1 VAE: it looks like {family}. "
                              f"First keys: {_listing(sorted(shapes))}")
    try:
        config = detect_vae_config(shapes)
    except CheckpointError as e:
        raise CheckpointError(f"{path.name} looks like a Wan2.1 VAE but {e}; the file is damaged or "
                              "from another model") from e

    sd = {k[len(prefix):]: v for k, v in load_state_dict(path).items()}
    stats = [sd.pop(k, None) for k in STATS_KEYS]
    with torch.device("meta"):
        model = WanVAE(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = sorted(k for k in set(expected) & set(sd) if tuple(sd[k].shape) != expected[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        if wrong:
            parts.append("wrong shapes: " + _listing([f"{k} {tuple(sd[k].shape)} != {expected[k]}" for k in wrong]))
        raise CheckpointError(
            f"{path.name} looks like a Wan2.1 VAE (dim {config.dim}, z_dim {config.z_dim}) but does not match "
            f"that layout; {'; '.join(parts)}. The file is damaged or comes from a modified model."
        )
    model.load_state_dict(sd, strict=True, assign=True)
    if all(s is not None for s in stats):
        try:
            model.set_latent_stats(stats[0].float(), stats[1].float())
        except Exception as e:
            raise CheckpointError(f"{path.name} has unusable latent statistics: {e}") from e
    else:
        mean, std = config.stats()
        model.set_latent_stats(mean, std)
    model.latent_stats_from_file = all(s is not None for s in stats)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def save_vae(vae, path: str | os.PathLike) -> Path:
    """Write the weights (Wan2.1 key names) plus our latent statistics, atomically.

    The extra `latents_mean` / `latents_std` tensors let a trained small VAE carry its own
    normalization; ComfyUI ignores unknown keys when it loads the file (strict=False).
    """
    tensors = {k: v.detach().cpu() for k, v in vae.state_dict().items()}
    tensors["latents_mean"] = vae.latents_mean.detach().float().flatten().cpu()
    tensors["latents_std"] = vae.latents_std.detach().float().flatten().cpu()
    cfg = vae.config
    meta = {"format": _FORMAT, "config": json.dumps({
        "dim": cfg.dim, "z_dim": cfg.z_dim, "dim_mult": list(cfg.dim_mult),
        "num_res_blocks": cfg.num_res_blocks, "temperal_downsample": list(cfg.temperal_downsample)})}
    return save_state_dict(tensors, path, metadata=meta)
