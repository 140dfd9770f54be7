"""Flow-DPO on the flow-matching error with subject injection (docs/method.md section 4), and the condition
dropout of SFT (docs/method.md section 3). The per-pair error is training/common/losses.flow_matching_loss:
references appended after the video frames, the loss on the video frames only.

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

from libragen_core.errors import ConfigError, InputError
from libragen_core.lora import disable_adapter

from .common.losses import flow_matching_loss


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

    def errors(x0: torch.Tensor) -> torch.Tensor:  # [B]: each pair's flow-matching error
        return flow_matching_loss(model, x0, batch.context, sigma, eps, refs=batch.refs, reduce=False)

    with torch.no_grad(), disable_adapter(model):
        l_ref_w = errors(batch.winner)
        l_ref_l = errors(batch.loser)
    if split:
        with torch.no_grad():
            l_pol_l = errors(batch.loser)
        # the winner's forward is the one that keeps its graph: its values give inside exactly
        l_pol_w = errors(batch.winner)
        inside = flow_dpo_inside(l_pol_w.detach(), l_ref_w, l_pol_l, l_ref_l, beta)
        g_w, g_l = split_weights(inside, beta, sft_weight)
        (g_w * l_pol_w).sum().backward()
        l_pol_w = l_pol_w.detach()
        (g_l * errors(batch.loser)).sum().backward()
        loss = -F.logsigmoid(inside).mean() + sft_weight * l_pol_w.mean()
    else:
        l_pol_w = errors(batch.winner)
        l_pol_l = errors(batch.loser)
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
