"""An adversarial term for the VAE stage: a small per-frame patch discriminator with hinge losses.

Why: with L1 + L2 + gradient losses the small VAE averages whatever its latents leave uncertain
into blur (a moving sprite between two key frames smears; docs/vae.md). Wan's own VAE, like most
image and video autoencoders, adds an adversarial loss for sharpness (Wan report, section 3.1).

The VAE stage keeps one optimizer and one backward per step: the discriminator's parameters sit
in the same AdamW, and the generator term runs the discriminator with its parameters detached
(torch.func.functional_call), so that term moves only the VAE, while the discriminator's own
hinge loss sees the reconstruction detached, so it moves only the discriminator.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class PatchDiscriminator(nn.Module):
    """Real/fake logits for overlapping ~22-pixel patches of every frame of [B, 3, T, H, W]."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, dim, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(dim, 2 * dim, 4, stride=2, padding=1),
            nn.GroupNorm(8, 2 * dim),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * dim, 2 * dim, 3, padding=1),
            nn.GroupNorm(8, 2 * dim),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * dim, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        return self.net(x.transpose(1, 2).reshape(b * t, c, h, w))


def adversarial_losses(disc: nn.Module, disc_forward: nn.Module, real: torch.Tensor,
                       fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(generator loss, discriminator loss) for one batch.

    disc: the discriminator module; disc_forward: what runs its training pass (the DDP-wrapped
    module under several processes, so its gradients are synced; else disc itself)."""
    frozen = {k: v.detach() for k, v in disc.named_parameters()}
    g_loss = -torch.func.functional_call(disc, frozen, (fake,)).mean()
    logits = disc_forward(torch.cat([real, fake.detach()]))
    real_logits, fake_logits = logits.chunk(2)
    d_loss = F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return g_loss, d_loss
