"""umT5-XXL, Wan2.1's text encoder, run through transformers' UMT5EncoderModel from a local file.

Files users have (all safetensors; the loader tells them apart from keys and dtypes):
- ComfyUI's repackaged `umt5_xxl_fp16.safetensors` / `umt5_xxl_fp8_e4m3fn_scaled.safetensors`:
  transformers' key names (`shared.weight`, `encoder.block.N.layer.0.SelfAttention.q.weight`, ...),
  the sentencepiece model embedded as a uint8 tensor `spiece_model`, and for fp8 a `scale_weight`
  per linear plus a `scaled_fp8` marker (real weight = fp8 weight * scale_weight).
- The Wan release's `models_t5_umt5-xxl-enc-bf16` converted to safetensors: Wan's own names
  (`token_embedding`, `blocks.N.attn.q`, `blocks.N.ffn.gate.0`, `blocks.N.pos_embedding.embedding`,
  `norm`), mapped here to transformers' names. Its tokenizer is the `google/umt5-xxl` folder.
The config is read from tensor shapes, so a tiny file of the same layout loads the same way.

Features follow Wan: the prompt's real tokens (ending with </s>) are encoded with an attention
mask, and every position after them is zero up to max_length (512).
"""
from __future__ import annotations

import html
import json
import logging
import os
import re
from pathlib import Path

import torch

from ..errors import CheckpointError
from .text_prompts import check_prompts, pad_token_rows

log = logging.getLogger(__name__)

# Published umT5-XXL encoder dimensions (google/umt5-xxl; Wan's umt5_xxl()); used to name a
# file as "the real thing" in messages and as the default when metadata says nothing else.
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_heads=64, num_layers=24,
                relative_attention_num_buckets=32)
UMT5_MAX_LENGTH = 512  # Wan's text_len
SPIECE_KEY = "spiece_model"
_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)
_FP8_MARKER = "scaled_fp8"
_ST_FLOATS = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
_SPIECE_HINT = (
    "Get the umT5 tokenizer without downloading anything at run time: ComfyUI's repackaged "
    "umt5_xxl_fp16.safetensors / umt5_xxl_fp8_e4m3fn_scaled.safetensors (in ComfyUI/models/text_encoders/) "
    "carry it inside as 'spiece_model'; the Wan2.1 release ships it as the folder google/umt5-xxl/ "
    "(spiece.model, tokenizer.json). Put spiece.model or tokenizer.json next to the weights, or pass "
    "tokenizer=<path to spiece.model, tokenizer.json or their folder>."
)

# Wan's module names -> transformers' (the mapping is 1:1; only names differ).
_WAN_BLOCK = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    # Wan computes fc1(x) * gelu(gate(x)); transformers computes gelu(wi_0(x)) * wi_1(x)
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_WAN_TOP = {"token_embedding.weight": "shared.weight", "norm.weight": "encoder.final_layer_norm.weight"}


# ----------------------------------------------------------------------------- key layouts

def umt5_layout(keys) -> tuple[str, str] | None:
    """("hf" | "wan", key prefix) if the keys are a umT5/T5 encoder in one of the two layouts."""
    for k in keys:
        if k.endswith("encoder.final_layer_norm.weight"):
            return "hf", k[: -len("encoder.final_layer_norm.weight")]
    for k in keys:
        if k.endswith("blocks.0.attn.q.weight") and not k.endswith("self_attn.q.weight"):
            prefix = k[: -len("blocks.0.attn.q.weight")]
            if f"{prefix}token_embedding.weight" in keys or f"{prefix}blocks.0.ffn.gate.0.weight" in keys:
                return "wan", prefix
    return None


def hf_name(layout: str, key: str) -> str | None:
    """transformers' name for an (unprefixed) key, or None if it is not an encoder weight."""
    if layout == "hf":
        return "shared.weight" if key == "encoder.embed_tokens.weight" else key
    if key in _WAN_TOP:
        return _WAN_TOP[key]
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
    if m and m.group(2) in _WAN_BLOCK:
        return f"encoder.block.{m.group(1)}.{_WAN_BLOCK[m.group(2)]}"
    return None


