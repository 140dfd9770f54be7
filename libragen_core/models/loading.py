"""Identify and load DiT checkpoints (.safetensors only).

`inspect_checkpoint` works from the file header alone (names, dtypes, shapes): it tells which
model family a file belongs to and, for Wan files, the config, without reading tensor data.
`load_dit` then checks keys and shapes strictly against that config before reading anything,
so a wrong or damaged file is reported by name instead of failing inside torch.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError
from ..io.safetensors_file import read_header
from .fp8 import FP8_DTYPES, MARKER_KEY, SCALE_SUFFIXES, dequantize, quantize, use_fp8_block_linears
from .wan_dit import WanDiT, WanDiTConfig

PREFIXES = ("model.diffusion_model.", "diffusion_model.")
CONFIG_METADATA_KEY = "libragen.dit_config"
T2V_FAMILY = "wan2.1-t2v"

ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}

FAMILY_DESCRIPTIONS = {
    "wan2.1-t2v": "a Wan2.1 text-to-video DiT",
    "wan2.1-i2v": "a Wan2.1 image-to-video DiT (it has img_emb / k_img keys)",
    "wan2.2-ti2v": "a Wan2.2 TI2V-5B DiT (48-channel latents)",
    "wan2.2-i2v": "a Wan2.2 image-to-video DiT (36 input channels: latents plus the image condition)",
    "wan-vace": "a Wan VACE DiT (it has vace_blocks keys)",
    "wan-camera": "a Wan camera-control DiT (it has control_adapter keys)",
    "wan-s2v": "a Wan speech-to-video DiT (it has audio encoder keys)",
    "humo": "a HuMo DiT (it has audio_proj keys)",
    "wan-animate": "a Wan Animate DiT (it has face_adapter keys)",
    "wan-vae": "a Wan video VAE (encoder/decoder keys)",
    "image-vae": "an image VAE in the SD/Flux layout (encoder.down / decoder.up keys)",
    "sd1": "a Stable Diffusion 1.x UNet (input_blocks keys, 768-wide cross-attention)",
    "sd2": "a Stable Diffusion 2.x UNet (input_blocks keys, 1024-wide cross-attention)",
    "sdxl": "a Stable Diffusion XL UNet (input_blocks and label_emb keys)",
    "sd3": "a Stable Diffusion 3 MMDiT (joint_blocks keys)",
    "flux": "a Flux-style DiT (double_blocks / single_blocks keys)",
    "t5": "a T5 text encoder (encoder.block keys)",
    "umt5": "a umT5 text encoder (encoder.block keys, 256k vocabulary); it is the text encoder, not the DiT",
    "clip-text": "a CLIP text encoder (text_model keys)",
    "clip-vision": "a CLIP vision encoder (vision_model keys)",
    "lora": "a LoRA (lora_A/lora_B or lora_up/lora_down keys); it applies on top of a base model",
    "unknown": "a model whose layout LibraGen does not recognise",
    "not a model": "not a model (it holds no weight tensors)",
}


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    family: str
    config: WanDiTConfig | None
    dtypes: dict[str, int]  # safetensors dtype name -> number of tensors
    n_tensors: int
    n_params: int
    key_prefix: str
    fp8_scaled: bool
    metadata: dict[str, str] = field(default_factory=dict)
    other_keys: int = 0  # tensors outside the DiT prefix (VAE/text encoder of an all-in-one file)

    @property
    def description(self) -> str:
        return FAMILY_DESCRIPTIONS.get(self.family, self.family)

    @property
    def loadable(self) -> bool:
        return self.family == T2V_FAMILY and self.config is not None

    def summary(self) -> str:
        lines = [f"file:       {self.path}", f"family:     {self.family} ({self.description})"]
        if self.config is not None:
            c = self.config
            lines.append(f"config:     dim={c.dim} ffn_dim={c.ffn_dim} heads={c.num_heads} (head_dim {c.head_dim}) "
                         f"layers={c.num_layers} in_dim={c.in_dim} out_dim={c.out_dim} text_dim={c.text_dim} "
                         f"freq_dim={c.freq_dim} patch={tuple(c.patch_size)}")
        lines.append("dtype:      " + ", ".join(f"{k} x{v}" for k, v in sorted(self.dtypes.items(), key=lambda kv: -kv[1]))
                     + (" (fp8 scaled)" if self.fp8_scaled else ""))
        lines.append(f"parameters: {self.n_params:,} ({_human(self.n_params)})")
        lines.append(f"tensors:    {self.n_tensors}")
        lines.append(f"key prefix: {self.key_prefix or '(none)'}")
        if self.other_keys:
            lines.append(f"other:      {self.other_keys} tensors outside the DiT prefix (ignored)")
        return "\n".join(lines)


def _human(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def _natural_key(k: str):
    # top-level names first: they say more about what a file is than the 30th block does
    return (k.startswith("blocks."), [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", k)])


def _pick_prefix(keys: list[str]) -> str:
    for p in PREFIXES:
        if f"{p}head.modulation" in keys:
            return p
    counts = {p: sum(k.startswith(p) for k in keys) for p in PREFIXES}
    best = max(counts, key=counts.get)
    return best if counts[best] > len(keys) // 2 else ""


def _detect_family(keys: set[str], shapes: dict[str, list[int]]) -> str:
    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    def has_part(part: str) -> bool:
        return any(part in k for k in keys)

    if not keys:
        return "not a model"
    if has_part("lora_A") or has_part("lora_B") or has_part("lora_down") or has_part("lora_up"):
        return "lora"
    if "head.modulation" in keys and "patch_embedding.weight" in keys:
        if has("vace_blocks.") or "vace_patch_embedding.weight" in keys:
            return "wan-vace"
        if has("control_adapter."):
            return "wan-camera"
        if has("casual_audio_encoder."):
            return "wan-s2v"
        if has("audio_proj."):
            return "humo"
        if has("face_adapter."):
            return "wan-animate"
        if has("img_emb.") or has_part(".k_img."):
            return "wan2.1-i2v"
        in_dim = shapes["patch_embedding.weight"][1]
        if in_dim == 48:
            return "wan2.2-ti2v"
        if in_dim == 36:  # Wan2.2 I2V-A14B: same blocks as T2V, image latents concatenated on channels
            return "wan2.2-i2v"
        return T2V_FAMILY
    if has("encoder.downsamples.") or has("decoder.upsamples."):
        return "wan-vae"
    if has("encoder.down.") or has("decoder.up.") or has("first_stage_model."):
        if not has("input_blocks.") and not has("model.diffusion_model."):
            return "image-vae"
    if has("input_blocks.") or has("model.diffusion_model.input_blocks."):
        if has("label_emb.") or has("model.diffusion_model.label_emb."):
            return "sdxl"
        for k in keys:
            if k.endswith("attn2.to_k.weight"):
                return "sd2" if shapes[k][-1] == 1024 else "sd1"
        return "sd1"
    if has("joint_blocks.") or has("model.diffusion_model.joint_blocks."):
        return "sd3"
    if has("double_blocks.") or has("single_blocks.") or has("model.diffusion_model.double_blocks."):
        return "flux"
    if has("encoder.block.") or has("shared."):
        vocab = shapes.get("shared.weight", [0])[0]
        return "umt5" if vocab > 200_000 else "t5"
    if has("text_model.") or has("transformer.text_model."):
        return "clip-text"
    if has("vision_model.") or has("visual."):
        return "clip-vision"
    if not any(len(s) >= 2 for s in shapes.values()):
        return "not a model"
    return "unknown"


def _metadata_heads(metadata: dict[str, str]) -> int | None:
    if CONFIG_METADATA_KEY in metadata:
        return None  # handled by the full-config path
    for key in ("num_heads", "num_attention_heads"):
        if key in metadata:
            return int(metadata[key])
    if "config" in metadata:
        try:
            cfg = json.loads(metadata["config"])
        except json.JSONDecodeError:
            return None
        for key in ("num_heads", "num_attention_heads"):
            if isinstance(cfg, dict) and key in cfg:
                return int(cfg[key])
    return None


def _shape(path: Path, shapes: dict[str, list[int]], key: str) -> list[int]:
    try:
        return shapes[key]
    except KeyError:
        raise CheckpointError(
            f"{path} looks like a Wan DiT but has no {key!r}, which is needed to tell its size; "
            "the file is incomplete or was saved with different names"
        ) from None


def _detect_config(path: Path, shapes: dict[str, list[int]], keys: set[str], metadata: dict[str, str]) -> WanDiTConfig:
    if CONFIG_METADATA_KEY in metadata:
        try:
            return WanDiTConfig.from_dict(json.loads(metadata[CONFIG_METADATA_KEY]))
        except (json.JSONDecodeError, TypeError) as e:
            raise CheckpointError(f"{path} has an unreadable {CONFIG_METADATA_KEY} metadata entry: {e}") from e
    dim = _shape(path, shapes, "head.modulation")[-1]
    patch = tuple(_shape(path, shapes, "patch_embedding.weight")[2:])
    n_layers = 0
    while f"blocks.{n_layers}.modulation" in keys or any(k.startswith(f"blocks.{n_layers}.") for k in keys):
        n_layers += 1
    heads = _metadata_heads(metadata)
    if heads is None:
        if dim % 128:
            raise CheckpointError(
                f"{path}: cannot tell the number of attention heads (dim {dim} is not a multiple of 128 and the "
                f"file's metadata has no num_heads); save it with a {CONFIG_METADATA_KEY} metadata entry"
            )
        heads = dim // 128
    head_out = _shape(path, shapes, "head.head.weight")[0]
    return WanDiTConfig(
        dim=dim,
        ffn_dim=_shape(path, shapes, "blocks.0.ffn.0.weight")[0],
        num_heads=heads,
        num_layers=n_layers,
        in_dim=_shape(path, shapes, "patch_embedding.weight")[1],
        out_dim=head_out // max(1, math.prod(patch)),
        text_dim=_shape(path, shapes, "text_embedding.0.weight")[1],
        freq_dim=_shape(path, shapes, "time_embedding.0.weight")[1],
        patch_size=patch,
        qk_norm="blocks.0.self_attn.norm_q.weight" in keys,
        cross_attn_norm="blocks.0.norm3.weight" in keys,
        pooled_text="pooled_text_embedding.0.weight" in keys,
    )


def _is_fp8_extra(key: str) -> bool:
    return key == MARKER_KEY or key.endswith(SCALE_SUFFIXES)


def inspect_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """Describe a safetensors file from its header: family, Wan config, dtypes, sizes."""
    path = Path(path)
    header, metadata = read_header(path)
    all_keys = list(header)
    prefix = _pick_prefix(all_keys)
    inner = {k[len(prefix):]: v for k, v in header.items() if k.startswith(prefix)}
    other = len(header) - len(inner)
    shapes = {k: list(v["shape"]) for k, v in inner.items()}
    fp8_scaled = MARKER_KEY in inner or any(k.endswith(".scale_weight") for k in inner)
    family = _detect_family(set(inner), shapes)
    if family not in (T2V_FAMILY,) and other and prefix:
        # an all-in-one file whose DiT part is not Wan: classify by the whole key set
        family = _detect_family(set(header), {k: list(v["shape"]) for k, v in header.items()})
    config = None
    if family.startswith("wan") or family == "humo":
        try:
            config = _detect_config(path, shapes, set(inner), metadata)
        except CheckpointError:
            if family == T2V_FAMILY:
                raise
    weights = {k: v for k, v in inner.items() if not _is_fp8_extra(k)}
    return CheckpointInfo(
        path=path,
        family=family,
        config=config,
        dtypes=dict(Counter(v["dtype"] for v in weights.values())),
        n_tensors=len(weights),
        n_params=sum(math.prod(v["shape"]) for v in weights.values()),
        key_prefix=prefix,
        fp8_scaled=fp8_scaled,
        metadata=dict(metadata),
        other_keys=other,
    )


def _first(keys, n=5) -> str:
    keys = sorted(keys, key=_natural_key)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _expected_shapes(config: WanDiTConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = WanDiT(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _key_report(file_keys: set[str], expected: set[str]) -> str:
    missing, unexpected = expected - file_keys, file_keys - expected
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_first(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_first(unexpected)}")
    return "; ".join(parts)


def check_dit_checkpoint(info: CheckpointInfo) -> None:
    """Raise CheckpointError unless the file is a Wan2.1 T2V DiT whose keys and shapes all match."""
    header, _ = read_header(info.path)
    inner = {k[len(info.key_prefix):]: v for k, v in header.items() if k.startswith(info.key_prefix)}
    file_keys = {k for k in inner if not _is_fp8_extra(k)}
    ref_config = info.config or WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)
    expected = _expected_shapes(ref_config)
    if info.family != T2V_FAMILY:
        report = _key_report(file_keys, set(expected))
        raise CheckpointError(
            f"{info.path} is not a Wan2.1 text-to-video DiT: it looks like {info.description}. LibraGen loads "
            f"Wan2.1 T2V-layout files (Wan2.1 T2V 1.3B/14B, Phantom-Wan); pick one of those."
            + (f" Compared with a Wan2.1 T2V DiT: {report}." if report else "")
        )
    report = _key_report(file_keys, set(expected))
    if report:
        raise CheckpointError(
            f"{info.path} looks like a Wan2.1 T2V DiT but its keys do not match the detected config "
            f"(dim {ref_config.dim}, {ref_config.num_layers} layers): {report}. The file is incomplete or modified."
        )
    wrong = [f"{k} is {list(inner[k]['shape'])}, expected {list(s)}"
             for k, s in expected.items() if tuple(inner[k]["shape"]) != s]
    if wrong:
        raise CheckpointError(
            f"{info.path} has tensors of the wrong shape for a Wan2.1 T2V DiT with dim {ref_config.dim}: "
            + "; ".join(wrong[:5]) + (f" ... (+{len(wrong) - 5} more)" if len(wrong) > 5 else "")
        )
    for k in inner:
        if k.endswith(SCALE_SUFFIXES) and k.rsplit(".", 1)[0] + ".weight" not in expected:
            raise CheckpointError(f"{info.path} has a scale tensor {info.key_prefix}{k} for a weight that does not exist")


def _default_dtype(info: CheckpointInfo) -> torch.dtype:
    float_counts = Counter()
    header, _ = read_header(info.path)
    for k, v in header.items():
        if k.startswith(info.key_prefix) and not _is_fp8_extra(k[len(info.key_prefix):]):
            dt = ST_DTYPES.get(v["dtype"])
            if dt is not None and dt.is_floating_point:
                float_counts[torch.bfloat16 if dt in FP8_DTYPES else dt] += math.prod(v["shape"])
    return float_counts.most_common(1)[0][0] if float_counts else torch.float32


def _stored_fp8_dtype(info: CheckpointInfo) -> torch.dtype | None:
    """The fp8 dtype a file stores its block weights in (ComfyUI's *_fp8_e4m3fn[_scaled] files), else None."""
    header, _ = read_header(info.path)
    counts = Counter(ST_DTYPES.get(v["dtype"]) for k, v in header.items()
                     if k.startswith(info.key_prefix + "blocks.") and k.endswith(".weight"))
    fp8 = [(n, dt) for dt, n in counts.items() if dt in FP8_DTYPES]
    return max(fp8, key=lambda x: x[0])[1] if fp8 else None


def _read_tensors(info: CheckpointInfo, device: str | torch.device):
    """Yield (inner key, tensor) one at a time so conversion never holds two full copies."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(info.path), framework="pt", device=str(device)) as f:
            for k in f.keys():
                if k.startswith(info.key_prefix):
                    yield k[len(info.key_prefix):], f.get_tensor(k)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"cannot read {info.path}: {e}. The file is damaged; download or copy it again.") from e


DTYPE_NAMES = {
    "fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "fp8": torch.float8_e4m3fn,
    "fp8_e4m3fn": torch.float8_e4m3fn, "float8_e4m3fn": torch.float8_e4m3fn, "default": None, "auto": None,
}


# the spellings offered in UIs and the CLI (each a key of DTYPE_NAMES)
DTYPE_CHOICES = ("default", "fp8_e4m3fn", "bf16", "fp16", "fp32")


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """Accept a torch dtype or a name as UIs spell it ("bf16", "fp8_e4m3fn", "default")."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPE_NAMES[str(dtype).lower()]
    except KeyError:
        raise ConfigError(f"unknown weight dtype {dtype!r}; use one of {', '.join(DTYPE_NAMES)}") from None


def load_dit(path: str | os.PathLike, device: str | torch.device = "cpu",
             dtype: torch.dtype | str | None = None) -> WanDiT:
    """Load a Wan2.1 T2V-layout DiT with strict key and shape checks.

    device "meta" gives the same model without reading a weight (names, shapes and dtypes as
    loaded: FSDP builds the processes other than the one that reads the file this way).
    dtype: None keeps the file's own precision: an fp8 file keeps its block linears in fp8 (half
    the memory of bf16) and computes in bf16, any other file keeps its dominant float dtype;
    fp32/fp16/bf16 convert (fp8 weights are dequantized); torch.float8_e4m3fn keeps (or makes)
    scaled fp8 weights in the block linears and computes in bf16.
    """
    dtype = resolve_dtype(dtype)
    info = inspect_checkpoint(path)
    check_dit_checkpoint(info)
    if dtype is None:
        dtype = _stored_fp8_dtype(info)
    keep_fp8 = dtype in FP8_DTYPES
    compute = torch.bfloat16 if keep_fp8 else (dtype or _default_dtype(info))
    with torch.device("meta"):
        model = WanDiT(info.config)
    fp8_names = set(use_fp8_block_linears(model, dtype) if keep_fp8 else ())
    if torch.device(device).type == "meta":  # the layout only: names, shapes and dtypes, no weights read
        for p in model.parameters():
            if p.dtype.is_floating_point and p.dtype not in FP8_DTYPES:
                p.data = p.data.to(compute)
            p.requires_grad_(p.dtype.is_floating_point and p.dtype not in FP8_DTYPES)
        return model.eval()

    raw = dict(_read_tensors(info, device))
    sd: dict[str, torch.Tensor] = {}
    for k in [k for k in raw if not _is_fp8_extra(k)]:
        w = raw.pop(k)
        if not (w.dtype.is_floating_point or w.dtype in FP8_DTYPES):
            raise CheckpointError(f"{info.path}: tensor {info.key_prefix}{k} has dtype {w.dtype}, expected a float type")
        module = k.rsplit(".", 1)[0]
        scale = raw.pop(module + ".scale_weight", None) if k.endswith(".weight") else None
        if module in fp8_names and k.endswith(".weight"):
            if w.dtype == dtype:
                sd[k] = w
                sd[module + ".scale_weight"] = (scale if scale is not None else torch.ones(())).float().reshape(())
            else:
                sd[k], sd[module + ".scale_weight"] = quantize(dequantize(w, scale, torch.float32), dtype)
        else:
            sd[k] = dequantize(w, scale, compute) if (w.dtype in FP8_DTYPES or scale is not None) else w.to(compute)
        del w
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:  # pragma: no cover - check_dit_checkpoint catches these first
        raise CheckpointError(f"{info.path} does not fit the detected Wan config: {e}") from e
    for p in model.parameters():
        p.requires_grad_(p.dtype.is_floating_point and p.dtype not in FP8_DTYPES)
    return model.eval()


def save_dit(model: WanDiT, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write a DiT as bare-key safetensors with its config in the metadata (atomic)."""
    from ..io.safetensors_file import save_state_dict

    meta = {CONFIG_METADATA_KEY: json.dumps(model.config.to_dict())}
    meta.update(metadata or {})
    return save_state_dict(model.state_dict(), path, metadata=meta)


__all__ = ["CheckpointInfo", "inspect_checkpoint", "check_dit_checkpoint", "load_dit", "save_dit", "resolve_dtype",
           "DTYPE_CHOICES", "FAMILY_DESCRIPTIONS", "PREFIXES", "CONFIG_METADATA_KEY"]
