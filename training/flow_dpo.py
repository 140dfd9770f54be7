"""Flow-matching training losses with subject injection: the SFT loss and Flow-DPO (METHOD.md 3-4).

Conventions (DESIGN.md): x_t = sigma * eps + (1 - sigma) * x0, target v = eps - x0, model
timestep t = sigma * 1000. Reference latent frames are appended after the video frames on the
time axis with RoPE positions F, F+1, ... (as the sampler does at inference); the loss covers the
video frames only.

Flow-DPO, per pair i (winner w, loser l, same eps and sigma):

    l_m(x) = mean over elements of (v - v_m(x_t))^2                  m = policy, reference
    inside_i = -(beta/2) * [(l_pol_w - l_ref_w) - (l_pol_l - l_ref_l)]
    L = -mean_i log sigmoid(inside_i)       (+ sft_weight * mean_i l_pol_w: Reg-DPO)

Split backward (why the DPO step costs no more memory than an SFT step of the same batch): the
loss couples winner and loser only through the scalar inside_i, and

    dL/dl_pol_w_i = +(beta / 2B) * sigmoid(-inside_i)   (+ sft_weight / B)
    dL/dl_pol_l_i = -(beta / 2B) * sigmoid(-inside_i)

so with inside computed without a graph first, the gradient of L equals the gradient of
sum_i g_w_i * l_pol_w_i plus that of sum_i g_l_i * l_pol_l_i with those weights held constant. Each
of the two is back-propagated on its own: only one half's graph exists at a time.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from libragen_core.conditioning.subjects import append_references, frame_positions, trim_to_video
from libragen_core.errors import ConfigError, InputError
from libragen_core.lora import disable_adapter


def noised(x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, v) for per-sample sigma [B]."""
    s = sigma.reshape(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return s * eps + (1 - s) * x0, eps - x0


def velocity_mse(model: nn.Module, x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor,
                 context: torch.Tensor, refs: torch.Tensor | None = None,
                 frame_pos: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample mean squared velocity error [B] on the video frames.

    x0, eps: [B, C, F, h, w]; sigma: [B]; context: [B, L, D]; refs: [B, C, R, h, w] clean reference
    latent frames (zeros = the null condition) or None; frame_pos: [F + R] positions (default
    0..F+R-1, the sampler's positions with zero offsets).
    """
    if x0.shape != eps.shape:
        raise InputError(f"x0 {tuple(x0.shape)} and eps {tuple(eps.shape)} must have the same shape")
    if sigma.shape != (x0.shape[0],):
        raise InputError(f"sigma must hold one value per sample ({x0.shape[0]}); got shape {tuple(sigma.shape)}")
    frames = x0.shape[2]
    x_t, v = noised(x0, eps, sigma)
    num_refs = 0 if refs is None else refs.shape[2]
    if num_refs:
        x_t = append_references(x_t, refs)
    if frame_pos is None:
        frame_pos = frame_positions(frames, num_refs, device=x0.device)
    out = model(x_t, sigma.to(x0.device, torch.float32) * 1000.0, context, frame_pos=frame_pos)
    out = trim_to_video(out, frames)
    return (out.float() - v.float()).square().flatten(1).mean(1)


def flow_dpo_inside(l_pol_w, l_ref_w, l_pol_l, l_ref_l, beta: float) -> torch.Tensor:
    return -0.5 * beta * ((l_pol_w - l_ref_w) - (l_pol_l - l_ref_l))


def flow_dpo_loss(l_pol_w, l_ref_w, l_pol_l, l_ref_l, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, inside) from per-sample losses [B]; differentiable (the joint form)."""
    inside = flow_dpo_inside(l_pol_w, l_ref_w, l_pol_l, l_ref_l, beta)
    return -F.logsigmoid(inside).mean(), inside


def split_weights(inside: torch.Tensor, beta: float, sft_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Constant per-sample weights (g_w, g_l) whose weighted policy losses have dL's gradient."""
    n = inside.shape[0]
    g = torch.sigmoid(-inside.detach()) * (0.5 * beta / n)
    return g + sft_weight / n, -g


@dataclass
class DPOBatch:
    """One batch of preference pairs sharing references and text per pair."""

    winner: torch.Tensor  # [B, C, F, h, w] clean latents
    loser: torch.Tensor  # [B, C, F, h, w]
    context: torch.Tensor  # [B, L, D]
    refs: torch.Tensor | None = None  # [B, C, R, h, w]

    def __post_init__(self):
        if self.winner.shape != self.loser.shape:
            raise InputError(f"winner {tuple(self.winner.shape)} and loser {tuple(self.loser.shape)} latents "
                             "must have the same shape (same video size per pair)")


@dataclass
class DPOStats:
    loss: float
    accuracy: float  # mean(inside > 0): the implicit reward accuracy
    inside: float  # mean inside (0 while the policy equals the reference)
    sft: float  # mean policy loss on the winners
    l_pol_w: torch.Tensor
    l_ref_w: torch.Tensor
    l_pol_l: torch.Tensor
    l_ref_l: torch.Tensor

    def scalars(self) -> dict[str, float]:
        return {"loss": self.loss, "implicit_acc": self.accuracy, "inside": self.inside, "sft_winner": self.sft,
                "reward_margin": float(((self.l_ref_w - self.l_pol_w) - (self.l_ref_l - self.l_pol_l)).mean())}


def flow_dpo_backward(model: nn.Module, batch: DPOBatch, eps: torch.Tensor, sigma: torch.Tensor, beta: float,
                      sft_weight: float = 0.0, split: bool = True) -> DPOStats:
    """Compute the Flow-DPO loss of one batch and accumulate its gradients into the policy's
    trainable parameters (call optimizer.step() afterwards). The reference is the same model with
    every adapter disabled: fold the SFT LoRA into the base before adding the DPO adapter.

    split=True back-propagates the winner and the loser halves one after the other (peak memory
    of one half); split=False builds one joint graph (the plain form; same gradients). The split
    form runs the loser's policy forward twice (once without a graph, for inside); with LoRA
    dropout > 0 the two passes draw different masks, so keep adapter dropout at 0 for exactness.
    """
    if beta <= 0:
        raise ConfigError(f"dpo beta must be positive (published values span 100 to 5000); got {beta}")
    if sft_weight < 0:
        raise ConfigError(f"dpo sft_weight (Reg-DPO) must be >= 0; got {sft_weight}")
    args = (batch.context, batch.refs)
    with torch.no_grad(), disable_adapter(model):
        l_ref_w = velocity_mse(model, batch.winner, eps, sigma, *args)
        l_ref_l = velocity_mse(model, batch.loser, eps, sigma, *args)
    if split:
        with torch.no_grad():
            l_pol_l = velocity_mse(model, batch.loser, eps, sigma, *args)
        # the winner's forward is the one that keeps its graph: its values give inside exactly
        l_pol_w = velocity_mse(model, batch.winner, eps, sigma, *args)
        inside = flow_dpo_inside(l_pol_w.detach(), l_ref_w, l_pol_l, l_ref_l, beta)
        g_w, g_l = split_weights(inside, beta, sft_weight)
        (g_w * l_pol_w).sum().backward()
        l_pol_w = l_pol_w.detach()
        (g_l * velocity_mse(model, batch.loser, eps, sigma, *args)).sum().backward()
        loss = -F.logsigmoid(inside).mean() + sft_weight * l_pol_w.mean()
    else:
        l_pol_w = velocity_mse(model, batch.winner, eps, sigma, *args)
        l_pol_l = velocity_mse(model, batch.loser, eps, sigma, *args)
        dpo, inside = flow_dpo_loss(l_pol_w, l_ref_w, l_pol_l, l_ref_l, beta)
        loss = dpo + sft_weight * l_pol_w.mean()
        loss.backward()
        l_pol_w, l_pol_l, inside = l_pol_w.detach(), l_pol_l.detach(), inside.detach()
    return DPOStats(loss=float(loss.detach()), accuracy=float((inside > 0).float().mean()), inside=float(inside.mean()),
                    sft=float(l_pol_w.mean()), l_pol_w=l_pol_w, l_ref_w=l_ref_w, l_pol_l=l_pol_l,
                    l_ref_l=l_ref_l)


def condition_dropout(refs: torch.Tensor | None, context: torch.Tensor, null_context: torch.Tensor,
                      p_refs: float, p_text: float, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Drop conditions per sample so the unconditional branches of dynamic CFG get trained.

    A dropped reference set becomes zeros in the same slots and positions (the sampler's null
    condition); dropped text becomes `null_context`, the features of the negative (empty) prompt
    that the sampler's ref-only and null passes use. Returns (refs, context, dropped_refs [B] bool,
    dropped_text [B] bool).
    """
    for name, p in (("ref_dropout", p_refs), ("text_dropout", p_text)):
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"{name} is a probability in [0, 1]; got {p}")
    b = context.shape[0]
    drop_refs = torch.rand(b, generator=generator) < p_refs
    drop_text = torch.rand(b, generator=generator) < p_text
    if refs is not None and bool(drop_refs.any()):
        keep = (~drop_refs).to(refs.device, refs.dtype).reshape(-1, 1, 1, 1, 1)
        refs = refs * keep
    if bool(drop_text.any()):
        null = _pad_like(null_context.to(context.device, context.dtype), context).expand(b, -1, -1)
        length = max(context.shape[1], null.shape[1])
        context = _pad_to(context, length)
        context = torch.where(drop_text.to(context.device).reshape(-1, 1, 1), _pad_to(null, length), context)
    return refs, context, drop_refs, drop_text


def _pad_to(t: torch.Tensor, length: int) -> torch.Tensor:
    return t if t.shape[1] >= length else F.pad(t, (0, 0, 0, length - t.shape[1]))


def _pad_like(null: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    if null.ndim == 2:
        null = null.unsqueeze(0)
    if null.ndim != 3 or null.shape[0] != 1 or null.shape[-1] != context.shape[-1]:
        raise InputError(f"null_context must be [1, L, {context.shape[-1]}] (the empty prompt's features); "
                         f"got {tuple(null.shape)}")
    return null


def sft_loss(model: nn.Module, x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
             refs: torch.Tensor | None = None) -> torch.Tensor:
    """Mean flow-matching loss over the batch with references injected (video frames only)."""
    return velocity_mse(model, x0, eps, sigma, context, refs).mean()
