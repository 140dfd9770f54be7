"""Reference images -> the pixel tensors that the VAE encodes as extra latent frames.

Phantom-style preprocessing (docs/method.md section 1): each reference keeps its aspect ratio, is
resized to fit inside the video frame and padded with WHITE, centred; transparency is composited
on white. White matters: the model was trained with white surroundings, so any other fill reads
as part of the subject. An optional subject mask whites out everything else before resizing.

Accepted images: PIL images (any mode), numpy arrays (HW or HWC uint8, or float in 0..1), torch
tensors in ComfyUI's IMAGE layout ([H, W, C] or a batch [B, H, W, C], float in 0..1), and paths.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InputError
from ..io.images import load_image, to_rgb_or_rgba

MAX_REFERENCES = 4

# Values a hair outside 0..1 come from upstream resampling; anything further out is a wrong range.
_RANGE_SLACK = 0.02


@dataclass(frozen=True)
class Placement:
    """Where one reference landed in the frame, in frame pixels (left/top inclusive)."""

    left: int
    top: int
    width: int
    height: int
    source_width: int
    source_height: int
    frame_width: int
    frame_height: int
    # Bounding box of the subject mask in frame pixels (x0, y0, x1, y1, exclusive ends), if a mask was given.
    subject_box: tuple[float, float, float, float] | None = None

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the resized image inside the frame, ends exclusive."""
        return (self.left, self.top, self.left + self.width, self.top + self.height)

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) factors from source pixels to frame pixels (equal up to rounding)."""
        return (self.width / self.source_width, self.height / self.source_height)

    def map_box(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        """Map (x0, y0, x1, y1) in source-image pixels to frame pixels."""
        sx, sy = self.scale
        x0, y0, x1, y1 = (float(v) for v in box)
        return (self.left + x0 * sx, self.top + y0 * sy, self.left + x1 * sx, self.top + y1 * sy)


def fit_inside(source_width: int, source_height: int, frame_width: int, frame_height: int) -> Placement:
    """The largest aspect-preserving size of the source that fits the frame, centred."""
    if source_width < 1 or source_height < 1:
        raise InputError(f"reference image has no pixels ({source_width}x{source_height})")
    _check_frame(frame_height, frame_width)
    scale = min(frame_width / source_width, frame_height / source_height)
    width = min(frame_width, max(1, round(source_width * scale)))
    height = min(frame_height, max(1, round(source_height * scale)))
    return Placement(
        left=(frame_width - width) // 2,
        top=(frame_height - height) // 2,
        width=width,
        height=height,
        source_width=source_width,
        source_height=source_height,
        frame_width=frame_width,
        frame_height=frame_height,
    )


def prepare_references(images, height: int, width: int, masks=None, device=None) -> torch.Tensor:
    """1 to 4 reference images -> float32 [R, 3, height, width] in [-1, 1], white-padded."""
    return prepare_references_with_placements(images, height, width, masks=masks, device=device)[0]


def prepare_references_with_placements(
    images, height: int, width: int, masks=None, device=None
) -> tuple[torch.Tensor, list[Placement]]:
    """As prepare_references, plus where each image (and its masked subject) landed in the frame."""
    _check_frame(height, width)
    items = _as_image_list(images)
    if not items:
        raise InputError("no reference images were given; pass 1 to 4 images of the subjects")
    if len(items) > MAX_REFERENCES:
        raise InputError(
            f"{len(items)} reference images were given; at most {MAX_REFERENCES} are supported. "
            "Pass fewer images (combine subjects in one image if needed)."
        )
    mask_list = _as_mask_list(masks, len(items))
    out = torch.empty((len(items), 3, height, width), dtype=torch.float32, device=device)
    placements = []
    for i, (item, mask) in enumerate(zip(items, mask_list)):
        rgb, alpha = _to_float_rgb_alpha(item, index=i)
        rgb = rgb.to(device)
        alpha = None if alpha is None else alpha.to(device)
        if mask is not None:
            m = _mask_tensor(mask, index=i, size=(rgb.shape[1], rgb.shape[2])).to(device)
            alpha = m if alpha is None else alpha * m
        if alpha is not None:
            rgb = _composite_on_white(rgb, alpha)
        placement = fit_inside(rgb.shape[2], rgb.shape[1], width, height)
        if mask is not None:
            placement = _with_subject_box(placement, m)
        out[i] = _place(rgb, placement) * 2.0 - 1.0
        placements.append(placement)
    return out, placements


def _check_frame(height: int, width: int) -> None:
    if not (isinstance(height, int) and isinstance(width, int)) or height < 1 or width < 1:
        raise InputError(f"frame size must be positive integers, got height={height!r}, width={width!r}")


def _as_image_list(images) -> list:
    if images is None:
        return []
    if isinstance(images, (Image.Image, str, os.PathLike)):
        return [images]
    if isinstance(images, (torch.Tensor, np.ndarray)):
        return _split_batch(images)
    if isinstance(images, (list, tuple)):
        out = []
        for item in images:
            if isinstance(item, (torch.Tensor, np.ndarray)):
                out.extend(_split_batch(item))
            else:
                out.append(item)
        return out
    raise InputError(
        f"reference images must be PIL images, numpy arrays, torch tensors or file paths, got {type(images).__name__}"
    )


def _split_batch(array) -> list:
    if array.ndim == 4:  # ComfyUI IMAGE batch [B, H, W, C]: every image is one reference
        return [array[i] for i in range(array.shape[0])]
    if array.ndim in (2, 3):
        return [array]
    raise InputError(
        f"a reference image array must be [H, W], [H, W, C] or a batch [B, H, W, C]; got shape {tuple(array.shape)}"
    )


def _to_float_rgb_alpha(item, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Any accepted image -> (float32 [3, H, W] in 0..1, alpha [1, H, W] or None when opaque)."""
    if isinstance(item, (str, os.PathLike)):
        item = load_image(Path(item))
    if isinstance(item, Image.Image):
        pil = to_rgb_or_rgba(item)
        arr = torch.from_numpy(np.asarray(pil).copy()).float() / 255.0
    elif isinstance(item, np.ndarray):
        arr = _array_to_unit(torch.from_numpy(np.ascontiguousarray(item)), index, kind="numpy array")
    elif isinstance(item, torch.Tensor):
        arr = _array_to_unit(item.detach().cpu(), index, kind="tensor")
    else:
        raise InputError(f"reference {index + 1} is a {type(item).__name__}, not an image")
    if arr.ndim == 2:
        arr = arr[..., None]
    channels = arr.shape[-1]
    if channels not in (1, 2, 3, 4):
        raise InputError(
            f"reference {index + 1} has {channels} channels in its last axis; expected [H, W, C] with C = 1 (gray), "
            "2 (gray + alpha), 3 (RGB) or 4 (RGBA), as in ComfyUI's IMAGE"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"reference {index + 1} has no pixels (shape {tuple(arr.shape)})")
    arr = arr.permute(2, 0, 1)
    if channels in (1, 2):
        arr = torch.cat([arr[:1].expand(3, -1, -1), arr[1:]], dim=0)
    if arr.shape[0] == 4:
        return arr[:3].contiguous(), arr[3:].contiguous()
    return arr.contiguous(), None


