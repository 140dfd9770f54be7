"""A fixed, untrained stand-in for the VAE, for diagnosing the DiT alone ([base] vae = "pool").

It maps 64x64x17 clips to the same latent shape as the small VAE (16 x 5 x 8 x 8): latent frame
t holds pixel frame 4t, average-pooled 4x4 and folded 2x2 into 12 channels (RGB x 2 x 2), plus 4
zero channels. Decoding unfolds and upsamples, so generated clips are 16x16 pictures enlarged:
position, colour and motion are all visible to the motion check. It separates "the DiT cannot
learn motion/colour from text" from "the VAE is not good enough yet"; it is never exported.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class _Cfg:
    z_dim = 16
    time_factor = 4
    space_factor = 8


class PoolCodec:
    config = _Cfg()
    scale = 2.0  # pooled pixels are in [-1, 1] with std ~0.5: bring them to roughly unit std

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        return (frames - 1) // 4 + 1, height // 8, width // 8

    def encode(self, x: torch.Tensor, **_) -> torch.Tensor:
        b, c, f, h, w = x.shape
        key = x[:, :, ::4]  # [B, 3, (f-1)/4+1, H, W]
        t = key.shape[2]
        pooled = F.avg_pool2d(key.transpose(1, 2).reshape(b * t, c, h, w), 4)  # [BT, 3, H/4, W/4]
        folded = F.pixel_unshuffle(pooled, 2)  # [BT, 12, H/8, W/8]
        z = torch.cat([folded, folded.new_zeros(b * t, 4, h // 8, w // 8)], 1)
        return z.reshape(b, t, 16, h // 8, w // 8).transpose(1, 2) * self.scale

    def decode(self, z: torch.Tensor, **_) -> torch.Tensor:
        b, _, t, h, w = z.shape
        folded = (z[:, :12] / self.scale).transpose(1, 2).reshape(b * t, 12, h, w)
        img = F.interpolate(F.pixel_shuffle(folded, 2), scale_factor=4, mode="nearest")  # [BT, 3, 8h, 8w]
        img = img.reshape(b, t, 3, 8 * h, 8 * w).transpose(1, 2)
        frames = torch.cat([img[:, :, :1], img[:, :, 1:].repeat_interleave(4, dim=2)], 2)
        return frames.clamp(-1, 1)
