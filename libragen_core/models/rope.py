"""3D rotary position embedding as used by Wan2.1 video DiTs.

Each attention head of size d is split into three groups of channel pairs: time gets
d - 4*(d//6) channels, height and width get 2*(d//6) each (for d = 128: 44, 42, 42). Channel
pairs (2i, 2i+1) are rotated as complex numbers by angle position * theta**(-2i/axis_dim).

Angles are computed from the frequencies for the exact positions asked for (no lookup table),
so fractional temporal positions work; Consis-DPO shifts reference frames by arbitrary offsets.
"""
from __future__ import annotations

import torch


def rope_axes_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels per axis (time, height, width) for one attention head."""
    third = head_dim // 6
    return head_dim - 4 * third, 2 * third, 2 * third


def _axis_frequencies(axis_dim: int, theta: float, device, dtype) -> torch.Tensor:
    return theta ** (-torch.arange(0, axis_dim, 2, device=device, dtype=dtype) / axis_dim)


def _angle_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps angles exact for long videos; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def rope_frequencies(frame_pos: torch.Tensor, height: int, width: int, head_dim: int,
                     theta: float = 10000.0) -> torch.Tensor:
    """Complex rotations for a (frames x height x width) token grid, flattened time-major.

    frame_pos: [F] or [B, F] temporal positions (any float). Returns complex64 of shape
    [B or 1, F*height*width, 1, head_dim // 2], ready to broadcast over heads of a
    [B, L, heads, head_dim // 2] complex view of queries or keys.
    """
    device = frame_pos.device
    adt = _angle_dtype(device)
    if frame_pos.ndim == 1:
        frame_pos = frame_pos[None]
    pos_t = frame_pos.to(adt)
    b, f = pos_t.shape
    dt, dh, dw = rope_axes_dims(head_dim)
    ang_t = pos_t[..., None] * _axis_frequencies(dt, theta, device, adt)  # [b, f, dt/2]
    ang_h = torch.arange(height, device=device, dtype=adt)[:, None] * _axis_frequencies(dh, theta, device, adt)
    ang_w = torch.arange(width, device=device, dtype=adt)[:, None] * _axis_frequencies(dw, theta, device, adt)
    angles = torch.cat([
        ang_t[:, :, None, None, :].expand(b, f, height, width, -1),
        ang_h[None, None, :, None, :].expand(b, f, height, width, -1),
        ang_w[None, None, None, :, :].expand(b, f, height, width, -1),
    ], dim=-1).reshape(b, f * height * width, 1, head_dim // 2)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, L, heads, head_dim] by freqs from rope_frequencies; the math runs in fp32."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs).flatten(-2).to(x.dtype)
