"""Wan2.1 causal 3D VAE: module names are the checkpoint keys of `wan_2.1_vae.safetensors`.

Video [B, 3, F, H, W] in [-1, 1] with F = 4k + 1  <->  latents [B, 16, k + 1, H / 8, W / 8].

Every temporal convolution is causal (zero context before frame 0), so a video can be processed
as a stream: the first frame alone, then 4 frames at a time for the encoder, one latent frame at a
time for the decoder. Each causal convolution keeps the last input frames it needs in a
`StreamState`, which is what keeps memory flat in the frame count. The same modules also run on a
whole sequence at once (`chunked=False`), which gives the same numbers and is what training uses.

Latent normalization (decided here, documented in docs/vae.md): `encode()` returns NORMALIZED
latents, (mu - mean) / std per channel, which is what the DiT sees and what ComfyUI's LATENT holds
for Wan after `latent_formats.Wan21.process_in`; `decode()` takes normalized latents.
`encode_raw()` / `decode_raw()` work on the VAE's own (unnormalized) latent space.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError

# Published per-channel statistics of the Wan2.1 VAE latent space (Wan2.1 release; also in
# ComfyUI's latent_formats.Wan21).
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)


@dataclass(frozen=True)
class VAEConfig:
    """Shape of a Wan2.1-layout VAE. The field names follow the Wan release (`temperal` included).

    latents_mean / latents_std: per-channel statistics used by encode()/decode(). None means the
    published Wan2.1 statistics when z_dim == 16, else 0 / 1; a trained small VAE stores its own
    (save_vae writes them into the file, load_vae reads them back).
    """

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "dim_mult", tuple(int(m) for m in self.dim_mult))
        object.__setattr__(self, "temperal_downsample", tuple(bool(t) for t in self.temperal_downsample))
        if self.dim < 1 or self.z_dim < 1 or self.num_res_blocks < 1:
            raise ConfigError(f"VAE dim, z_dim and num_res_blocks must be positive, got {self}")
        if len(self.dim_mult) < 2 or len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ConfigError(
                f"VAE temperal_downsample needs one entry per downsampling level (len(dim_mult) - 1 = "
                f"{len(self.dim_mult) - 1}), got {len(self.temperal_downsample)}"
            )
        if (self.dim * self.dim_mult[-1]) % 2:
            raise ConfigError("VAE dim * dim_mult[-1] must be even (the upsampling convs halve channels)")
        for name in ("latents_mean", "latents_std"):
            v = getattr(self, name)
            if v is not None:
                v = tuple(float(a) for a in v)
                object.__setattr__(self, name, v)
                if len(v) != self.z_dim:
                    raise ConfigError(f"VAE {name} has {len(v)} values; z_dim is {self.z_dim}")
        if self.latents_std is not None and min(self.latents_std) <= 0:
            raise ConfigError("VAE latents_std values must be positive")

    @classmethod
    def wan21(cls) -> VAEConfig:
        """The released Wan2.1 VAE (dim 96, 16 latent channels, 4x time, 8x space)."""
        return cls()

    @classmethod
    def small(cls, dim: int = 16) -> VAEConfig:
        """Same layout and keys as Wan2.1, narrower: for tests and the SpriteWorld VAE."""
        return cls(dim=dim)

    @property
    def time_factor(self) -> int:
        return 2 ** sum(self.temperal_downsample)

    @property
    def space_factor(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) used for normalization, with the defaults resolved."""
        if self.latents_mean is not None and self.latents_std is not None:
            return self.latents_mean, self.latents_std
        if self.z_dim == len(WAN21_LATENTS_MEAN):
            return (self.latents_mean or WAN21_LATENTS_MEAN, self.latents_std or WAN21_LATENTS_STD)
        return (self.latents_mean or (0.0,) * self.z_dim, self.latents_std or (1.0,) * self.z_dim)


class StreamState:
    """Per-module memory of a stream: the trailing input frames each causal conv still needs."""

    def __init__(self):
        self._store: dict[nn.Module, object] = {}

    def take(self, module: nn.Module):
        return self._store.pop(module, None)

    def put(self, module: nn.Module, value) -> None:
        self._store[module] = value

    def nbytes(self) -> int:
        """Bytes held by the cached frames (constant once a stream is running)."""
        return sum(v.numel() * v.element_size() for v in self._store.values() if isinstance(v, torch.Tensor))

    def seen(self, module: nn.Module) -> bool:
        """True from the second call on for `module` (marks it as seen)."""
        if module in self._store:
            return True
        self._store[module] = True
        return False


