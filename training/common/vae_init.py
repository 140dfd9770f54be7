"""Training the small Wan-layout VAE from scratch: its initialisation and the image -> video step.

Wan2.1's VAE was trained in stages: first as a 2D image VAE of the same structure, then inflated
to the causal 3D model and trained on short low-resolution clips (Wan report, section 3.1). We
follow that here, for a reason of our own: on this CPU the 3D model trained on whole clips stayed
near the mean-colour level for thousands of steps (docs/training.md), while one frame costs a
seventeenth of a clip and the spatial path is what keeps a subject's colours and patterns.

- `kaiming_init`: PyTorch's default conv init (variance 1/3 of fan-in preserving) shrinks the
  signal at every conv; behind each RMSNorm that leaves the residual branches and the decoder head
  with tiny outputs. Fan-in variance-preserving weights times a gain, zero biases, and the
  attention output projection at zero (as in the release) trained 3 dB further in the same
  1,000 image steps.
- `inflate_image_vae`: after the image phase only the newest time slice of each causal kernel has
  been trained (the older ones always saw the zero padding of a one-frame clip). Zeroing the older
  slices makes every frame go through the image model on its own; the temporal downsampling convs
  become "keep the newest frame" and the upsampling convs "repeat the frame", so the inflated VAE
  starts as key-frame hold: latent frame k encodes frame 4k and decodes to four copies of it.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from libragen_core.models.wan_vae import AttentionBlock, CausalConv3d, Resample, WanVAE


@torch.no_grad()
def kaiming_init(vae: WanVAE, gain: float) -> WanVAE:
    for m in vae.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
            m.weight.mul_(gain)
            nn.init.zeros_(m.bias)
    for m in vae.modules():
        if isinstance(m, AttentionBlock):
            nn.init.zeros_(m.proj.weight)
    return vae


@torch.no_grad()
def inflate_image_vae(vae: WanVAE) -> WanVAE:
    for m in vae.modules():
        if isinstance(m, CausalConv3d) and m.context:
            m.weight[:, :, :-1] = 0
    for m in vae.modules():
        if isinstance(m, Resample) and hasattr(m, "time_conv"):
            w, b = m.time_conv.weight, m.time_conv.bias
            c = w.shape[1]
            w.zero_()
            b.zero_()
            eye = torch.eye(c, dtype=w.dtype, device=w.device)
            for k in range(w.shape[0] // c):  # down: one output (newest frame); up: two (repeat)
                w[k * c:(k + 1) * c, :, -1, 0, 0] = eye
    return vae