def _array_to_unit(t: torch.Tensor, index: int, kind: str) -> torch.Tensor:
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    if t.dtype == torch.bool:
        return t.float()
    if not t.is_floating_point():
        raise InputError(f"reference {index + 1} is an integer {kind} of dtype {t.dtype}; pass uint8 (0..255) or float (0..1)")
    t = t.float()
    if t.numel() and not torch.isfinite(t).all():
        raise InputError(f"reference {index + 1} contains NaN or infinite values")
    lo, hi = (float(t.min()), float(t.max())) if t.numel() else (0.0, 0.0)
    if lo < -_RANGE_SLACK or hi > 1.0 + _RANGE_SLACK:
        raise InputError(
            f"reference {index + 1} is a float {kind} with values in [{lo:.3g}, {hi:.3g}]; float images must be in "
            "0..1 (ComfyUI IMAGE). Divide 0..255 data by 255, or map -1..1 data with (x + 1) / 2."
        )
    return t.clamp(0.0, 1.0)


def _as_mask_list(masks, count: int) -> list:
    if masks is None:
        return [None] * count
    if isinstance(masks, (torch.Tensor, np.ndarray)) and masks.ndim == 3 and count > 1:
        masks = [masks[i] for i in range(masks.shape[0])]  # a ComfyUI MASK batch [B, H, W]
    elif not isinstance(masks, (list, tuple)):
        masks = [masks]
    if len(masks) != count:
        raise InputError(f"{len(masks)} masks were given for {count} reference images; give one per image (None for no mask)")
    return list(masks)


def _mask_tensor(mask, index: int, size: tuple[int, int]) -> torch.Tensor:
    """A subject mask (1 = subject, 0 = background) -> float [1, H, W] in 0..1."""
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L"))
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    if not isinstance(mask, torch.Tensor):
        raise InputError(f"mask {index + 1} is a {type(mask).__name__}; pass an [H, W] bool or float array")
    m = mask.detach().cpu()
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise InputError(f"mask {index + 1} must be [H, W]; got shape {tuple(mask.shape)}")
    if tuple(m.shape) != size:
        raise InputError(
            f"mask {index + 1} is {m.shape[1]}x{m.shape[0]} (WxH) but its image is {size[1]}x{size[0]}; "
            "the mask must have the image's size"
        )
    if m.dtype == torch.bool:
        m = m.float()
    elif m.dtype == torch.uint8:
        m = m.float() / 255.0
    else:
        m = m.float()
        if float(m.min()) < -_RANGE_SLACK or float(m.max()) > 1.0 + _RANGE_SLACK:
            raise InputError(f"mask {index + 1} has values outside 0..1; pass a bool mask or floats in 0..1")
        m = m.clamp(0.0, 1.0)
    if m.numel() == 0 or float(m.max()) <= 0.0:
        raise InputError(
            f"mask {index + 1} selects no pixels, which would leave an all-white reference; "
            "check that 1 marks the subject (ComfyUI's LoadImage mask is inverted alpha: use 1 - mask)"
        )
    return m[None]


def _composite_on_white(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return rgb * alpha + (1.0 - alpha)


def _place(rgb: torch.Tensor, p: Placement) -> torch.Tensor:
    if (p.height, p.width) != tuple(rgb.shape[1:]):
        # Antialiasing matters when shrinking a large photo: plain bicubic sampling would alias fine
        # textures (fur, fabric) that the identity depends on.
        rgb = F.interpolate(rgb[None], size=(p.height, p.width), mode="bicubic", antialias=True, align_corners=False)[0]
        rgb = rgb.clamp(0.0, 1.0)
    canvas = torch.ones((3, p.frame_height, p.frame_width), dtype=rgb.dtype, device=rgb.device)
    canvas[:, p.top : p.top + p.height, p.left : p.left + p.width] = rgb
    return canvas


def _with_subject_box(p: Placement, mask: torch.Tensor) -> Placement:
    ys, xs = torch.nonzero(mask[0] > 0.5, as_tuple=True)
    if ys.numel() == 0:
        return p
    src = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return replace(p, subject_box=p.map_box(src))
