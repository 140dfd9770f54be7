"""A generation-ready model: DiT + VAE + text encoder + the card that says how to use them.

The embedded default (`libragen-sprite`) ships inside the package under assets/libragen-sprite/
as a model card (model.json) plus safetensors files. Until trained weights are committed there,
`load_embedded()` builds an UNTRAINED placeholder of the same architecture from a fixed seed, so
the whole pipeline runs on a fresh machine; it says so loudly, and its videos are noise.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError
from .text_encoders import TextEncoder, load_text_encoder
from .wan_dit import WanDiT, WanDiTConfig
from .wan_vae import VAEConfig, WanVAE, load_vae

EMBEDDED_NAME = "libragen-sprite"
EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "assets" / EMBEDDED_NAME
CARD_FILE = "model.json"


@dataclass(frozen=True)
class GenerationDefaults:
    """What a model was trained for; the CLI and nodes start from these."""

    frames: int = 81
    height: int = 480
    width: int = 832
    steps: int = 30
    shift: float = 5.0
    solver: str = "unipc"
    cfg: str = "libragen"
    fps: float = 16.0
    negative: str = ""


@dataclass(frozen=True)
class ModelCard:
    name: str
    dit: str
    vae: str
    text_encoder: str
    tokenizer: str | None = None
    trained: bool = True
    defaults: GenerationDefaults = field(default_factory=GenerationDefaults)
    style_guide: str | None = None  # file name of the prompt rewriter's style guide, beside the card
    notes: str = ""

    @classmethod
    def read(cls, path: str | os.PathLike) -> ModelCard:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            defaults = GenerationDefaults(**data.pop("defaults", {}))
            return cls(defaults=defaults, **data)
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise ConfigError(f"cannot read the model card {path}: {e}") from e

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


@dataclass
class ModelBundle:
    dit: WanDiT
    vae: WanVAE
    text: TextEncoder
    card: ModelCard
    folder: Path | None = None

    @property
    def device(self) -> torch.device:
        return next(self.dit.parameters()).device

    def style_guide_path(self) -> Path | None:
        if self.folder is None or not self.card.style_guide:
            return None
        return self.folder / self.card.style_guide

    def check_compatible(self) -> None:
        """The three parts must agree on channels and text width; say which pair does not."""
        c = self.dit.config
        if c.text_dim != self.text.text_dim:
            raise CheckpointError(
                f"the text encoder gives {self.text.text_dim}-wide features but the DiT takes text_dim {c.text_dim}; "
                "use the text encoder that belongs to this DiT (umT5-XXL for Wan2.1 files)."
            )
        if c.in_dim != self.vae.config.z_dim:
            raise CheckpointError(
                f"the VAE makes {self.vae.config.z_dim}-channel latents but the DiT takes {c.in_dim} input channels; "
                "use the VAE that belongs to this DiT (wan_2.1_vae for Wan2.1 files)."
            )


def load_bundle(dit: str | os.PathLike, vae: str | os.PathLike, text_encoder: str | os.PathLike,
                tokenizer: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype | None = None, card: ModelCard | None = None) -> ModelBundle:
    """Load a model from its three files (e.g. Wan2.1 / Phantom-Wan + wan_2.1_vae + umT5-XXL)."""
    from .loading import load_dit

    model = load_dit(dit, device=device, dtype=dtype)
    card = card or ModelCard(name=Path(dit).stem, dit=str(dit), vae=str(vae), text_encoder=str(text_encoder),
                             tokenizer=None if tokenizer is None else str(tokenizer))
    bundle = ModelBundle(dit=model, vae=load_vae(vae, device=device), text=load_text_encoder(
        text_encoder, tokenizer=tokenizer, device=device), card=card)
    bundle.check_compatible()
    return bundle


def load_model_folder(folder: str | os.PathLike, device: str | torch.device = "cpu",
                      dtype: torch.dtype | None = None) -> ModelBundle:
    """Load a folder holding model.json and the files it names (how the embedded model ships)."""
    folder = Path(folder)
    card = ModelCard.read(folder / CARD_FILE)
    tok = None if card.tokenizer is None else folder / card.tokenizer
    bundle = load_bundle(folder / card.dit, folder / card.vae, folder / card.text_encoder, tokenizer=tok,
                         device=device, dtype=dtype, card=card)
    bundle.folder = folder
    return bundle


# The placeholder's architecture is the one the SpriteWorld training targets (64x64, 17 frames).
PLACEHOLDER_DIT = WanDiTConfig(dim=256, ffn_dim=1024, num_heads=2, num_layers=4, text_dim=256)
PLACEHOLDER_DEFAULTS = GenerationDefaults(frames=17, height=64, width=64, steps=20, shift=3.0,
                                          solver="unipc", cfg="libragen", fps=8.0)


def _placeholder(device: str | torch.device) -> ModelBundle:
    from ..spriteworld.captions import text_vocabulary
    from .text_small import SmallTextConfig, SmallTextEncoder, WordTokenizer

    warnings.warn(
        f"the embedded {EMBEDDED_NAME} weights are not in this install ({EMBEDDED_DIR}); using an UNTRAINED "
        "placeholder of the same architecture. It runs the whole pipeline but its videos are noise.",
        stacklevel=3,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tok = WordTokenizer(text_vocabulary())
        text = SmallTextEncoder(SmallTextConfig(vocab_size=tok.vocab_size, text_dim=PLACEHOLDER_DIT.text_dim), tok)
        vae = WanVAE(VAEConfig.small())
        dit = WanDiT(PLACEHOLDER_DIT)
    card = ModelCard(name=f"{EMBEDDED_NAME} (untrained placeholder)", dit="", vae="", text_encoder="",
                     trained=False, defaults=PLACEHOLDER_DEFAULTS)
    bundle = ModelBundle(dit=dit.to(device).eval(), vae=vae.to(device).eval(), text=text.to(device).eval(), card=card)
    bundle.check_compatible()
    return bundle


def load_embedded(device: str | torch.device = "cpu") -> ModelBundle:
    """The embedded default model; no files to download, nothing to configure."""
    if (EMBEDDED_DIR / CARD_FILE).is_file():
        return load_model_folder(EMBEDDED_DIR, device=device)
    return _placeholder(device)
