"""Tiny random model folders for training tests (`from tests.tiny_models import tiny_model_folder`)."""
from __future__ import annotations

from pathlib import Path

import torch


def tiny_model_folder(folder: Path) -> None:
    """A random model folder in the layout pretrain's export writes (no pretraining needed)."""
    from libragen_core.models.bundle import ModelCard
    from libragen_core.models.loading import save_dit
    from libragen_core.models.text_small import SmallTextConfig, SmallTextEncoder, WordTokenizer
    from libragen_core.models.vae_checkpoint import save_vae
    from libragen_core.models.wan_dit import WanDiT, WanDiTConfig
    from libragen_core.models.wan_vae import VAEConfig, WanVAE
    from libragen_core.spriteworld.captions import text_vocabulary

    torch.manual_seed(0)
    folder.mkdir(parents=True)
    tok = WordTokenizer(text_vocabulary())
    SmallTextEncoder(SmallTextConfig(vocab_size=tok.vocab_size, text_dim=16, num_layers=1, num_heads=2,
                                     max_length=48), tok).save(folder / "text.safetensors")
    save_vae(WanVAE(VAEConfig(dim=4, num_res_blocks=1)), folder / "vae.safetensors")
    save_dit(WanDiT(WanDiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=16, out_dim=16, text_dim=16)),
             folder / "dit.safetensors")
    card = ModelCard(name="tiny", dit="dit.safetensors", vae="vae.safetensors", text_encoder="text.safetensors",
                     tokenizer="text.vocab.json")
    (folder / "model.json").write_text(card.to_json())


def tiny_wan_dit(seed: int = 3, scale: float = 0.05, init_seed: int = 0):
    """The `tiny` preset (head_dim 128, text_dim 4096: ComfyUI's UNETLoader accepts it) with every
    tensor perturbed by `scale` noise, so the zero-initialized head and modulation do not hide the
    rest of the model."""
    from libragen_core.models.presets import build_dit

    torch.manual_seed(init_seed)
    model = build_dit("tiny").eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model


def tiny_wan_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """tiny_wan_dit's weights as a state dict (fp32), the layout core's UNETLoader accepts."""
    model = tiny_wan_dit(seed=seed + 1, scale=0.1, init_seed=seed)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def scaled_fp8_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`sd` as ComfyUI's *_fp8_e4m3fn_scaled files store a DiT: block linear weights in fp8 with a
    float32 scale_weight each, the rest as it was, and the scaled_fp8 marker tensor."""
    from libragen_core.models.fp8 import MARKER_KEY, quantize

    out = {}
    for k, v in sd.items():
        if k.startswith("blocks.") and k.endswith(".weight") and v.ndim == 2:
            out[k], out[k[: -len("weight")] + "scale_weight"] = quantize(v)
        else:
            out[k] = v
    out[MARKER_KEY] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out


def write_wan_standins(dit_path: Path | None, vae_path: Path | None) -> None:
    """Files in Wan2.1's layouts that ComfyUI's own UNETLoader and VAELoader load: the tiny DiT and a
    random VAE at the released width (96; ComfyUI builds only that layout). None skips one."""
    from libragen_core.io.safetensors_file import save_state_dict
    from libragen_core.models.wan_vae import VAEConfig, WanVAE, save_vae

    if dit_path is not None:
        save_state_dict(tiny_wan_dit().state_dict(), dit_path)
    if vae_path is not None:
        torch.manual_seed(1)
        save_vae(WanVAE(VAEConfig.wan21()).eval(), vae_path)
