"""Cheap sampling previews: a linear map from latent channels to RGB, fitted to the model's VAE.

Any VAE works, with no table to ship: a few fixed colour images are encoded once, and a
least-squares fit maps each normalized latent pixel (plus a bias) to the mean colour of the
pixel block it covers. Decoding the preview is then one small matrix product per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from libragen_core.models.wan_vae import WanVAE

_PROBES = 8
_PROBE_SIZE = 8  # latent pixels per side of a probe image


@dataclass(frozen=True)
class LatentRGB:
    weight: torch.Tensor  # [C, 3]
    bias: torch.Tensor  # [3]
    space_factor: int

    def __call__(self, latent_frame: torch.Tensor) -> torch.Tensor:
        """[C, h, w] normalized latents -> [h, w, 3] float RGB in 0..1."""
        x = latent_frame.detach().float().cpu().permute(1, 2, 0)
        return (x @ self.weight + self.bias).clamp(0.0, 1.0)

    def image(self, latents: torch.Tensor, upscale: bool = True) -> Image.Image:
        """The middle latent frame of [B, C, F, h, w] (first sample) as a PIL image."""
        frame = latents[0, :, latents.shape[2] // 2]
        rgb = (self(frame).numpy() * 255.0 + 0.5).astype(np.uint8)
        img = Image.fromarray(rgb)
        if upscale:
            img = img.resize((img.width * self.space_factor, img.height * self.space_factor), Image.NEAREST)
        return img


def probe_images(space_factor: int, count: int = _PROBES) -> torch.Tensor:
    """[count, 3, H, W] in 0..1: smooth random colour fields and flat colours, from a fixed seed."""
    g = torch.Generator().manual_seed(1234)
    size = _PROBE_SIZE * space_factor
    coarse = torch.rand((count, 3, 3, 3), generator=g)
    images = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=True)
    flat = torch.rand((count // 2, 3, 1, 1), generator=g).expand(-1, -1, size, size)
    images[: count // 2] = flat
    return images


@torch.no_grad()
def fit_latent_rgb(vae: WanVAE) -> LatentRGB:
    """Least-squares latent -> RGB map for this VAE (runs one small encode on the VAE's device)."""
    factor = vae.config.space_factor
    images = probe_images(factor)
    device = next(vae.parameters()).device
    dtype = next(vae.parameters()).dtype
    z = vae.encode((images * 2.0 - 1.0).unsqueeze(2).to(device=device, dtype=dtype)).float().cpu()[:, :, 0]
    target = F.avg_pool2d(images, factor)  # [n, 3, h, w]: the colour each latent pixel covers
    x = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    y = target.permute(0, 2, 3, 1).reshape(-1, 3)
    x1 = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1).double()
    solution = torch.linalg.lstsq(x1, y.double()).solution.float()
    return LatentRGB(weight=solution[:-1].contiguous(), bias=solution[-1].contiguous(), space_factor=factor)