class CausalConv3d(nn.Conv3d):
    """3D conv padded only on the past side in time; spatial padding is symmetric.

    Spatial padding is left to the convolution itself (no padded copy of the activation); only
    the causal time context is concatenated: cached frames of the previous chunk, else zeros.
    """

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        p = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
        super().__init__(cin, cout, kernel, stride=stride, padding=(0, p[1], p[2]))
        self.context = 2 * p[0]  # past frames this conv looks at besides the current one

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        if self.context:
            n = x.shape[2]
            prev = state.take(self) if state is not None else None
            if prev is not None:
                x = torch.cat([prev, x], dim=2)
            if state is not None:
                # clone: a view would keep the whole chunk alive until the next call
                state.put(self, x[:, :, -self.context:].clone())
            if prev is None and n == 1 and self.stride[0] == 1:
                return self._lone_frame(x)
            missing = self.context - (x.shape[2] - n)
            if missing:
                x = F.pad(x, (0, 0, 0, 0, missing, 0))
        if _use_onednn(x):
            # channels-last: oneDNN's direct kernels, no im2col scratch and no layout reorders of
            # the activation; the layout then carries through norms, activations and the 2D
            # per-frame layers, so most calls find it already in place
            x = x.contiguous(memory_format=torch.channels_last_3d)
            return torch.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride,
                                            self.dilation, self.groups)
        return super().forward(x)


    def _lone_frame(self, x: torch.Tensor) -> torch.Tensor:
        # A first frame with nothing before it (an image, a reference, a stream's first chunk):
        # the older time slices of the kernel would only multiply the zero padding, so this is a
        # 2D conv with the newest slice, a third of the work (and of the memory) of the 3D one.
        y = F.conv2d(x[:, :, 0], self.weight[:, :, -1], self.bias, self.stride[1:], self.padding[1:],
                     self.dilation[1:], self.groups)
        return y.unsqueeze(2)


def _use_onednn(x: torch.Tensor) -> bool:
    # On CPU, PyTorch sends small-batch 3D convs (N*C*T*H <= 20480: every first-frame chunk and
    # the deep levels) to its im2col fallback, about 2x slower than oneDNN with a C*27 x T*H*W
    # column buffer, and runs the others in NCDHW layout, where oneDNN also needs scratch space
    # (2.4x the output for a 96-channel 128x128 conv, vs none in channels-last). Same convolution,
    # differences ~1e-6 relative. Inference only: training keeps the default dispatch.
    # float32 only: oneDNN's bf16 path needs CPU features PyTorch checks for separately
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def _inplace() -> bool:
    # In-place activations save a full-size temporary per layer at inference; autograd needs the
    # originals, so training keeps the out-of-place ops.
    return not torch.is_grad_enabled()


class RMSNorm(nn.Module):
    """Channel RMS norm written as L2 normalisation times sqrt(C), the Wan formulation."""

    def __init__(self, dim: int, spatial_dims: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim, *([1] * spatial_dims)))
        self.scale = dim ** 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gamma.to(x.dtype) * self.scale
        y = F.normalize(x, dim=1)
        return y.mul_(g) if _inplace() else y * g


def _silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x, inplace=_inplace())


def _run_head(head: nn.Sequential, x: torch.Tensor, state: StreamState | None) -> torch.Tensor:
    return head[2](_silu(head[0](x)), state)


