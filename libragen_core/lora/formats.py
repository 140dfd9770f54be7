"""LoRA files: write ComfyUI's native Wan form; read that plus kohya, diffusers and peft spellings.

Written (default, "comfyui"):
    diffusion_model.blocks.0.self_attn.q.lora_A.weight   [rank, in]
    diffusion_model.blocks.0.self_attn.q.lora_B.weight   [out, rank]
    diffusion_model.blocks.0.self_attn.q.alpha           scalar
    diffusion_model.blocks.0.ffn.0.diff                  [out, in]  (full-matrix merges only)
ComfyUI maps "diffusion_model.<module>" to the weight "diffusion_model.<module>.weight" for every
model, so LoraLoaderModelOnly applies these files with scale alpha / rank, as we do.

Read: any prefix of "diffusion_model.", "model.diffusion_model.", "transformer.",
"base_model.model.", "lora_unet_" (kohya, underscores for dots); factor suffixes
.lora_A/.lora_B(.<adapter>).weight, .lora_down/.lora_up.weight, .lora.down/.lora.up.weight;
diffusers' Wan module names (attn1.to_q, attn2.add_k_proj, ffn.net.0.proj, ...) are mapped back.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from ..errors import CheckpointError, InputError
from .weights import LoraFactors, LoraWeights, target_of

NAMINGS = ("comfyui", "kohya", "diffusers", "peft")
FORMAT_TAG = "libragen-lora-v1"

# Every Linear of a Wan2.1 DiT (T2V, plus the I2V image-context layers). Conv and norm layers
# are not LoRA targets here.
_WAN_LINEAR = re.compile(
    r"^(blocks\.\d+\.(self_attn|cross_attn)\.(q|k|v|o|k_img|v_img)"
    r"|blocks\.\d+\.ffn\.(0|2)"
    r"|text_embedding\.(0|2)|time_embedding\.(0|2)|time_projection\.1|head\.head"
    r"|img_emb\.proj\.(1|3))$"
)

# Wan module-name words that contain an underscore; kohya names replace every "." with "_",
# so these are rejoined first when turning "blocks_0_self_attn_q" back into dotted form.
_COMPOUND_WORDS = ("self_attn", "cross_attn", "k_img", "v_img", "norm_q", "norm_k", "norm_k_img",
                   "text_embedding", "time_embedding", "time_projection", "patch_embedding", "img_emb",
                   "emb_pos")

# diffusers WanTransformer3DModel names -> Wan names (facts from diffusers' Wan conversion map).
_DIFFUSERS_TO_WAN = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("proj_out", "head.head"),
    ("attn1.to_out.0", "self_attn.o"), ("attn2.to_out.0", "cross_attn.o"),
    ("attn1.to_q", "self_attn.q"), ("attn1.to_k", "self_attn.k"), ("attn1.to_v", "self_attn.v"),
    ("attn2.to_q", "cross_attn.q"), ("attn2.to_k", "cross_attn.k"), ("attn2.to_v", "cross_attn.v"),
    ("attn2.add_k_proj", "cross_attn.k_img"), ("attn2.add_v_proj", "cross_attn.v_img"),
    ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"),
]
_WAN_TO_DIFFUSERS = [(w, d) for d, w in _DIFFUSERS_TO_WAN]

_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.", "unet.")
_KOHYA_PREFIXES = ("lora_unet__", "lora_unet_", "lora_transformer_")

# (regex on the key, role); group 1 is the layer stem, group 2 (if any) a peft adapter name.
_SUFFIXES = [
    (re.compile(r"^(.+)\.lora_A(?:\.([^.]+))?\.weight$"), "down"),
    (re.compile(r"^(.+)\.lora_B(?:\.([^.]+))?\.weight$"), "up"),
    (re.compile(r"^(.+)\.lora_down\.weight$"), "down"),
    (re.compile(r"^(.+)\.lora_up\.weight$"), "up"),
    (re.compile(r"^(.+)\.lora\.down\.weight$"), "down"),
    (re.compile(r"^(.+)\.lora\.up\.weight$"), "up"),
    (re.compile(r"^(.+)\.alpha$"), "alpha"),
    (re.compile(r"^(.+)\.diff$"), "diff"),
]
# key fragment -> the LoRA variant it belongs to (ComfyUI loads these; we only do plain LoRA)
_UNSUPPORTED = {
    ".dora_scale": "DoRA", ".lora_mid.": "LoCon/Tucker", ".hada_": "LoHa", ".lokr_": "LoKr",
    ".oft_": "OFT", ".boft_": "BOFT", ".diff_b": "bias patches", ".w_norm": "norm patches",
    ".b_norm": "norm patches", ".set_weight": "weight replacement", ".reshape_weight": "reshape patches",
}

_SECRET_WORDS = ("token", "secret", "password", "passwd", "api_key", "apikey", "credential", "auth")


# ---------------------------------------------------------------- names

def is_wan_linear(name: str) -> bool:
    return bool(_WAN_LINEAR.match(name))


def _kohya_to_dotted(stem: str) -> str:
    """"blocks_0_self_attn_q" -> "blocks.0.self_attn.q" (greedy over known compound words)."""
    words = stem.strip("_").split("_")
    out, i = [], 0
    while i < len(words):
        for n in (3, 2):
            joined = "_".join(words[i:i + n])
            if len(words) - i >= n and joined in _COMPOUND_WORDS:
                out.append(joined)
                i += n
                break
        else:
            out.append(words[i])
            i += 1
    return ".".join(out)


def _diffusers_to_wan(name: str) -> str:
    for src, dst in _DIFFUSERS_TO_WAN:
        if name == src or name.endswith("." + src):
            return name[: len(name) - len(src)] + dst
    return name


def canonical_layer_name(stem: str) -> str:
    """Map a layer stem in any accepted spelling to the DiT module name (may still be unknown)."""
    for p in _KOHYA_PREFIXES:
        if stem.startswith(p):
            return _kohya_to_dotted(stem[len(p):])
    changed = True
    while changed:  # peft saves "base_model.model.transformer...", so strip repeatedly
        changed = False
        for p in _PREFIXES:
            if stem.startswith(p):
                stem, changed = stem[len(p):], True
    return _diffusers_to_wan(stem)


def file_layer_stem(name: str, naming: str) -> str:
    if naming == "comfyui":
        return f"diffusion_model.{name}"
    if naming == "kohya":
        return "lora_unet_" + name.replace(".", "_")
    if naming == "diffusers":
        for wan, diff in _WAN_TO_DIFFUSERS:
            if name == wan or name.endswith("." + wan):
                return "transformer." + name[: len(name) - len(wan)] + diff
        raise InputError(f"layer {name} has no diffusers name; save with naming='comfyui'")
    if naming == "peft":
        return f"base_model.model.{name}"
    raise InputError(f"unknown LoRA naming {naming!r}; choose one of {', '.join(NAMINGS)}")


# ---------------------------------------------------------------- state dicts

def to_state_dict(lora: LoraWeights, naming: str = "comfyui") -> dict[str, torch.Tensor]:
    """Tensors of a LoRA under one naming convention (see module docstring)."""
    if naming not in NAMINGS:
        raise InputError(f"unknown LoRA naming {naming!r}; choose one of {', '.join(NAMINGS)}")
    down_s, up_s = (".lora_down.weight", ".lora_up.weight") if naming == "kohya" else (
        ".lora_A.weight", ".lora_B.weight")
    # diffusers/peft files carry alpha in a side config, not in the tensors; fold the scale into
    # lora_B there so the file means the same thing when read with the implied alpha = rank.
    fold = naming in ("diffusers", "peft")
    sd: dict[str, torch.Tensor] = {}
    for name in lora.layer_names():
        stem = file_layer_stem(name, naming)
        if name in lora.factors:
            f = lora.factors[name]
            sd[stem + down_s] = f.down.contiguous()
            if fold:
                sd[stem + up_s] = (f.up.float() * f.scale).to(f.up.dtype).contiguous()
            else:
                sd[stem + up_s] = f.up.contiguous()
                sd[stem + ".alpha"] = torch.tensor(f.alpha, dtype=torch.float32)
        else:
            if fold:
                raise InputError(
                    f"layer {name} is a full-matrix diff, which the {naming} format cannot hold; save with "
                    "naming='comfyui' or merge with a target rank to get factors"
                )
            sd[stem + ".diff"] = lora.diffs[name].contiguous()
    return sd


def from_state_dict(sd: dict[str, torch.Tensor], *, alpha: float | None = None, source: str = "LoRA",
                    metadata: dict[str, str] | None = None) -> LoraWeights:
    """Parse LoRA tensors in any accepted spelling into canonical layer names.

    alpha: used for layers that carry no `.alpha` tensor (peft/diffusers files keep it in a side
    config); default = the layer's rank, i.e. scale 1, which is what ComfyUI assumes too.
    """
    if not sd:
        raise CheckpointError(f"{source} holds no tensors; it is not a LoRA file")
    groups: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    stems_for: dict[str, set[str]] = {}
    adapters: set[str] = set()
    unknown: list[str] = []
    unsupported: list[str] = []
    for key, t in sd.items():
        kind = next((k for s, k in _UNSUPPORTED.items() if s in key), None)
        if kind:
            unsupported.append(f"{key} ({kind})")
            continue
        parsed = _split_key(key)
        if parsed is None:
            unknown.append(key)
            continue
        stem, role, adapter = parsed
        if adapter:
            adapters.add(adapter)
        name = canonical_layer_name(stem)
        if not is_wan_linear(name):
            unknown.append(key)
            continue
        stems_for.setdefault(name, set()).add(stem)
        if role in groups.setdefault(name, {}):
            raise CheckpointError(
                f"{source} has two {role} tensors for layer {name}: {groups[name][role][0]} and {key}; "
                "it mixes naming conventions or adapters"
            )
        groups[name][role] = (key, t)
    if unsupported:
        raise CheckpointError(
            f"{source} uses LoRA variants that are not supported (plain LoRA on Linear layers only): "
            f"{', '.join(unsupported[:5])}{' ...' if len(unsupported) > 5 else ''}"
        )
    if unknown:
        raise CheckpointError(
            f"{source} has {len(unknown)} key(s) that are not LoRA weights for a Wan2.1 DiT Linear layer, "
            f"e.g. {', '.join(unknown[:5])}. Expected forms like "
            "'diffusion_model.blocks.0.self_attn.q.lora_A.weight' (ComfyUI), "
            "'lora_unet_blocks_0_self_attn_q.lora_down.weight' (kohya) or "
            "'transformer.blocks.0.attn1.to_q.lora_A.weight' (diffusers). Is this a LoRA for another model?"
        )
    if len(adapters) > 1:
        raise CheckpointError(f"{source} holds several peft adapters ({sorted(adapters)}); save one adapter per file")

    factors: dict[str, LoraFactors] = {}
    diffs: dict[str, torch.Tensor] = {}
    for name, g in groups.items():
        if "diff" in g:
            if set(g) != {"diff"}:
                raise CheckpointError(f"{source}: layer {name} has both a full diff and LoRA factors")
            diffs[name] = g["diff"][1]
            continue
        if "down" not in g or "up" not in g:
            have = ", ".join(k for k, _ in g.values())
            missing = "lora_A/lora_down" if "down" not in g else "lora_B/lora_up"
            raise CheckpointError(f"{source}: layer {name} has {have} but no {missing} tensor; the file is incomplete")
        down, up = g["down"][1], g["up"][1]
        if down.ndim != 2 or up.ndim != 2:
            raise CheckpointError(
                f"{source}: layer {name} has factors of shape {tuple(down.shape)} / {tuple(up.shape)}; "
                "only 2-D (Linear) LoRA factors are supported"
            )
        if down.shape[0] != up.shape[1]:
            raise CheckpointError(
                f"{source}: rank mismatch in layer {name}: {g['down'][0]} has rank {down.shape[0]} but "
                f"{g['up'][0]} has rank {up.shape[1]}"
            )
        a = float(g["alpha"][1].float().item()) if "alpha" in g else (alpha if alpha is not None else down.shape[0])
        factors[name] = LoraFactors(down, up, a)
    return LoraWeights(factors, diffs, dict(metadata or {}))


# ---------------------------------------------------------------- files

def lora_metadata(lora: LoraWeights, *, base_model: str = "wan2.1", method: str | None = None,
                  extra: dict[str, str] | None = None) -> dict[str, str]:
    """Header metadata describing a LoRA (all values strings, as safetensors requires)."""
    s = lora.summary()
    meta = dict(lora.metadata)
    meta.update({
        "format": FORMAT_TAG,
        "base_model": base_model,
        "rank": str(s["ranks"][0]) if len(s["ranks"]) == 1 else json.dumps(s["ranks"]),
        "alpha": _fmt_num(s["alphas"][0]) if len(s["alphas"]) == 1 else json.dumps(s["alphas"]),
        "targets": json.dumps(s["targets"]),
        "layers": str(s["layers"]),
    })
    if s["diff_layers"]:
        meta["diff_layers"] = str(s["diff_layers"])
    if method:
        meta["method"] = method
    meta.update(extra or {})
    return meta


def save_lora(lora: LoraWeights, path: str | os.PathLike, *, naming: str = "comfyui",
              dtype: torch.dtype | None = None, base_model: str = "wan2.1", method: str | None = None,
              metadata: dict[str, str] | None = None) -> Path:
    """Write a LoRA as .safetensors (atomically). Default naming loads in ComfyUI's LoRA loaders."""
    from ..io.safetensors_file import save_state_dict

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise InputError(f"LoRA files are written as .safetensors; got {path.name}. Use a .safetensors name.")
    if len(lora) == 0:
        raise InputError("refusing to save an empty LoRA (no layers)")
    meta = lora_metadata(lora, base_model=base_model, method=method, extra=metadata)
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InputError(f"LoRA metadata must map strings to strings; {k!r} -> {type(v).__name__}")
        if any(w in k.lower() for w in _SECRET_WORDS):
            raise InputError(f"metadata key {k!r} looks like a credential; LoRA files never carry secrets")
    sd = to_state_dict(lora if dtype is None else lora.to(dtype), naming)
    for k, v in list(sd.items()):
        if k.endswith(".alpha"):
            sd[k] = v.float()
    return save_state_dict(sd, path, metadata=meta)


