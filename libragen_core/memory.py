"""How much memory a generation stage needs, checked before anything large is allocated.

Every stage that allocates in proportion to the requested size (reference encoding, sampling,
decoding) estimates its peak from the shapes alone, compares it with what the device has free
(with a reserve kept), and refuses with a message naming the size asked for, the estimate, what is
free and the largest size that fits. Per-input limits (frames <= 1025, sizes <= 4096, ...) stay as
they are; this is the check that knows the machine.

The estimates count the tensors alive at each stage's peak, read from the code they describe:

DiT call (one forward of N rows = guidance passes x batch, L tokens, dim D, FFN width F, a bytes
per activation, i.e. the weight dtype; fp8 weights compute in bf16):
    u = N * L * D * a
    FFN phase:        4u + 2 * N * L * F * a     (block input, the self-attention output kept
                                                  until the FFN ends, the residual, the modulated
                                                  input; the FFN hidden and its GELU)
    attention phase:  7u (fp32) or 5u + 3 * (4 / a) * u (bf16 / fp16: the fp32 RoPE temporaries)
    both phases also hold the RoPE table (L * head_dim * 4 bytes) and the text tokens;
    math attention (no flash / memory-efficient kernel) adds the score matrix: 2 * N * heads * L^2 * a;
    bf16 / fp16 weights add an fp32 copy of the timestep projection (6 * D^2 * 4 bytes) at the start.
Sampler around it: 3 copies of the model rows (latents + reference slots) and 4 of the video
latents (state, preview, solver history), fp32.
VAE (Wan2.1 layout, channel width `dim`, b bytes per activation), per output pixel of a frame:
    decode, streamed one latent frame at a time: (44.625 * dim + 13.5) * b   (14 * dim + 3.75 for a
        one-frame latent), plus the decoded video (scaled to 0..1 and to 8 bits in place);
    encode one frame (a reference): (7.5625 * dim + 4) * b per image, plus the white-padded pixels;
    the middle block's attention over one latent frame (hw = latent pixels) runs the math kernel:
        2 * n * hw^2 * b for its scores, while the streams' caches hold (24.875 * dim + 13.5) * b
        per pixel (decode), (7.5 * dim + 3) * b (encode). At 4096 x 4096 the scores alone are
        550 GB: the VAE, not the DiT, limits the largest frame.
These coefficients were read off the real modules with a tracing allocator (tests/memory_probe.py)
and are tested against it at the Wan 1.3B and 14B shapes, and against the measured peak of a CPU
run at small sizes; docs/memory.md has the figures and how close they are.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import InputError

GIB = 1 << 30
# Kept free on top of every estimate: allocator fragmentation, kernel workspaces (matmul packing,
# the attention kernels' per-thread buffers) and whatever else the process or the system holds.
RESERVE_FRACTION = 0.10
RESERVE_BYTES = 256 << 20

# Measured per-pixel coefficients of the Wan2.1-layout VAE (module docstring), in activations.
_DECODE_STREAM = (44.625, 13.5)
_DECODE_FIRST = (14.0, 3.75)
_ENCODE_FRAME = (7.5625, 4.0)
# ... and what the streams' causal caches hold while the middle block's attention runs
_DECODE_CACHE = (24.875, 13.5)
_DECODE_FIRST_CACHE = (0.4375, 0.75)
_ENCODE_CACHE = (7.5, 3.0)
_SAMPLER_ROW_COPIES = 3
_SAMPLER_LATENT_COPIES = 4


class OutOfMemory(InputError):
    """A requested size needs more memory than the device has free; the message says what fits."""


@dataclass(frozen=True)
class Estimate:
    """Peak bytes of one stage as named parts that add up to it."""

    what: str
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        shown = sorted(((n, b) for n, b in self.parts.items() if b), key=lambda p: -p[1])
        return ", ".join(f"{name} {format_bytes(b)}" for name, b in shown)


def format_bytes(n: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def _dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def activation_bytes(dtype: torch.dtype) -> int:
    """Bytes per activation for weights of `dtype`: fp8 weights compute in bf16."""
    return max(2, _dtype_bytes(dtype))


def math_attention_only() -> bool:
    """True when neither flash nor memory-efficient attention is allowed (e.g. inside
    sdpa_kernel(MATH), the loader's attention=math): attention then builds the full score matrix."""
    b = torch.backends.cuda
    return not (b.flash_sdp_enabled() or b.mem_efficient_sdp_enabled())


# ---------------------------------------------------------------- the stages

def dit_call(config, rows: int, tokens: int, context_tokens: int, act_bytes: int,
             fp32_time_weights: bool = False, math_attention: bool = False) -> dict[str, int]:
    """Peak activation bytes of one WanDiT forward on `rows` rows of `tokens` tokens, as parts."""
    a, n, d = act_bytes, rows, config.dim
    u = n * tokens * d * a
    fixed = {"RoPE table": tokens * config.head_dim * 4, "text tokens": n * context_tokens * d * a}
    ffn = {"DiT block activations": 4 * u, "DiT FFN hidden": 2 * n * tokens * config.ffn_dim * a}
    attention = {"DiT block activations": (7 * u) if a >= 4 else (5 * u + 3 * (4 // a) * u),
                 "text keys and values": 2 * n * context_tokens * d * a}
    if math_attention:
        attention["attention scores (math kernel)"] = 2 * n * config.num_heads * tokens * tokens * a
    phases = [{**fixed, **ffn}, {**fixed, **attention}]
    if fp32_time_weights:
        phases.append({"fp32 timestep projection": 6 * d * d * 4, "DiT tokens": u})
    return max(phases, key=lambda p: sum(p.values()))


def sampling(config, latent_shape: Sequence[int], refs: int, passes: int, context_tokens: int,
             act_bytes: int, fp32_time_weights: bool = False, math_attention: bool = False) -> Estimate:
    """Sampling video latents of `latent_shape` [B, C, f, h, w] with `refs` reference frames and up
    to `passes` guidance passes batched into each model call."""
    b, c, f, h, w = (int(s) for s in latent_shape)
    pt, ph, pw = config.patch_size
    rows = passes * b
    tokens = -(-(f + refs) // pt) * -(-h // ph) * -(-w // pw)
    parts = dit_call(config, rows, tokens, context_tokens, act_bytes, fp32_time_weights, math_attention)
    parts["model inputs and outputs"] = _SAMPLER_ROW_COPIES * rows * c * (f + refs) * h * w * 4
    parts["latents and solver state"] = _SAMPLER_LATENT_COPIES * b * c * f * h * w * 4
    return Estimate(f"sampling with {passes} guidance pass{'es' if passes > 1 else ''} batched per step", parts)


def _per_pixel(coeffs: tuple[float, float], dim: int) -> float:
    return coeffs[0] * dim + coeffs[1]


def _vae_attention(batch: int, latent_pixels: int, act_bytes: int) -> int:
    # the middle block's single-head attention over one latent frame's pixels runs PyTorch's math
    # kernel (its strided q / k / v rule the fused CPU kernel out): scores and softmax, [n, hw, hw]
    return 2 * batch * latent_pixels * latent_pixels * act_bytes


def decoding(vae_config, batch: int, latent_frames: int, height: int, width: int, act_bytes: int,
             tile: int | None = None, overlap: int = 0) -> Estimate:
    """Decoding [batch, C, latent_frames, height/8, width/8] to float32 frames [batch, F, H, W, 3]
    (tile / overlap in latent pixels, as WanVAE.decode_raw takes them)."""
    s, dim = vae_config.space_factor, vae_config.dim
    frames = (latent_frames - 1) * vae_config.time_factor + 1
    video = batch * 3 * frames * height * width * 4
    th, tw = (height, width) if tile is None else (min(height, tile * s), min(width, tile * s))
    area = th * tw
    stream = latent_frames > 1
    conv = {"decoded video": video, "VAE decoder activations": int(
        batch * _per_pixel(_DECODE_STREAM if stream else _DECODE_FIRST, dim) * area * act_bytes)}
    attention = {"decoded video": video,
                 "VAE attention scores": _vae_attention(batch, area // (s * s), act_bytes),
                 "VAE decoder caches": int(batch * _per_pixel(_DECODE_CACHE if stream else _DECODE_FIRST_CACHE, dim)
                                           * area * act_bytes)}
    phases = [conv, attention]
    if tile is not None:
        for phase in phases:
            # a decoded tile, its weighted copy, and the summed weights of the whole frame
            phase["tile and blend weights"] = 2 * batch * 3 * frames * area * 4 + height * width * 4
    phases.append({"decoded video": video, "frames as 8-bit": video // 4})
    return Estimate("decoding", max(phases, key=lambda p: sum(p.values())))


def reference_encoding(vae_config, count: int, height: int, width: int, act_bytes: int,
                       tile: int | None = None) -> Estimate:
    """Fitting `count` reference images onto white height x width frames and encoding each as one
    latent frame (tile: spatial tiles of `tile` pixels, as WanVAE.encode_raw takes them)."""
    s, dim = vae_config.space_factor, vae_config.dim
    pixels = count * 3 * height * width * 4 + 3 * (3 * height * width * 4)  # the batch, and one image's steps
    area = height * width if tile is None else min(height, tile) * min(width, tile)
    conv = {"reference pixels": pixels,
            "VAE encoder activations": int(count * _per_pixel(_ENCODE_FRAME, dim) * area * act_bytes)}
    attention = {"reference pixels": pixels,
                 "VAE attention scores": _vae_attention(count, area // (s * s), act_bytes),
                 "VAE encoder caches": int(count * _per_pixel(_ENCODE_CACHE, dim) * area * act_bytes)}
    if tile is not None:
        for phase in (conv, attention):
            phase["tile and blend weights"] = 2 * count * vae_config.z_dim * (height // s) * (width // s) * 4
    return Estimate(f"encoding {count} reference{'s' if count != 1 else ''}",
                    max(conv, attention, key=lambda p: sum(p.values())))


def max_passes(cfg, sigmas: Sequence[float], has_refs: bool) -> int:
    """The most guidance passes any step of a schedule runs (they are batched into one call)."""
    steps = len(sigmas) - 1
    most = 1
    for i in range(steps):
        for sigma in (sigmas[i], sigmas[i + 1]):  # heun evaluates the next sigma too
            most = max(most, len(cfg.weights(i / steps, float(sigma)).passes(has_refs)))
    return most


# ---------------------------------------------------------------- the device

def _cgroup_room() -> int | None:
    # a container's own limit, which /proc/meminfo does not show
    for limit, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            top = Path(limit).read_text().strip()
            if top == "max" or int(top) >= 1 << 60:
                return None
            return int(top) - int(Path(used).read_text().strip())
        except (OSError, ValueError):
            continue
    return None


def _cpu_available() -> int | None:
    found = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if found is None and hasattr(os, "sysconf"):
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            found = None
    room = _cgroup_room()
    if room is not None:
        found = room if found is None else min(found, room)
    return found


def available_bytes(device: str | torch.device) -> int | None:
    """Memory a new allocation on `device` can use now, or None when it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # what PyTorch's caching allocator holds but no tensor uses is free to us too
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu":
        return _cpu_available()
    if device.type == "mps":
        return torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
    return None


def usable_bytes(available: int) -> int:
    return int(available * (1 - RESERVE_FRACTION)) - RESERVE_BYTES


def largest_fit(estimate_for: Callable[[int, int, int], Estimate], frames: int | None, height: int, width: int,
                budget: int, space_step: int = 16, time_step: int = 4) -> str:
    """The largest request like (frames, height, width) whose estimate fits `budget`: fewer frames at
    the same size, and the same frames at a smaller size of the same shape (frames None: a size
    only, e.g. for reference images)."""
    def fits(f: int | None, h: int, w: int) -> bool:
        return estimate_for(f or 1, h, w).total <= budget

    def largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
        while lo < hi:  # the largest n in [lo, hi] with ok(n), given ok(lo)
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
        return lo

    def size(n: int) -> tuple[int, int]:  # n steps of height, the width keeping the shape
        return n * space_step, max(space_step, round(n * width / height) * space_step)

    def shown(f: int | None, h: int, w: int) -> str:
        return (f"{f} frames at " if f is not None else "") + f"{w}x{h}"

    found = []
    if frames is not None and fits(1, height, width):
        k = largest(0, (frames - 1) // time_step, lambda k: fits(k * time_step + 1, height, width))
        found.append(shown(k * time_step + 1, height, width))
    if fits(frames, *size(1)):
        found.append(shown(frames, *size(largest(1, max(1, height // space_step), lambda n: fits(frames, *size(n))))))
    if not found:
        smallest = shown(frames, *size(1)) if frames is None else f"1 frame at {width}x{height} or {shown(frames, *size(1))}"
        return (f"not even {smallest} fits; free memory (close other programs or models) or use a smaller model")
    return "the largest that fits: " + ", or ".join(found)


def check_fits(estimate: Estimate, device: str | torch.device, request: str,
               largest: Callable[[int], str] | None = None) -> None:
    """Raise OutOfMemory when `estimate` does not fit what `device` has free (minus the reserve).

    request: the size asked for, as the user gave it ("1025 frames at 4096x4096");
    largest(budget): what would fit, for the message.
    """
    available = available_bytes(device)
    if available is None:
        return
    budget = usable_bytes(available)
    if estimate.total <= budget:
        return
    hint = largest(budget) if largest is not None else ""
    raise OutOfMemory(
        f"{request}: {estimate.what} needs about {format_bytes(estimate.total)} on {torch.device(device)} "
        f"({estimate.describe()}), but {format_bytes(max(available, 0))} is free there and "
        f"{format_bytes(max(budget, 0))} usable after the reserve; {hint + '. ' if hint else ''}"
        "Lower the frames or the size, or free memory.")


def model_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers (what loading it onto a device takes)."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


__all__ = [
    "Estimate", "OutOfMemory", "activation_bytes", "available_bytes", "check_fits", "decoding", "dit_call",
    "format_bytes", "largest_fit", "math_attention_only", "max_passes", "model_bytes", "reference_encoding",
    "sampling", "usable_bytes",
]