def config_from_shapes(path: Path, shapes: dict[str, list[int]]) -> dict:
    """UMT5Config arguments read from tensor shapes keyed by transformers' names."""

    def shape(key):
        if key not in shapes:
            raise CheckpointError(f"{path} looks like a T5 encoder but has no {key!r}; the file is incomplete")
        return shapes[key]

    vocab, d_model = shape("shared.weight")
    layers = 1 + max(int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.block\.(\d+)\.", k)))
    if "encoder.block.0.layer.1.DenseReluDense.wi.weight" in shapes:
        raise CheckpointError(
            f"{path} is an original (non-gated) T5 encoder; Wan needs umT5-XXL (gated-GELU, per-layer position "
            "bias), e.g. umt5_xxl_fp16.safetensors"
        )
    buckets, heads = shape("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    if layers > 1 and "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in shapes:
        raise CheckpointError(
            f"{path} is a T5 v1.1 encoder (one shared position bias, like the t5xxl files of Flux and SD3), not "
            "umT5; Wan's DiT was trained with umT5-XXL features. Use umt5_xxl_fp16.safetensors or "
            "umt5_xxl_fp8_e4m3fn_scaled.safetensors."
        )
    inner = shape("encoder.block.0.layer.0.SelfAttention.q.weight")[0]
    return dict(
        vocab_size=vocab, d_model=d_model, d_kv=inner // heads, num_heads=heads, num_layers=layers,
        d_ff=shape("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")[0],
        relative_attention_num_buckets=buckets,
    )


# ----------------------------------------------------------------------------- tokenizers

class SentencePieceTokenizer:
    def __init__(self, proto: bytes, source: str):
        import sentencepiece

        self.source = source
        self.sp = sentencepiece.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(proto)
        except (RuntimeError, OSError) as e:
            raise CheckpointError(f"{source} is not a valid sentencepiece model ({e}). {_SPIECE_HINT}") from e
        self.pad_id = max(self.sp.pad_id(), 0)
        self.eos_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else self.sp.piece_to_id("</s>")
        self.vocab_size = self.sp.get_piece_size()

    def ids(self, text: str) -> list[int]:
        return list(self.sp.encode(text)) + [self.eos_id]


class JsonTokenizer:
    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self.source = str(path)
        try:
            self.tok = Tokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises a bare Exception on bad JSON
            raise CheckpointError(f"{path} is not a valid tokenizer.json ({e}). {_SPIECE_HINT}") from e
        self.pad_id = self.tok.token_to_id("<pad>") or 0
        eos = self.tok.token_to_id("</s>")
        self.eos_id = 1 if eos is None else eos
        self.vocab_size = self.tok.get_vocab_size()
        # The google/umt5-xxl tokenizer.json appends </s> itself; a bare one may not.
        self._adds_eos = self.tok.encode("").ids[-1:] == [self.eos_id]

    def ids(self, text: str) -> list[int]:
        ids = self.tok.encode(text).ids
        return ids if self._adds_eos else ids + [self.eos_id]


def tokenizer_from_path(path: Path):
    if path.is_dir():
        for cand in (path / "tokenizer.json", path / "spiece.model", path / "google" / "umt5-xxl" / "tokenizer.json",
                     path / "google" / "umt5-xxl" / "spiece.model"):
            if cand.is_file():
                return tokenizer_from_path(cand)
        raise CheckpointError(f"tokenizer folder {path} has neither tokenizer.json nor spiece.model. {_SPIECE_HINT}")
    if not path.is_file():
        raise CheckpointError(f"tokenizer file not found: {path}. {_SPIECE_HINT}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"tokenizer file {path} is empty (0 bytes); copy it again")
    if path.suffix == ".json":
        return JsonTokenizer(path)
    return SentencePieceTokenizer(path.read_bytes(), str(path))


def find_tokenizer(weights: Path, tokenizer, embedded: bytes | None):
    """Explicit path first, then the model embedded in the weights file, then files beside it."""
    if tokenizer is not None:
        return tokenizer_from_path(Path(tokenizer))
    if embedded:
        return SentencePieceTokenizer(embedded, f"the 'spiece_model' tensor inside {weights}")
    folder = weights.parent
    candidates = [folder / "tokenizer.json", folder / "spiece.model",
                  folder / "google" / "umt5-xxl" / "tokenizer.json", folder / "google" / "umt5-xxl" / "spiece.model"]
    for cand in candidates:
        if cand.is_file():
            return tokenizer_from_path(cand)
    raise CheckpointError(
        f"no tokenizer for {weights}: the file has no embedded 'spiece_model' and none of "
        f"{', '.join(str(c) for c in candidates)} exists. {_SPIECE_HINT}"
    )


def clean_prompt(text: str) -> str:
    """Wan's 'whitespace' cleaning: unescape HTML entities, collapse runs of whitespace."""
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


# ----------------------------------------------------------------------------- the encoder

class UMT5TextEncoder:
    """umT5 encoder + its tokenizer; encode() gives Wan-style zero-padded features."""

    def __init__(self, model, tokenizer, max_length: int = UMT5_MAX_LENGTH, source: str = ""):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.text_dim = int(model.config.d_model)
        self.source = source

    @property
    def device(self) -> torch.device:
        return self.model.shared.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.shared.weight.dtype

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask), each [B, longest prompt]; prompts longer than max_length are cut (with a warning)."""
        prompts = check_prompts(prompts)
        t = self.tokenizer
        return pad_token_rows([t.ids(clean_prompt(p)) for p in prompts], self.max_length, t.pad_id, t.eos_id, prompts)

    @torch.no_grad()
    def encode(self, prompts: list[str], device=None) -> torch.Tensor:
        """[B, max_length, text_dim] float32: real-token features, zeros after them."""
        ids, mask = self.tokenize(prompts)
        # Running only up to the longest prompt gives the same real-token features as running all
        # 512 positions (padding is masked out and T5 positions are relative) at a fraction of the cost.
        hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
        hidden = hidden.float() * mask.to(hidden.device, torch.float32)[..., None]
        out = torch.zeros((ids.shape[0], self.max_length, self.text_dim), dtype=torch.float32, device=hidden.device)
        out[:, : hidden.shape[1]] = hidden
        return out if device is None else out.to(device)


def _default_dtype(stored: torch.dtype, device: torch.device) -> torch.dtype:
    if stored in _FP8:
        return torch.bfloat16
    if stored == torch.float16 and device.type == "cpu":
        # fp16 matmuls are slow on CPU and T5 activations overflow fp16; bf16 has fp32's range.
        return torch.bfloat16
    return stored


def load_umt5(path: Path, header: dict, metadata: dict, layout: str, prefix: str, tokenizer=None,
              device="cpu", dtype=None, max_length: int | None = None) -> UMT5TextEncoder:
    from safetensors import safe_open
    from transformers import UMT5Config, UMT5EncoderModel

    device = torch.device(device)
    shapes, stored = {}, {}
    for key, info in header.items():
        if not key.startswith(prefix):
            continue
        name = hf_name(layout, key[len(prefix):])
        if name is not None and name.endswith(".weight"):
            shapes.setdefault(name, list(info["shape"]))
            stored[name] = key
    cfg_args = config_from_shapes(path, shapes)
    config = UMT5Config(
        **cfg_args, feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, relative_attention_max_distance=128,
        is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
        dropout_rate=0.0,
    )
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    missing = sorted(set(expected) - set(stored))
    if missing:
        raise CheckpointError(
            f"{path} is an incomplete umT5 encoder: {len(missing)} weights are missing, first: {missing[:4]}"
        )

    stored_names = {header[stored[k]]["dtype"] for k in expected}
    store_dtype = (torch.float8_e4m3fn if any(d.startswith("F8") for d in stored_names)
                   else _ST_FLOATS.get(header[stored["shared.weight"]]["dtype"], torch.float32))
    with safe_open(str(path), framework="pt", device="cpu") as f:
        target = dtype or _default_dtype(store_dtype, device)
        tensors = {}
        # one tensor at a time, so peak memory is the converted model plus one stored tensor
        for name in expected:
            t = f.get_tensor(stored[name])
            if t.dtype in _FP8:
                scale_key = stored[name][: -len("weight")] + "scale_weight"
                scale = f.get_tensor(scale_key).float() if scale_key in header else None
                t = t.float() * scale if scale is not None else t.float()
            if tuple(t.shape) != expected[name]:
                raise CheckpointError(f"{path}: {stored[name]} has shape {tuple(t.shape)}, expected {expected[name]}")
            tensors[name] = t.to(device=device, dtype=target)
        spiece_key = next((k for k in sorted(header) if k == SPIECE_KEY or k.endswith("." + SPIECE_KEY)), None)
        embedded = f.get_tensor(spiece_key).numpy().tobytes() if spiece_key else None
    model.load_state_dict(tensors, strict=False, assign=True)
    model.encoder.set_input_embeddings(model.shared)
    leftover = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.is_meta]
    if leftover:
        raise CheckpointError(f"{path}: these umT5 weights could not be filled from the file: {leftover[:4]}")
    model.eval().requires_grad_(False)
    tok = find_tokenizer(path, tokenizer, embedded)
    if tok.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"the tokenizer ({tok.source}) has {tok.vocab_size} tokens but {path} embeds only {config.vocab_size}; "
            "they belong to different models"
        )
    if config.vocab_size > 200_000 and tok.vocab_size < 0.9 * config.vocab_size:
        # umT5's table is 256384 rows for 256300 pieces; a much smaller tokenizer (T5's has 32100)
        # would run without error and silently feed the wrong tokens.
        raise CheckpointError(
            f"the tokenizer ({tok.source}) has {tok.vocab_size} tokens but {path} is a umT5 model with "
            f"{config.vocab_size}; it is another model's tokenizer (T5's has 32100). {_SPIECE_HINT}"
        )
    if max_length is None:
        max_length = int(json.loads(metadata.get("libragen.text_encoder", "{}")).get("max_length", UMT5_MAX_LENGTH))
    return UMT5TextEncoder(model, tok, max_length=max_length, source=str(path))


def save_umt5_for_tests(model, path: str | os.PathLike, spiece_proto: bytes | None = None,
                        layout: str = "hf", fp8: bool = False) -> Path:
    """Write a (small) UMT5EncoderModel the way real files are laid out, for tests and tools.

    layout="hf" with spiece_proto embedded is ComfyUI's layout; fp8=True stores every encoder-block
    linear as float8_e4m3fn + scale_weight with the scaled_fp8 marker; layout="wan" uses the Wan
    release's names.
    """
    from ..io.safetensors_file import save_state_dict

    sd = {k: v.detach().clone() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    out: dict[str, torch.Tensor] = {}
    if layout == "wan":
        back_top = {v: k for k, v in _WAN_TOP.items()}
        back_block = {v: k for k, v in _WAN_BLOCK.items()}
        for k, v in sd.items():
            if k in back_top:
                out[back_top[k]] = v
            else:
                m = re.fullmatch(r"encoder\.block\.(\d+)\.(.+)", k)
                out[f"blocks.{m.group(1)}.{back_block[m.group(2)]}"] = v
    else:
        for k, v in sd.items():
            if fp8 and k.startswith("encoder.block.") and v.ndim == 2 and "relative_attention_bias" not in k:
                w = v.float()
                scale = (w.abs().max() / torch.finfo(torch.float8_e4m3fn).max).clamp(min=1e-12)
                out[k] = (w / scale).to(torch.float8_e4m3fn)
                out[k[: -len("weight")] + "scale_weight"] = scale.reshape(())
            else:
                out[k] = v
        if fp8:
            out[_FP8_MARKER] = torch.empty(0, dtype=torch.float8_e4m3fn)
    if spiece_proto is not None:
        out[SPIECE_KEY] = torch.frombuffer(bytearray(spiece_proto), dtype=torch.uint8)
    return save_state_dict(out, path)

