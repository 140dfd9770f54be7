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
