"""Spatial tiling for the video VAE: overlapping tiles, blended with linear ramps.

Large frames are split into tiles that each go through the (causal, streamed) VAE on their own,
so peak memory follows the tile size instead of the frame size. Decoding tiles the LATENT (each
latent tile decodes to a pixel tile 8x larger) and blends in pixel space; encoding tiles the
pixels and blends in latent space. Neighbouring tiles overlap; across an overlap the weights ramp
linearly from one tile to the other, and the result is divided by the summed weights, so any
overlap pattern (including the last tile shifted to end at the border) averages correctly.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InputError


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length `tile` covering [0, size); the last one ends at `size`."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    if not starts or starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def axis_weights(starts: list[int], tile: int, size: int, scale: int = 1) -> list[torch.Tensor]:
    """Per-tile 1D weights (length tile*scale): linear ramps across the overlap with each neighbour.

    The ramp (i + 1) / (L + 1) of one tile and (L - i) / (L + 1) of the other sum to 1 at every
    position of an overlap of L samples, so a plain two-tile overlap needs no renormalising.
    """
    n = min(tile, size)
    out = []
    for i, s in enumerate(starts):
        w = torch.ones(n * scale)
        if i > 0:
            lap = (starts[i - 1] + n - s) * scale
            if lap > 0:
                w[:lap] = torch.minimum(w[:lap], torch.arange(1, lap + 1) / (lap + 1))
        if i + 1 < len(starts):
            lap = (s + n - starts[i + 1]) * scale
            if lap > 0:
                w[n * scale - lap:] = torch.minimum(w[n * scale - lap:], torch.arange(lap, 0, -1) / (lap + 1))
        out.append(w)
    return out


def _check(tile: int, overlap: int, unit: str, step: int = 1) -> None:
    if tile < step or tile % step or overlap < 0 or overlap % step:
        raise InputError(f"VAE tile {tile} / overlap {overlap} {unit}: both must be multiples of {step}, "
                         f"tile at least {step} and overlap not negative")
    if overlap * 2 > tile:
        raise InputError(f"VAE tile overlap {overlap} {unit} is more than half the tile ({tile}); "
                         f"use an overlap of at most {tile // 2}")


def _blend(fn: Callable[[torch.Tensor], torch.Tensor], src: torch.Tensor, tile: int, overlap: int,
           scale: int, shrink: int) -> torch.Tensor:
    """Run fn on overlapping spatial tiles of src [B, C, T, H, W] and blend; fn multiplies H, W by
    scale / shrink (tile sizes are given in src pixels)."""
    h, w = src.shape[-2:]
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    wy = axis_weights([y // shrink for y in ys], tile // shrink, h // shrink, scale)
    wx = axis_weights([x // shrink for x in xs], tile // shrink, w // shrink, scale)
    out = total = None
    for y, ry in zip(ys, wy):
        for x, rx in zip(xs, wx):
            piece = fn(src[..., y:y + tile, x:x + tile])
            if out is None:
                oh, ow = h * scale // shrink, w * scale // shrink
                out = torch.zeros(*piece.shape[:-2], oh, ow, dtype=piece.dtype, device=piece.device)
                total = torch.zeros(oh, ow, dtype=torch.float32, device=piece.device)
            weight = (ry[:, None] * rx[None, :]).to(piece.device)
            oy, ox = y * scale // shrink, x * scale // shrink
            ph, pw = piece.shape[-2:]
            out[..., oy:oy + ph, ox:ox + pw] += piece * weight.to(piece.dtype)
            total[oy:oy + ph, ox:ox + pw] += weight
            del piece
    return out.div_(total.to(out.dtype))


def tiled_decode(decode: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, tile: int, overlap: int,
                 config) -> torch.Tensor:
    """Decode latents [B, C, T, h, w] in tiles of `tile` latent pixels overlapping by `overlap`."""
    _check(tile, overlap, "latent pixels")
    return _blend(decode, z, tile, overlap, config.space_factor, 1)


def tiled_encode(encode: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int,
                 config) -> torch.Tensor:
    """Encode pixels [B, 3, F, H, W] in tiles of `tile` pixels overlapping by `overlap` (multiples of 8)."""
    s = config.space_factor
    _check(tile, overlap, "pixels", s)
    return _blend(encode, x, tile, overlap, 1, s)
