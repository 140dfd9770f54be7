"""The schema of a training chain config (training/configs/*.toml), one dataclass per section.

One file configures the whole chain (pretrain stages here; the SFT / merge / DPO stages add their
own sections to `ChainConfig`). Every entry point loads the whole file, so a typo anywhere fails
every stage up front. Paths are relative to the current directory (run from the repo root).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from libragen_core.errors import ConfigError

from .data import ClipSpec


@dataclass(frozen=True)
class RunConfig:
    out: str = "runs/spriteworld"  # every stage writes under <out>/<stage>/
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, none on CPU
    threads: int = 2  # torch CPU threads (0 = torch's default)
    render_workers: int = 0  # processes rendering procedural clips ahead of the trainer (0 = in the trainer)
    deterministic: bool = True  # deterministic algorithms (exact resume); slower on GPU
    # multi-process runs: how long a process waits in a collective for the others. Validation,
    # latent/triplet caches and DPO pair generation run on the main process while the rest wait.
    dist_timeout_minutes: float = 240.0

    def __post_init__(self):
        if self.dist_timeout_minutes <= 0:
            raise ConfigError(f"run.dist_timeout_minutes must be positive, got {self.dist_timeout_minutes}")
        if self.render_workers < 0:
            raise ConfigError(f"run.render_workers must be >= 0, got {self.render_workers}")


@dataclass(frozen=True)
class OptimConfig:
    steps: int = 1000
    batch: int = 16  # global batch: each of N processes takes batch / N of it (docs/ddp.md)
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: int = 0
    decay: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # 0 = off
    ema_decay: float = 0.0  # 0 = no EMA
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 20
    validate_every: int = 0  # 0 = only at the end
    gradient_checkpointing: bool = False
    max_minutes: float = 0.0  # stop (with a checkpoint) after this wall time; 0 = no limit
    debug_step_delay: float = 0.0  # seconds to sleep after each step: lets the resume test kill a run mid-way

    def __post_init__(self):
        for name in ("steps", "batch", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class VAEStageConfig:
    enabled: bool = True
    dim: int = 8
    num_res_blocks: int = 2
    z_dim: int = 16  # latent channels; Wan2.1's 16 keep a 4-frame chunk in as many numbers as the first frame alone
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, batch=8))
    data: ClipSpec = field(default_factory=ClipSpec)
    crop: int = 32  # training crops (pixels, square); 0 = whole frames
    crop_frames: int = 5  # frames per training crop (4k+1); the causal VAE is the same at any length
    init_gain: float = 0.0  # > 0: fan-in variance-preserving conv weights times this gain (0 = PyTorch's default)
    image_steps: int = 0  # first train as an image VAE on single frames for this many steps, then inflate
    image_batch: int = 4  # frames per image step
    image_crop: int = 0  # image-step crops (pixels, square); 0 = whole frames
    decoder_steps: int = 0  # the last steps train the decoder only: the latent space (and a base trained on it) stays
    l1: float = 1.0
    l2: float = 1.0
    edge: float = 0.5  # L1 of image gradients: keeps thin sprite details (stripes, eyes)
    subject_weight: float = 0.0  # extra loss weight on subject pixels (+1 px border); needs clips with masks
    temporal: float = 0.0  # L1 of frame-to-frame differences (video steps): what moved must move the same
    adversarial: float = 0.0  # weight of a patch discriminator's hinge loss (training/common/vae_adversarial.py)
    adversarial_start: int = 0  # step from which the adversarial term is on (reconstructions roughly right first)
    disc_dim: int = 32  # the discriminator's first width
    eval_clips: int = 12  # held-out clips for PSNR and the reconstruction sheet
    stats_clips: int = 64  # clips whose latents give the per-channel mean / std

    def __post_init__(self):
        if (self.crop_frames - 1) % 4:
            raise ConfigError(f"crop_frames must be 4k+1 (1, 5, 9, ...), got {self.crop_frames}")
        for name in ("crop", "image_crop"):
            if getattr(self, name) % 8:
                raise ConfigError(f"{name} must be a multiple of 8, got {getattr(self, name)}")
        if self.image_steps < 0 or self.decoder_steps < 0 or self.image_batch < 1 or self.init_gain < 0:
            raise ConfigError("image_steps, decoder_steps and init_gain must be >= 0 and image_batch >= 1")
        if self.subject_weight < 0 or self.temporal < 0:
            raise ConfigError(f"subject_weight and temporal must be >= 0, got {self.subject_weight}, {self.temporal}")
        if self.adversarial < 0 or self.adversarial_start < 0 or self.disc_dim < 8 or self.disc_dim % 4:
            raise ConfigError(f"adversarial and adversarial_start must be >= 0 and disc_dim a multiple of 4 (>= 8), got "
                              f"{self.adversarial}, {self.adversarial_start}, {self.disc_dim}")


@dataclass(frozen=True)
class DiTShape:
    dim: int = 256
    ffn_dim: int = 1024
    num_heads: int = 2
    num_layers: int = 4
    patch_size: tuple[int, int, int] = (1, 2, 2)
    pooled_text: bool = False  # the caption's mean token also drives the adaLN modulation (WanDiTConfig)


@dataclass(frozen=True)
class TextShape:
    text_dim: int = 256
    num_layers: int = 2
    num_heads: int = 4
    max_length: int = 64
    # std of the token embeddings at init (the encoder's own default is 0.02): at 0.02 the words that
    # the DiT does not use yet ("left" vs "right") stay as close as their init while the words it uses
    # grow apart (the direction probe's text_diff: 0.24 -> 0.01 in 200 steps)
    embed_std: float = 0.02


@dataclass(frozen=True)
class Phase:
    """One curriculum phase: train on `clips` cached clips of `data` until step `until_step`."""

    until_step: int
    clips: int = 1024
    data: ClipSpec = field(default_factory=ClipSpec)


@dataclass(frozen=True)
class ValidationConfig:
    prompts: int = 8  # motion-check prompts (single subject, straight moves), sampled from the EMA model
    steps: int = 20
    shift: float = 3.0
    cfg: float = 4.0  # text guidance; 1 = none
    solver: str = "euler"
    seed: int = 1234


@dataclass(frozen=True)
class ProbeConfig:
    """The direction-sensitivity probe (training/direction_probe.py), logged under probe/."""

    every: int = 0  # steps between probes (and at step 0); 0 = off
    clips: int = 64  # clips of the first phase's cache (those whose caption has a direction word)
    sigmas: tuple[float, ...] = (0.3, 0.6, 0.9)
    samples: int = 8  # captions sampled with true vs swapped directions from the same noise; 0 = no sampling
    sample_steps: int = 10  # sampler steps of those samples (the validation's shift, solver and cfg)

    def __post_init__(self):
        if self.every < 0 or self.clips < 1 or self.samples < 0 or self.sample_steps < 1:
            raise ConfigError("probe.every and probe.samples must be >= 0, probe.clips and probe.sample_steps >= 1")
        if not self.sigmas or not all(0 < s < 1 for s in self.sigmas):
            raise ConfigError(f"probe.sigmas must be noise levels in (0, 1), got {list(self.sigmas)}")


@dataclass(frozen=True)
class BaseStageConfig:
    enabled: bool = True
    vae: str = ""  # VAE file; "" = the vae stage's output; "pool" = fixed pooling stand-in (DiT diagnosis)
    dit: DiTShape = field(default_factory=DiTShape)
    text: TextShape = field(default_factory=TextShape)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-4, warmup=200, ema_decay=0.999))
    phases: tuple[Phase, ...] = (Phase(until_step=1000),)
    sigma_sampling: Literal["logit_normal", "shifted", "uniform"] = "logit_normal"
    sigma_mean: float = 0.0
    sigma_std: float = 1.0
    sigma_shift: float = 3.0
    caption_dropout: float = 0.1  # share of items trained with the empty prompt (for CFG)
    text_lr_scale: float = 1.0  # lr factor of the text path: text encoder, DiT text embedding, cross-attention
    adaln_zero: bool = True
    zero_cross_attn: bool = True  # with adaln_zero: also zero the cross-attention output projection
    encode_batch: int = 8
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def __post_init__(self):
        if not self.phases:
            raise ConfigError("base.phases needs at least one [[base.phases]] entry")
        ends = [p.until_step for p in self.phases]
        if ends != sorted(ends) or len(set(ends)) != len(ends):
            raise ConfigError(f"base.phases until_step values must increase, got {ends}")


@dataclass(frozen=True)
class ExportConfig:
    folder: str = ""  # "" = <out>/model
    name: str = "libragen-sprite"
    steps: int = 20
    shift: float = 3.0
    solver: str = "euler"
    cfg: str = "libragen"
    style_guide: str = "spriteworld"  # the prompt rewriter's guide shipped in the folder (built-in name or JSON); "" = none


@dataclass(frozen=True)
class ChainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    vae: VAEStageConfig = field(default_factory=VAEStageConfig)
    base: BaseStageConfig = field(default_factory=BaseStageConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