# The metadata key the LoRA Merge node stamps into every file it saves (its value: what was merged).
# A file that carries it was written by a merge and may be replaced by the next one of that name.
MERGE_STAMP = "libragen_merge"


def written_by_merge(path: str | os.PathLike) -> bool:
    """Whether `path` is a readable safetensors file whose header carries MERGE_STAMP."""
    from ..io.safetensors_file import read_header

    try:
        _, meta = read_header(path)
    except CheckpointError:
        return False
    return MERGE_STAMP in meta


def load_lora(path: str | os.PathLike, *, alpha: float | None = None) -> LoraWeights:
    """Read a LoRA file in any accepted naming; errors name the file and the offending keys."""
    from ..io.safetensors_file import load_state_dict, read_header

    _, meta = read_header(path)
    return from_state_dict(load_state_dict(path), alpha=alpha, source=str(path), metadata=meta)


def describe(lora: LoraWeights) -> str:
    s = lora.summary()
    lines = [f"layers: {s['layers']} ({s['factor_layers']} low-rank, {s['diff_layers']} full diff)",
             f"ranks: {s['ranks']}  alphas: {s['alphas']}  parameters: {s['parameters']:,}",
             f"targets: {', '.join(s['targets'])}"]
    blocks = sorted({int(n.split('.')[1]) for n in lora.layer_names() if n.startswith("blocks.")})
    if blocks:
        lines.append(f"blocks: {blocks[0]}..{blocks[-1]} ({len(blocks)})")
    for k in ("format", "base_model", "method"):
        if k in lora.metadata:
            lines.append(f"{k}: {lora.metadata[k]}")
    return "\n".join(lines)


def _split_key(key: str) -> tuple[str, str, str | None] | None:
    """key -> (layer stem, role, peft adapter name or None), or None if no LoRA suffix matches."""
    for pat, role in _SUFFIXES:
        m = pat.match(key)
        if m:
            return m.group(1), role, (m.group(2) if m.re.groups >= 2 else None)
    return None


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


__all__ = ["NAMINGS", "canonical_layer_name", "describe", "from_state_dict", "is_wan_linear", "load_lora",
           "lora_metadata", "save_lora", "target_of", "to_state_dict"]
