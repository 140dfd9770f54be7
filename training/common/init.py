"""Initialisation for training a WanDiT from scratch (adaLN-Zero, as in the DiT paper).

WanDiT.init_weights stays as it is (its layout must match real checkpoints, and tests rely on a
fresh model giving non-trivial outputs). For training from scratch we re-initialise a fresh model
so that every block starts as the identity: the residual gates of self-attention and the FFN are
zero (their modulation offsets and the matching rows of time_projection), the cross-attention
output projection is zero (it has no gate in Wan's block) and the output head is zero, so the
initial velocity is 0 and gradients reach every block through clean residual paths.

The text and time embedding MLPs get Xavier weights instead of the release's N(0, 0.02): from
256-wide features those give a context of std ~0.02, so the cross-attention values are ~50x
smaller than the video tokens (and the time embedding barely moves the modulation). With the
output projection at zero too, the text path starts at a saddle (each factor's gradient is
proportional to the other) and a from-scratch run ignored its captions for 1,400 steps
(docs/training.md). Fine-tuning a released model never calls this.
"""
from __future__ import annotations

import torch

from libragen_core.models.wan_dit import WanDiT

# positions inside a block's 6 modulation vectors: shift1, scale1, gate1, shift2, scale2, gate2
_GATES = (2, 5)


@torch.no_grad()
def adaln_zero_init(model: WanDiT, zero_cross_attn: bool = True) -> WanDiT:
    """zero_cross_attn=False keeps the cross-attention output random, so text reaches the tokens
    from the first step instead of after the output projection has grown from zero."""
    dim = model.config.dim
    proj = model.time_projection[1]
    for g in _GATES:
        proj.weight[g * dim:(g + 1) * dim].zero_()
        proj.bias[g * dim:(g + 1) * dim].zero_()
    for blk in model.blocks:
        blk.modulation.zero_()
        if zero_cross_attn:
            torch.nn.init.zeros_(blk.cross_attn.o.weight)
            torch.nn.init.zeros_(blk.cross_attn.o.bias)
    for m in (*model.text_embedding, *model.time_embedding):
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(m.weight)
            torch.nn.init.zeros_(m.bias)
    if model.config.pooled_text:  # Xavier in, zero out: the caption's mean joins the modulation from zero
        torch.nn.init.xavier_uniform_(model.pooled_text_embedding[0].weight)
        torch.nn.init.zeros_(model.pooled_text_embedding[0].bias)
        torch.nn.init.zeros_(model.pooled_text_embedding[2].weight)
        torch.nn.init.zeros_(model.pooled_text_embedding[2].bias)
    model.head.modulation.zero_()
    torch.nn.init.zeros_(model.head.head.weight)
    torch.nn.init.zeros_(model.head.head.bias)
    return model
