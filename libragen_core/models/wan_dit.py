"""Wan2.1-layout video diffusion transformer.

Module names are the checkpoint keys of Wan2.1 T2V files (and of Phantom-Wan, which keeps that
layout), so those files load with strict key checking. The model predicts the flow-matching
velocity v = eps - x0 for latents x [B, C, F, H, W] at timestep t = sigma * 1000.

Reference (subject) latent frames are simply more frames on the time axis; their temporal RoPE
positions come from `frame_pos`, so the caller decides where they sit (F, F+1, ... by default
in the sampler, shifted for Consis-DPO).

Precision: weights may be bf16/fp16; the timestep embedding and the adaLN modulation vectors
are always computed in fp32 (as the official Wan code does), and cast to the activation dtype
only where they meet activations.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError, InputError
from .rope import apply_rope, rope_axes_dims, rope_frequencies


@dataclass(frozen=True)
class WanDiTConfig:
    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True
    rope_theta: float = 10000.0
    # Not in any Wan file: the mean of the real text tokens, embedded, is added to the timestep
    # embedding, so the caption also sets every block's adaLN scale, shift and gates (the input
    # of self-attention's q and k), not only what cross-attention adds to the tokens. An option of
    # the small embedded model (issue 21); keys pooled_text_embedding.0/2.
    pooled_text: bool = False

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        for name in ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim", "text_dim", "freq_dim"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"WanDiTConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if len(self.patch_size) != 3 or min(self.patch_size) <= 0:
            raise ConfigError(f"WanDiTConfig.patch_size must be three positive integers, got {self.patch_size!r}")
        if self.dim % self.num_heads:
            raise ConfigError(f"WanDiTConfig: dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.freq_dim % 2:
            raise ConfigError(f"WanDiTConfig.freq_dim must be even, got {self.freq_dim}")
        if self.head_dim % 2 or min(rope_axes_dims(self.head_dim)) <= 0:
            raise ConfigError(
                f"WanDiTConfig: head_dim {self.head_dim} (dim / num_heads) is too small or odd for 3D RoPE; "
                "use an even head_dim of at least 6 (Wan uses 128)"
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> WanDiTConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown WanDiTConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**d)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of t (fp32), frequencies 10000**(-i / (dim/2))."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _linear_fp32(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if layer.weight.dtype == torch.float32:
        return layer(x)
    bias = None if layer.bias is None else layer.bias.float()
    return F.linear(x, layer.weight.float(), bias)


def _modulate(normed: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # shift/scale are fp32; with fp32 activations this is one fused op and no cast.
    return torch.addcmul(shift, normed, 1 + scale).to(normed.dtype)


def _gated_add(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(x, y, gate).to(x.dtype)


class WanSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float, rope: bool):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.eps = eps
        self.use_rope = rope
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        # RMSNorm over the full projection (all heads together), as Wan does.
        self.norm_q = nn.RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()
        self.norm_k = nn.RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(*t.shape[:2], self.num_heads, self.head_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                freqs: torch.Tensor | None = None, key_bias: torch.Tensor | None = None) -> torch.Tensor:
        src = x if context is None else context
        q = self._heads(self.norm_q(self.q(x)))
        k = self._heads(self.norm_k(self.k(src)))
        v = self._heads(self.v(src))
        if freqs is not None:
            q = apply_rope(q, freqs)
            k = apply_rope(k, freqs)
        if key_bias is not None:
            key_bias = key_bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=key_bias)
        return self.o(out.transpose(1, 2).reshape(*x.shape[:2], -1))


class WanAttentionBlock(nn.Module):
    def __init__(self, cfg: WanDiTConfig):
        super().__init__()
        dim = cfg.dim
        self.eps = cfg.eps
        self.self_attn = WanSelfAttention(dim, cfg.num_heads, cfg.qk_norm, cfg.eps, rope=True)
        self.norm3 = nn.LayerNorm(dim, eps=cfg.eps) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = WanSelfAttention(dim, cfg.num_heads, cfg.qk_norm, cfg.eps, rope=False)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.empty(1, 6, dim))

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], eps=self.eps)

    def forward(self, x: torch.Tensor, e0: torch.Tensor, freqs: torch.Tensor, context: torch.Tensor,
                context_bias: torch.Tensor | None = None) -> torch.Tensor:
        # e0: [B, 6, dim] fp32 timestep projection; the sum stays fp32.
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation.float() + e0).unsqueeze(2).unbind(1)
        y = self.self_attn(_modulate(self._norm(x), shift1, scale1), freqs=freqs)
        x = _gated_add(x, y, gate1)
        x = x + self.cross_attn(self.norm3(x), context=context, key_bias=context_bias)
        y = self.ffn(_modulate(self._norm(x), shift2, scale2))
        return _gated_add(x, y, gate2)


class WanHead(nn.Module):
    def __init__(self, cfg: WanDiTConfig):
        super().__init__()
        self.eps = cfg.eps
        self.head = nn.Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim)
        self.modulation = nn.Parameter(torch.empty(1, 2, cfg.dim))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation.float() + e[:, None]).unsqueeze(2).unbind(1)
        return self.head(_modulate(F.layer_norm(x, x.shape[-1:], eps=self.eps), shift, scale))


class WanDiT(nn.Module):
    """Wan2.1 T2V diffusion transformer; see the module docstring for conventions."""

    def __init__(self, config: WanDiTConfig):
        super().__init__()
        self.config = config
        self.gradient_checkpointing = False
        c = config
        self.patch_embedding = nn.Conv3d(c.in_dim, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(c.text_dim, c.dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(c.dim, c.dim))
        self.time_embedding = nn.Sequential(nn.Linear(c.freq_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(c.dim, c.dim * 6))
        if c.pooled_text:
            self.pooled_text_embedding = nn.Sequential(nn.Linear(c.text_dim, c.dim), nn.SiLU(),
                                                       nn.Linear(c.dim, c.dim))
        self.blocks = nn.ModuleList([WanAttentionBlock(c) for _ in range(c.num_layers)])
        self.head = WanHead(c)
        if self.patch_embedding.weight.device.type != "meta":
            self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Random init for training from scratch and tests.

        Follows Wan (xavier linears, zero biases, N(0, 0.02) embeddings), except that the output
        head is small-random rather than zero, so a freshly built model gives non-trivial outputs.
        """
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.RMSNorm)) and m.weight is not None:
                nn.init.ones_(m.weight)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        nn.init.zeros_(self.patch_embedding.bias)
        for seq in (self.text_embedding, self.time_embedding):
            for m in seq:
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
        for blk in self.blocks:
            blk.modulation.normal_(std=self.config.dim ** -0.5)
        self.head.modulation.normal_(std=self.config.dim ** -0.5)
        nn.init.normal_(self.head.head.weight, std=0.02)
        if self.config.pooled_text:  # starts as the model without it
            nn.init.zeros_(self.pooled_text_embedding[2].weight)

    def _pooled_text(self, context: torch.Tensor) -> torch.Tensor:
        """[B, dim] fp32: the embedded mean of each prompt's real (non-zero) text tokens."""
        real = (context != 0).any(dim=-1, keepdim=True).float()
        pooled = (context.float() * real).sum(1) / real.sum(1).clamp_min(1.0)
        mlp = self.pooled_text_embedding
        return _linear_fp32(mlp[2], F.silu(_linear_fp32(mlp[0], pooled)))

    # -- patches ---------------------------------------------------------------------------------
    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        # Conv3d with kernel == stride is a linear map on non-overlapping patches; as a matmul it
        # lands directly in [B, L, dim] token order, without the strided flatten/transpose copy.
        b, c, f, h, w = x.shape
        pt, ph, pw = self.config.patch_size
        patches = (x.reshape(b, c, f // pt, pt, h // ph, ph, w // pw, pw)
                   .permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, -1, c * pt * ph * pw))
        w_ = self.patch_embedding.weight
        return F.linear(patches, w_.reshape(w_.shape[0], -1), self.patch_embedding.bias)

    def _unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        b = tokens.shape[0]
        pt, ph, pw = self.config.patch_size
        f, h, w = grid
        u = tokens.view(b, f, h, w, pt, ph, pw, self.config.out_dim)
        return u.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, self.config.out_dim, f * pt, h * ph, w * pw)

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                frame_pos: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity for latents x [B, in_dim, F, H, W] at timesteps t [B] (= sigma * 1000).

        context: [B, L, text_dim] text features (already zero-padded by the text encoder).
        frame_pos: temporal RoPE positions per latent frame, None (0..F-1), [F] or [B, F];
        fractional values are allowed. Returns [B, out_dim, F, H, W] in x's dtype.
        """
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_dim:
            raise InputError(f"WanDiT expects latents [B, {cfg.in_dim}, F, H, W], got shape {tuple(x.shape)}")
        b, _, f, h, w = x.shape
        if context.ndim != 3 or context.shape[-1] != cfg.text_dim:
            raise InputError(f"WanDiT expects text features [B, L, {cfg.text_dim}], got shape {tuple(context.shape)}")
        out_dtype = x.dtype
        wdtype = self.patch_embedding.weight.dtype
        pt, ph, pw = cfg.patch_size
        pad = (0, (-w) % pw, 0, (-h) % ph, 0, (-f) % pt)
        if any(pad):
            # Wan / ComfyUI pad circularly to a whole number of patches and crop afterwards.
            x = F.pad(x, pad, mode="circular")
        grid = (x.shape[2] // pt, x.shape[3] // ph, x.shape[4] // pw)

        t = torch.as_tensor(t, device=x.device).reshape(-1)
        if t.numel() == 1 and b > 1:
            t = t.expand(b)
        if t.numel() != b:
            raise InputError(f"WanDiT got {t.numel()} timesteps for a batch of {b}")
        if context.shape[0] == 1 and b > 1:
            context = context.expand(b, -1, -1)
        elif context.shape[0] != b:
            raise InputError(f"WanDiT got text features for batch {context.shape[0]}, latents for batch {b}")

        if frame_pos is None:
            frame_pos = torch.arange(grid[0], device=x.device)
        frame_pos = torch.as_tensor(frame_pos, device=x.device)
        if frame_pos.ndim not in (1, 2) or frame_pos.shape[-1] != grid[0] or (
                frame_pos.ndim == 2 and frame_pos.shape[0] not in (1, b)):
            raise InputError(
                f"frame_pos must have shape [{grid[0]}] or [{b}, {grid[0]}] (one position per latent frame), "
                f"got {tuple(frame_pos.shape)}"
            )
        freqs = rope_frequencies(frame_pos, grid[1], grid[2], cfg.head_dim, cfg.rope_theta)

        tokens = self._patchify(x.to(wdtype))
        e = _linear_fp32(self.time_embedding[2], F.silu(
            _linear_fp32(self.time_embedding[0], timestep_embedding(t, cfg.freq_dim))))
        if cfg.pooled_text:
            e = e + self._pooled_text(context)
        e0 = _linear_fp32(self.time_projection[1], F.silu(e)).unflatten(1, (6, cfg.dim))
        context, ctx_bias = compact_padding(context)
        ctx = self.text_embedding(context.to(self.text_embedding[0].weight.dtype))

        use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if use_ckpt:
                tokens = checkpoint(block, tokens, e0, freqs, ctx, ctx_bias, use_reentrant=False)
            else:
                tokens = block(tokens, e0, freqs, ctx, ctx_bias)
        out = self._unpatchify(self.head(tokens, e), grid)
        if any(pad):
            out = out[:, :, :f, :h, :w]
        return out.to(out_dtype)


def compact_padding(context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Drop duplicate all-zero text tokens, keeping attention exactly the same.

    Every all-zero row of the text features embeds to the same key and value, so n of them act in
    softmax attention like one such key whose logit is raised by log(n). The text encoder pads to
    512 tokens while prompts use a few dozen, so this removes most of the text-embedding and
    cross-attention work. Returns (context with real tokens first and at most one zero row per
    item, additive key bias [B, 1, 1, L'] or None when nothing was dropped).
    """
    b, n = context.shape[:2]
    is_pad = (context == 0).all(dim=-1)
    n_pad = is_pad.sum(dim=1)
    keep = int((n - n_pad).max()) + 1
    if keep >= n:
        return context, None
    order = torch.sort(is_pad.to(torch.uint8), dim=1, stable=True).indices[:, :keep]  # real tokens first
    compact = context.gather(1, order[..., None].expand(b, keep, context.shape[-1]))
    slot = torch.arange(keep, device=context.device)[None]
    n_real = (n - n_pad)[:, None]
    bias = torch.zeros(b, keep, device=context.device, dtype=torch.float32)
    bias = torch.where(slot > n_real, float("-inf"), bias)
    # keep < n implies every item has at least one zero row, found at slot n_real after the sort
    bias = torch.where(slot == n_real, torch.log(n_pad.float())[:, None], bias)
    return compact, bias[:, None, None, :]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
