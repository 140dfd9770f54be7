"""The small text encoder of the embedded SpriteWorld model: word-level tokens, a few layers.

SpriteWorld captions come from a closed grammar, so a word vocabulary covers them exactly and a
small transformer trained jointly with the base model is enough; umT5's 5.7B parameters would
dwarf the whole model. The vocabulary is a JSON file beside the weights (`<name>.vocab.json`),
so it can be read and diffed; unknown words map to <unk>.

Tokenization: lower-case, then words (\\w+) and single punctuation marks, so
"Ref 1[the blue star]" -> ref, 1, [, the, blue, star, ]. Every prompt ends with <eos>, so even an
empty prompt has one real token (as with T5's </s>).
"""
from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from ..io.atomic import atomic_path
from .text_prompts import check_prompts, pad_token_rows

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
SPECIALS = (PAD, UNK, EOS)
FORMAT_KEY = "libragen.format"
FORMAT = "small-text-encoder"
CONFIG_KEY = "libragen.text_encoder"
_WORD = re.compile(r"\w+|[^\w\s]")


def vocab_path_for(weights: str | os.PathLike) -> Path:
    """Where the vocabulary of a weights file lives: `x.safetensors` -> `x.vocab.json`."""
    weights = Path(weights)
    return weights.with_name(weights.stem + ".vocab.json")


class WordTokenizer:
    """Closed-vocabulary word tokenizer; ids 0, 1, 2 are <pad>, <unk>, <eos>."""

    def __init__(self, words: Iterable[str]):
        words = list(words)
        if tuple(words[:3]) != SPECIALS:
            words = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        if len(set(words)) != len(words):
            raise ValueError("vocabulary has duplicate words")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}
        self.pad_id, self.unk_id, self.eos_id = 0, 1, 2

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    @staticmethod
    def split(text: str) -> list[str]:
        return _WORD.findall(text.lower())

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_count: int = 1, extra_words: Iterable[str] = ()) -> WordTokenizer:
        """Vocabulary of every word seen at least min_count times (sorted, so builds are reproducible)."""
        counts = Counter(w for t in texts for w in cls.split(t))
        words = {w for w, c in counts.items() if c >= min_count}
        words.update(w for e in extra_words for w in cls.split(e))
        return cls(sorted(words))

    def ids(self, text: str) -> list[int]:
        return [self.index.get(w, self.unk_id) for w in self.split(text)] + [self.eos_id]

    def save(self, path: str | os.PathLike) -> Path:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"type": "word", "lowercase": True, "words": self.words}, ensure_ascii=False,
                                      indent=0) + "\n", encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordTokenizer:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(
                f"vocabulary file not found: {path}. The small text encoder's vocabulary ships beside its weights "
                "as <weights name>.vocab.json; copy it next to the .safetensors file or pass tokenizer=<its path>."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            words = data["words"]
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise TypeError("'words' must be a list of strings")
            return cls(words)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path} is not a valid vocabulary file ({e}); it needs {{\"words\": [...]}}") from e


@dataclass(frozen=True)
class SmallTextConfig:
    vocab_size: int
    text_dim: int = 256
    num_layers: int = 4
    num_heads: int = 4
    ffn_mult: int = 4
    max_length: int = 64

    def __post_init__(self):
        if self.text_dim % self.num_heads:
            raise ValueError(f"text_dim {self.text_dim} is not divisible by num_heads {self.num_heads}")


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return x + self.ffn(self.norm2(x))


class SmallTextEncoder(nn.Module):
    """Pre-norm transformer over word tokens with learned positions; implements TextEncoder."""

    def __init__(self, config: SmallTextConfig, tokenizer: WordTokenizer):
        super().__init__()
        if tokenizer.vocab_size > config.vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} words but config.vocab_size is {config.vocab_size}")
        self.config = config
        self.tokenizer = tokenizer
        self.text_dim = config.text_dim
        self.max_length = config.max_length
        d = config.text_dim
        self.token_embed = nn.Embedding(config.vocab_size, d)
        self.pos_embed = nn.Parameter(torch.zeros(config.max_length, d))
        self.layers = nn.ModuleList(_Block(d, config.num_heads, config.ffn_mult * d) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(d)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)
        for layer in self.layers:
            for lin in (layer.qkv, layer.ffn[0]):
                nn.init.normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)
            # residual branches start small so a fresh encoder is close to its embeddings
            for lin in (layer.proj, layer.ffn[2]):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * len(self.layers)))
                nn.init.zeros_(lin.bias)

    @property
    def device(self) -> torch.device:
        return self.token_embed.weight.device

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = check_prompts(prompts)
        t = self.tokenizer
        return pad_token_rows([t.ids(p) for p in prompts], self.max_length, t.pad_id, t.eos_id, prompts)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        x = self.token_embed(ids) + self.pos_embed[:n]
        key_mask = mask.bool()
        for layer in self.layers:
            x = layer(x, key_mask)
        return self.final_norm(x) * mask[..., None].to(x.dtype)

    def encode(self, prompts: list[str], device=None) -> torch.Tensor:
        """[B, max_length, text_dim]; gradients flow when enabled, since it trains with the DiT."""
        ids, mask = self.tokenize(prompts)
        hidden = self.forward(ids.to(self.device), mask.to(self.device))
        out = hidden.new_zeros((ids.shape[0], self.max_length, self.text_dim))
        out[:, : hidden.shape[1]] = hidden
        out = out.float()
        return out if device is None else out.to(device)

    def save(self, path: str | os.PathLike) -> Path:
        """Write `path` (safetensors, config in metadata) and the vocabulary beside it."""
        from ..io.safetensors_file import save_state_dict

        path = Path(path)
        self.tokenizer.save(vocab_path_for(path))
        meta = {FORMAT_KEY: FORMAT, CONFIG_KEY: json.dumps(asdict(self.config))}
        return save_state_dict(self.state_dict(), path, metadata=meta)


def is_small_text_encoder(keys, metadata: dict) -> bool:
    return metadata.get(FORMAT_KEY) == FORMAT or ("pos_embed" in keys and "token_embed.weight" in keys)


def load_small_text_encoder(path: Path, metadata: dict, tokenizer=None, device="cpu", dtype=None) -> SmallTextEncoder:
    from ..io.safetensors_file import load_state_dict

    try:
        config = SmallTextConfig(**json.loads(metadata[CONFIG_KEY]))
    except (KeyError, json.JSONDecodeError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{path} looks like a LibraGen small text encoder but its {CONFIG_KEY!r} metadata is missing or invalid ({e}); "
            "save it with SmallTextEncoder.save()"
        ) from e
    tok = WordTokenizer.load(tokenizer if tokenizer is not None else vocab_path_for(path))
    if tok.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"the vocabulary {tokenizer or vocab_path_for(path)} has {tok.vocab_size} words but {path} was built for "
            f"{config.vocab_size}; they belong to different models"
        )
    with torch.device("meta"):
        model = SmallTextEncoder(config, tok)
    sd = load_state_dict(path)
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not match its own config: {e}") from e
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device=device)
    return model.eval()