def _per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D module to every frame of [B, C, T, H, W]."""
    b, _, t = x.shape[:3]
    y = fn(x.transpose(1, 2).flatten(0, 1))
    return y.unflatten(0, (b, t)).transpose(1, 2)


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        # index 5 is the (zero) dropout of the release; an empty slot keeps the key indices
        self.residual = nn.Sequential(
            RMSNorm(cin, 3), nn.SiLU(), CausalConv3d(cin, cout, 3, padding=1),
            RMSNorm(cout, 3), nn.SiLU(), nn.Identity(), CausalConv3d(cout, cout, 3, padding=1),
        )
        self.shortcut = CausalConv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        h = x
        for layer in self.residual:
            if isinstance(layer, CausalConv3d):
                h = layer(h, state)
            elif isinstance(layer, nn.SiLU):
                h = _silu(h)
            else:
                h = layer(h)
        skip = self.shortcut(x)
        return h.add_(skip) if _inplace() else h + skip


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no attention across time)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, 2)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def _frames(self, y: torch.Tensor) -> torch.Tensor:
        n, c, h, w = y.shape
        qkv = self.to_qkv(self.norm(y)).reshape(n, 3, c, h * w).transpose(2, 3)
        q, k, v = qkv[:, 0:1], qkv[:, 1:2], qkv[:, 2:3]
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out[:, 0].transpose(1, 2).reshape(n, c, h, w))

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        y = _per_frame(self._frames, x)
        return y.add_(x) if _inplace() else y + x


class Resample(nn.Module):
    """2x spatial up/down sampling, plus 2x in time for the '3d' modes.

    Time is resampled causally and the first frame is special: it is never merged with (down) or
    split into (up) other frames, which is what makes F = 4k + 1 <-> k + 1.
    """

    def __init__(self, dim: int, mode: str):
        super().__init__()
        self.mode = mode
        if mode.startswith("up"):
            self.resample = nn.Sequential(
                nn.Upsample(scale_factor=2.0, mode="nearest-exact"), nn.Conv2d(dim, dim // 2, 3, padding=1)
            )
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        if mode == "up3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "down3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        if self.mode == "up3d":
            x = self._time_up(x, state)
        x = _per_frame(self.resample, x)
        if self.mode == "down3d":
            x = self._time_down(x, state)
        return x

    def _time_up(self, x: torch.Tensor, state: StreamState | None) -> torch.Tensor:
        # Frame 0 passes through; each later frame becomes two, from a causal conv over frames 1..
        # (frame 0 is not in that conv's context: its first window sees zeros).
        first_call = state is None or not state.seen(self)
        head, rest = (x[:, :, :1], x[:, :, 1:]) if first_call else (x[:, :, :0], x)
        if rest.shape[2] == 0:
            return head
        y = self.time_conv(rest, state)
        b, c2, t, h, w = y.shape
        y = y.reshape(b, 2, c2 // 2, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c2 // 2, 2 * t, h, w)
        return torch.cat([head, y], dim=2) if head.shape[2] else y

    def _time_down(self, x: torch.Tensor, state: StreamState | None) -> torch.Tensor:
        # Output 0 is frame 0; output j >= 1 is conv(frames 2j-2, 2j-1, 2j), stride 2.
        prev = state.take(self) if state is not None else None
        head = x[:, :, :1] if prev is None else x[:, :, :0]
        seq = x if prev is None else torch.cat([prev, x], dim=2)
        if state is not None:
            state.put(self, seq[:, :, -1:].clone())
        if seq.shape[2] % 2 == 0:
            raise RuntimeError(
                f"internal chunking error: temporal downsampling got {seq.shape[2]} frames with context; "
                "stream chunks after the first frame must have an even length"
            )
        if seq.shape[2] < 3:
            return head
        y = self.time_conv(seq)
        return torch.cat([head, y], dim=2) if head.shape[2] else y


def _levels(cfg: VAEConfig) -> list[int]:
    return [cfg.dim * m for m in (1, *cfg.dim_mult)]


class Encoder3d(nn.Module):
    def __init__(self, cfg: VAEConfig, out_channels: int):
        super().__init__()
        dims = _levels(cfg)
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        blocks: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResidualBlock(cin, cout))
                cin = cout
            if i < len(cfg.temperal_downsample):
                blocks.append(Resample(cout, "down3d" if cfg.temperal_downsample[i] else "down2d"))
        self.downsamples = nn.Sequential(*blocks)
        c = dims[-1]
        self.middle = nn.Sequential(ResidualBlock(c, c), AttentionBlock(c), ResidualBlock(c, c))
        self.head = nn.Sequential(RMSNorm(c, 3), nn.SiLU(), CausalConv3d(c, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        x = self.conv1(x, state)
        for block in (*self.downsamples, *self.middle):
            x = block(x, state)
        return _run_head(self.head, x, state)


class Decoder3d(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        dims = [cfg.dim * m for m in (cfg.dim_mult[-1], *reversed(cfg.dim_mult))]
        up_time = tuple(reversed(cfg.temperal_downsample))
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]),
                                    ResidualBlock(dims[0], dims[0]))
        blocks: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                cin //= 2  # the previous level's upsampling conv halves the channels
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResidualBlock(cin, cout))
                cin = cout
            if i < len(up_time):
                blocks.append(Resample(cout, "up3d" if up_time[i] else "up2d"))
        self.upsamples = nn.Sequential(*blocks)
        c = dims[-1]
        self.head = nn.Sequential(RMSNorm(c, 3), nn.SiLU(), CausalConv3d(c, 3, 3, padding=1))

    def forward(self, z: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        x = self.conv1(z, state)
        for block in (*self.middle, *self.upsamples):
            x = block(x, state)
        return _run_head(self.head, x, state)


def _nearest_sizes(n: int, step: int, offset: int) -> tuple[int, int]:
    low = n - ((n - offset) % step)
    return max(low, offset), low + step if low >= offset else offset


class WanVAE(nn.Module):
    """The Wan2.1 VAE. Pixels are [B, 3, F, H, W] in [-1, 1]; latents are [B, z_dim, T, h, w]."""

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = cfg = config or VAEConfig()
        self.encoder = Encoder3d(cfg, cfg.z_dim * 2)
        self.conv1 = CausalConv3d(cfg.z_dim * 2, cfg.z_dim * 2, 1)  # -> (mu, log_var); we keep mu
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder3d(cfg)
        mean, std = cfg.stats()
        # non-persistent: the released file has no such keys; save_vae stores them separately
        self.register_buffer("latents_mean", torch.tensor(mean).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("latents_std", torch.tensor(std).view(1, -1, 1, 1, 1), persistent=False)

    # ---- shapes and validation -------------------------------------------------------------
    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(latent frames, latent height, latent width) for a valid video size."""
        c = self.config
        return (frames - 1) // c.time_factor + 1, height // c.space_factor, width // c.space_factor

    def check_video(self, x: torch.Tensor) -> None:
        c = self.config
        if not isinstance(x, torch.Tensor) or x.dim() != 5:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"the VAE encodes video as a [batch, 3, frames, height, width] tensor; got {shape}")
        if not x.is_floating_point():
            raise InputError(f"video pixels must be floating point in [-1, 1]; got {x.dtype}")
        b, ch, f, h, w = x.shape
        if ch != 3:
            raise InputError(
                f"the video has {ch} channels; the VAE takes 3 (RGB) on dim 1 of [batch, 3, frames, height, width]"
                + (" (drop the alpha channel or composite it first)" if ch == 4 else "")
            )
        t = c.time_factor
        if f < 1 or (f - 1) % t:
            low, high = _nearest_sizes(f, t, 1)
            choice = f"use {low} or {high}" if low != high else f"use {low}"
            raise InputError(f"{f} frames: {choice} (the VAE needs {t}k+1 frames)")
        s = c.space_factor
        for name, n in (("height", h), ("width", w)):
            if n < s or n % s:
                low, high = _nearest_sizes(n, s, 0)
                choice = f"use {low} or {high}" if low and low != high else f"use {high}"
                raise InputError(f"{name} {n} is not a multiple of {s}: {choice}")

    def check_latents(self, z: torch.Tensor) -> None:
        c = self.config
        if not isinstance(z, torch.Tensor) or z.dim() != 5:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise InputError(f"the VAE decodes latents shaped [batch, {c.z_dim}, frames, height, width]; got {shape}")
        if not z.is_floating_point():
            raise InputError(f"latents must be floating point; got {z.dtype}")
        if z.shape[1] != c.z_dim:
            hint = " (that is a Wan2.2 latent; this is the Wan2.1 VAE)" if z.shape[1] == 48 else ""
            raise InputError(f"the latents have {z.shape[1]} channels; this VAE takes {c.z_dim}{hint}")
        if min(z.shape[2:]) < 1:
            raise InputError(f"the latents are empty: shape {tuple(z.shape)}")

    # ---- normalization -----------------------------------------------------------------------
    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        """VAE latent space -> the normalized space the DiT works in."""
        return (mu - self.latents_mean.to(mu)) / self.latents_std.to(mu)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.latents_std.to(z) + self.latents_mean.to(z)

    def set_latent_stats(self, mean, std) -> None:
        """Replace the normalization statistics (e.g. after measuring them on a trained small VAE)."""
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        z = self.config.z_dim
        if mean.numel() != z or std.numel() != z:
            raise ConfigError(f"latent stats need {z} values each; got {mean.numel()} and {std.numel()}")
        if not bool((std > 0).all()):
            raise ConfigError("latent std values must be positive")
        device = self.conv2.weight.device
        device = torch.device("cpu") if device.type == "meta" else device
        self.latents_mean = mean.view(1, -1, 1, 1, 1).to(device)
        self.latents_std = std.view(1, -1, 1, 1, 1).to(device)

    # ---- encode ------------------------------------------------------------------------------
    def _param(self) -> torch.Tensor:
        return self.conv2.weight

    def _encode_mu(self, x: torch.Tensor, chunked: bool) -> torch.Tensor:
        z, p = self.config.z_dim, self._param()
        if not chunked:
            return self.conv1(self.encoder(x.to(device=p.device, dtype=p.dtype)))[:, :z].contiguous()
        state, t = StreamState(), self.config.time_factor
        bounds = [(0, 1)] + [(s, s + t) for s in range(1, x.shape[2], t)]
        # chunks move to the model's device one at a time: a long video can stay in CPU memory
        out = [self.conv1(self.encoder(x[:, :, a:b].to(device=p.device, dtype=p.dtype), state))[:, :z]
               for a, b in bounds]
        return torch.cat(out, dim=2).contiguous()

    def encode_raw(self, x: torch.Tensor, *, chunked: bool = True, tile: int | None = None,
                   overlap: int = 64) -> torch.Tensor:
        """Pixels [B, 3, F, H, W] in [-1, 1] -> the VAE's own latents (the posterior mean).

        chunked: stream the frames (first alone, then `time_factor` at a time) so memory does not
        grow with F. tile / overlap: encode spatial tiles of `tile` pixels overlapping by `overlap`
        pixels (multiples of 8), blended linearly in latent space.
        """
        self.check_video(x)
        if tile is None:
            return self._encode_mu(x, chunked)
        from .vae_tiling import tiled_encode

        return tiled_encode(lambda p: self._encode_mu(p, chunked), x, tile, overlap, self.config)

    def encode(self, x: torch.Tensor, **kw) -> torch.Tensor:
        """Pixels in [-1, 1] -> NORMALIZED latents (what the DiT and ComfyUI's Wan LATENT hold)."""
        return self.normalize(self.encode_raw(x, **kw))

    # ---- decode ------------------------------------------------------------------------------
    def iter_decode_raw(self, z: torch.Tensor, *, clamp: bool = True) -> Iterator[torch.Tensor]:
        """Yield pixel frames as they are decoded, latent frame by latent frame (1, then 4 frames).

        Memory stays flat however long the video: callers that write frames out as they come
        never hold the whole decoded video.
        """
        self.check_latents(z)
        z = z.to(device=self._param().device, dtype=self._param().dtype)
        state = StreamState()
        for i in range(z.shape[2]):
            out = self.decoder(self.conv2(z[:, :, i:i + 1]), state).contiguous()
            yield out.clamp_(-1, 1) if clamp else out

    def _decode_pixels(self, z: torch.Tensor, chunked: bool, clamp: bool) -> torch.Tensor:
        if not chunked:
            out = self.decoder(self.conv2(z)).contiguous()
            return out.clamp_(-1, 1) if clamp else out
        b, _, t, h, w = z.shape
        s = self.config.space_factor
        frames = (t - 1) * self.config.time_factor + 1
        # preallocated: growing the output with torch.cat would copy it once per latent frame
        out = torch.empty(b, 3, frames, h * s, w * s, dtype=z.dtype, device=z.device)
        pos = 0
        for piece in self.iter_decode_raw(z, clamp=clamp):
            out[:, :, pos:pos + piece.shape[2]] = piece
            pos += piece.shape[2]
        return out

    def decode_raw(self, z: torch.Tensor, *, chunked: bool = True, clamp: bool = True,
                   tile: int | None = None, overlap: int = 8) -> torch.Tensor:
        """The VAE's own latents [B, z_dim, T, h, w] -> pixels [B, 3, 4(T-1)+1, 8h, 8w] in [-1, 1].

        tile / overlap: decode spatial tiles of `tile` latent pixels overlapping by `overlap`
        latent pixels, blended linearly in pixel space.
        """
        self.check_latents(z)
        z = z.to(device=self._param().device, dtype=self._param().dtype)
        if tile is None:
            return self._decode_pixels(z, chunked, clamp)
        from .vae_tiling import tiled_decode

        return tiled_decode(lambda q: self._decode_pixels(q, chunked, clamp), z, tile, overlap, self.config)

    def decode(self, z: torch.Tensor, **kw) -> torch.Tensor:
        """NORMALIZED latents -> pixels in [-1, 1] (clamped unless clamp=False)."""
        self.check_latents(z)
        return self.decode_raw(self.denormalize(z.to(self.latents_std.device)), **kw)


from .vae_checkpoint import detect_vae_config, load_vae, save_vae  # noqa: E402  (re-export)

__all__ = [
    "VAEConfig", "WanVAE", "StreamState", "load_vae", "save_vae", "detect_vae_config",
    "WAN21_LATENTS_MEAN", "WAN21_LATENTS_STD",
]
