"""Tiny random base files in the layouts of the real ones, for CPU smoke runs and tests.

    python -m training.tiny_base --out runs/tiny-wan

writes dit.safetensors (Wan2.1 T2V layout, fp16, bare keys, as ComfyUI's diffusion_models files;
head_dim 128 and text_dim 4096 so ComfyUI's own WanModel loads it), vae.safetensors (Wan2.1 VAE
layout, bf16, no LibraGen extras, like wan_2.1_vae.safetensors) and umt5.safetensors (umT5 encoder
in transformers' names, fp16, with a sentencepiece tokenizer embedded as `spiece_model`, like
umt5_xxl_fp16.safetensors). They load through exactly the code that loads the real files; their
outputs are noise. `model.tiny = true` in a config makes them on first use
(training/configs/cpu-smoke.toml).
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import torch

FILES = {"dit": "dit.safetensors", "vae": "vae.safetensors", "text_encoder": "umt5.safetensors"}
_SENTENCES = [
    "a red square slides to the right on a gradient", "the dog runs across the garden while the camera pans left",
    "Ref 1: a small brown dog. Video: Ref 1[the dog] runs to the left.", "the subject in reference image 1",
    "a woman in a blue coat walks past a white car", "the cat jumps onto the table and looks around",
]


def _spiece() -> bytes:
    import sentencepiece

    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_SENTENCES * 20), model_writer=buf, vocab_size=96, pad_id=0, eos_id=1, unk_id=2,
        bos_id=-1, hard_vocab_limit=False, minloglevel=2, num_threads=1)
    return buf.getvalue()


def write_tiny_dit(path: Path, seed: int = 0) -> Path:
    from libragen_core.io.safetensors_file import save_state_dict
    from libragen_core.models.presets import build_dit

    torch.manual_seed(seed)
    dit = build_dit("tiny")
    with torch.no_grad():  # a fresh head is near zero: perturb so the model's output depends on its input
        for p in dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return save_state_dict({k: v.half() for k, v in dit.state_dict().items()}, path)


def write_tiny_vae(path: Path, seed: int = 0) -> Path:
    from libragen_core.io.safetensors_file import save_state_dict
    from libragen_core.models.wan_vae import VAEConfig, WanVAE

    torch.manual_seed(seed)
    vae = WanVAE(VAEConfig(dim=8, num_res_blocks=1))
    return save_state_dict({k: v.to(torch.bfloat16) for k, v in vae.state_dict().items()}, path)


def write_tiny_umt5(path: Path, seed: int = 0) -> Path:
    import transformers

    from libragen_core.models.text_umt5 import save_umt5_for_tests

    torch.manual_seed(seed)
    cfg = transformers.UMT5Config(vocab_size=128, d_model=4096, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                                  feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
                                  dropout_rate=0.0)
    model = transformers.UMT5EncoderModel(cfg).eval()
    return save_umt5_for_tests(model.half(), path, spiece_proto=_spiece())


_MAKERS = {"dit": write_tiny_dit, "vae": write_tiny_vae, "text_encoder": write_tiny_umt5}


def write_missing(paths: dict[str, Path], seed: int = 0, say: bool = False) -> dict[str, Path]:
    """Write a tiny file at each of {dit, vae, text_encoder: path} that does not exist yet."""
    for key, path in paths.items():
        path = Path(path)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            _MAKERS[key](path, seed)
            if say:
                print(f"[model] wrote a tiny random {key} at {path} (model.tiny = true)")
    return paths


def write_tiny_base(folder: str | Path, seed: int = 0) -> dict[str, Path]:
    """The three files in `folder` (existing ones are kept); returns {dit, vae, text_encoder: path}."""
    return write_missing({k: Path(folder) / name for k, name in FILES.items()}, seed)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.tiny_base", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for dit / vae / umt5 .safetensors")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for key, path in write_tiny_base(args.out, args.seed).items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
