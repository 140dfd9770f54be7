"""The schema of a training chain config (training/configs/*.toml), one dataclass per section.

One file configures the whole chain: `ChainConfig` holds the pretraining sections ([run], [vae],
[base], [export]), `PostChainConfig` adds the base and data of the subject-to-video stages and one
section per post-training stage:

    [model] / [data]                the base as files (a real Wan2.1 / Phantom-Wan checkpoint) and
                                    real videos (a JSONL manifest); without them the SpriteWorld
                                    model folder and SpriteWorld clips
    [sft_in] / [sft_cross]          LoRA SFT on in-pair / cross-pair triplets
    [merge_sft]                     dW = weight * dW_cross + (1 - weight) * dW_in
    [dpo_consis] / [dpo_realfake]   DPO LoRAs from the cross-pair / in-pair SFT models
    [merge_dpo]                     the two DPO models merged the same way
    [final]                         the exported model folder

Every entry point loads the whole file, so a typo anywhere fails every stage up front. Paths are
relative to the current directory (run from the repo root). Each post-training stage writes under
<run.out>/<stage>/ and marks itself finished with DONE.json.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from libragen_core.errors import ConfigError
from libragen_core.lora import DEFAULT_TARGETS

from ..spriteworld.clips import ClipSpec


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
    # several processes: "ddp" (each holds the whole frozen base), "fsdp" (the base sharded over
    # them; LoRA stages), "auto" = fsdp when accelerate was launched with an FSDP config
    # (training/accelerate/fsdp-14b.yaml), else ddp. training/common/fsdp.py
    sharding: Literal["auto", "ddp", "fsdp"] = "auto"

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
    # recompute each DiT block in the backward pass instead of keeping its activations: "auto" = on
    # for a base loaded from files (model.dit), off for the small SpriteWorld model
    gradient_checkpointing: bool | Literal["auto"] = "auto"
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
class ModelConfig:
    """The base the subject-to-video stages train on, as files ComfyUI users have (all three or none):
    a Wan2.1 T2V or Phantom-Wan DiT, the Wan2.1 VAE and umT5-XXL. None = the SpriteWorld model
    folder that pretraining exported (export.folder)."""

    dit: str = ""  # e.g. ComfyUI/models/diffusion_models/Phantom-Wan-1.3B_fp16.safetensors
    vae: str = ""  # e.g. ComfyUI/models/vae/wan_2.1_vae.safetensors
    text_encoder: str = ""  # e.g. ComfyUI/models/text_encoders/umt5_xxl_fp16.safetensors
    tokenizer: str = ""  # only for a text encoder file without the tokenizer inside ("" = inside / beside it)
    dtype: Literal["bf16", "fp8"] = "bf16"  # the frozen DiT: bf16, or fp8 block linears (Fp8Linear); never fp32
    name: str = ""  # the base's name in LoRA files; "" = the DiT file's name without .safetensors
    # frozen weights of the last N DiT blocks stay in CPU memory and visit the training device one
    # block at a time (needs gradient checkpointing); 0 = the whole DiT on the device
    offload_blocks: int = 0
    vae_tile: int = 1024  # caching: frames wider or taller than this many pixels are encoded in tiles of it
    # CPU smoke runs and tests only: write tiny random files in the real layouts where model.dit /
    # model.vae / model.text_encoder do not exist yet (python -m training.tiny_base)
    tiny: bool = False

    def __post_init__(self):
        given = [k for k in ("dit", "vae", "text_encoder") if getattr(self, k)]
        if given and len(given) != 3:
            missing = [k for k in ("dit", "vae", "text_encoder") if not getattr(self, k)]
            raise ConfigError(f"model.{', model.'.join(missing)} missing: a base from files needs model.dit, "
                              "model.vae and model.text_encoder (e.g. the Phantom-Wan DiT, wan_2.1_vae and "
                              "umt5_xxl_fp16)")
        if self.offload_blocks < 0:
            raise ConfigError(f"model.offload_blocks must be >= 0, got {self.offload_blocks}")
        if self.vae_tile and (self.vae_tile < 128 or self.vae_tile % 8):
            raise ConfigError(f"model.vae_tile must be 0 (never tile) or a multiple of 8 of at least 128, "
                              f"got {self.vae_tile}")

    @property
    def from_files(self) -> bool:
        return bool(self.dit)


@dataclass(frozen=True)
class DataConfig:
    """Real videos for the subject-to-video stages: a JSONL manifest (docs/training-real-data.md)."""

    manifest: str = ""  # "" = none: the stages train on their SpriteWorld sources
    frames: int = 81  # frames per training clip (4k+1)
    fps: float = 16.0  # resample every clip to this frame rate; 0 = keep the source's, every `stride`-th frame
    stride: int = 1
    start: Literal["head", "center"] = "head"  # where in a longer clip the sampled frames start
    resolution: tuple[int, int] = (480, 832)  # (height, width): the buckets' pixel area and the largest bucket
    bucket_step: int = 16  # bucket sides are multiples of this (VAE x8, DiT patch x2)
    max_aspect: float = 2.5  # widest / tallest bucket
    heldout: int = 2  # entries of each stage kept out of training: validation prompts, references and loss
    on_bad: Literal["skip", "fatal"] = "skip"
    max_bad_fraction: float = 0.01  # more bad entries than this share (and more than one) stops the run
    cache: str = ""  # latent / text feature cache folder; "" = <run.out>/cache
    seed: int = 0  # which entries are held out

    def __post_init__(self):
        if self.frames < 1 or (self.frames - 1) % 4:
            raise ConfigError(f"data.frames must be 4k+1 (5, 9, ..., 81), got {self.frames}")
        if self.fps < 0 or self.stride < 1:
            raise ConfigError(f"data.fps must be >= 0 and data.stride >= 1, got {self.fps} and {self.stride}")
        if self.heldout < 0 or not 0 <= self.max_bad_fraction <= 1:
            raise ConfigError("data.heldout must be >= 0 and data.max_bad_fraction in [0, 1]")


@dataclass(frozen=True)
class ChainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    vae: VAEStageConfig = field(default_factory=VAEStageConfig)
    base: BaseStageConfig = field(default_factory=BaseStageConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


# ================================================================ post-training stages
@dataclass(frozen=True)
class SamplerConfig:
    """Sampling used to generate DPO losers and validation clips."""

    steps: int = 20
    shift: float = 3.0
    solver: str = "unipc"
    cfg: str = "libragen"

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError(f"sampler steps must be at least 1, got {self.steps}")


@dataclass(frozen=True)
class LoraConfig:
    rank: int = 16
    alpha: float = 16.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    dropout: float = 0.0

    def __post_init__(self):
        if self.rank < 1:
            raise ConfigError(f"lora rank must be a positive integer, got {self.rank}")
        if self.alpha <= 0:
            raise ConfigError(f"lora alpha must be positive, got {self.alpha}")
        if not self.targets:
            raise ConfigError("lora targets needs at least one module name (e.g. 'self_attn.q')")


@dataclass(frozen=True)
class PostValidation:
    clips: int = 4  # held-out identities sampled and tracked (identity score, motion check)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    seed: int = 4321


@dataclass(frozen=True)
class SFTStageConfig:
    enabled: bool = True
    clips: int = 512  # triplets in the stage's latent cache
    data: ClipSpec = field(default_factory=lambda: ClipSpec(seed=100))
    dataset: str = ""  # a `libragen spriteworld dataset` folder of this stage's kind instead of `data`
    manifest: str = ""  # real videos: this stage's own manifest instead of data.manifest (either one wins over `data`)
    lora: LoraConfig = field(default_factory=LoraConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=500, batch=16, lr=1e-4, warmup=20))
    ref_dropout: float = 0.1  # zeroed references: the null branch of dynamic CFG
    text_dropout: float = 0.1  # empty-prompt features: the ref-only branch
    # captions whose subjects' looks are taken out ('Ref 1: the subject in reference image 1'): when
    # the text describes the subject, the model has no reason to read the reference
    anonymous_refs: float = 0.0
    sigma_sampling: Literal["logit_normal", "shifted", "uniform"] = "logit_normal"
    sigma_shift: float = 3.0
    validation: PostValidation = field(default_factory=PostValidation)
    probe: ProbeConfig = field(default_factory=lambda: ProbeConfig(samples=4))  # samples: held-out triplets

    def __post_init__(self):
        for name in ("ref_dropout", "text_dropout", "anonymous_refs"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} is a probability in [0, 1], got {v}")
        if self.clips < self.optim.batch:
            raise ConfigError(f"clips ({self.clips}) must be at least one batch ({self.optim.batch})")


@dataclass(frozen=True)
class MergeStageConfig:
    enabled: bool = True
    method: Literal["linear", "concat", "svd", "ties", "dare"] = "concat"
    weight: float = 0.5  # a: the cross-pair (SFT) / consis (DPO) side's weight; the other gets 1 - a
    rank: int = 0  # target rank for svd (and factor output of ties/dare); 0 = none
    density: float = 0.2
    drop_rate: float = 0.5
    seed: int = 0
    sweep: tuple[float, ...] = ()  # extra weights written to sweep/ for the ablation (e.g. 0, .25, .5, .75, 1)

    def __post_init__(self):
        if not 0.0 <= self.weight <= 1.0:
            raise ConfigError(f"merge weight a is in [0, 1], got {self.weight}")
        if self.method == "svd" and self.rank < 1:
            raise ConfigError("merge method 'svd' needs rank >= 1 (the target rank)")
        if self.method in ("linear", "concat") and self.rank:
            raise ConfigError(f"merge method {self.method!r} is exact and has no rank; set rank = 0 or use 'svd'")
        for w in self.sweep:
            if not 0.0 <= w <= 1.0:
                raise ConfigError(f"merge sweep weights are in [0, 1], got {w}")


@dataclass(frozen=True)
class PairFilterConfig:
    auto: bool = True  # decode and track both videos; keep pairs by the thresholds below
    min_identity_margin: float = 0.05  # identity(winner) - identity(loser); < 0 switches the test off
    max_motion_gap: float = 0.15  # mean centre distance / short side; < 0 switches it off
    decisions: str = ""  # manual review: the pair review page's decisions.json, or a JSON list of rejected ids
    # real data (training/pair_judges.py); a threshold < 0 switches its judge off
    min_pair_difference: float = 0.005  # mean |winner - loser| in 0..1: below it the pair is too similar
    min_loser_motion: float = 0.1  # loser's frame-to-frame change / the winner's: below it the loser is frozen
    reject_flat_loser: bool = True  # a loser with almost no spread of pixel values is broken
    scorer: str = ""  # "package.module:function"(winner, loser, caption) -> score, yours; "" = none
    min_score: float = 0.0  # with scorer: keep pairs scoring at least this


@dataclass(frozen=True)
class DPOStageConfig:
    enabled: bool = True
    pairs: int = 64  # triplets to build pairs from (before filtering)
    data: ClipSpec = field(default_factory=lambda: ClipSpec(seed=200))
    lora: LoraConfig = field(default_factory=LoraConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=200, batch=8, lr=2e-5, warmup=10))
    beta: float = 500.0
    sft_weight: float = 0.0  # Reg-DPO: weight of the flow loss on the winners
    split_backward: bool = True  # winner and loser halves back-propagated one after the other
    rope_offset: float = 8.0  # Consis-DPO: added to every reference's temporal RoPE index for the loser
    # Fewer kept pairs than one batch: "stop" raises; "skip" finishes the stage without a LoRA
    # (recorded in its DONE.json and in pipeline.json) and the DPO merge takes the SFT LoRA alone
    # on that side, so a long chain does not die at its last stages over a filter outcome.
    too_few_pairs: Literal["stop", "skip"] = "stop"
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    filter: PairFilterConfig = field(default_factory=PairFilterConfig)
    sigma_sampling: Literal["logit_normal", "shifted", "uniform"] = "logit_normal"
    sigma_shift: float = 3.0
    validation: PostValidation = field(default_factory=PostValidation)

    def __post_init__(self):
        if self.beta <= 0:
            raise ConfigError(f"beta must be positive (published values span 100 to 5000), got {self.beta}")
        if self.sft_weight < 0:
            raise ConfigError(f"sft_weight must be >= 0, got {self.sft_weight}")
        if self.pairs < 1:
            raise ConfigError(f"pairs must be at least 1, got {self.pairs}")
        if self.too_few_pairs not in ("stop", "skip"):
            raise ConfigError(f"too_few_pairs must be 'stop' or 'skip', got {self.too_few_pairs!r}")


@dataclass(frozen=True)
class FinalConfig:
    enabled: bool = True
    folder: str = ""  # "" = <run.out>/final
    name: str = "libragen-sprite"
    # The final merged LoRA is folded into the base DiT: one DiT file of the base's size, and the
    # folder loads like the embedded model with no LoRA step. The LoRA file is kept beside it.


@dataclass(frozen=True)
class PostChainConfig(ChainConfig):
    model: ModelConfig = field(default_factory=ModelConfig)  # the base: files (model.dit, ...) or the exported folder
    data: DataConfig = field(default_factory=DataConfig)  # real videos (data.manifest) for the S2V stages
    sft_in: SFTStageConfig = field(default_factory=SFTStageConfig)  # in-pair triplets
    sft_cross: SFTStageConfig = field(default_factory=SFTStageConfig)  # cross-pair triplets
    merge_sft: MergeStageConfig = field(default_factory=MergeStageConfig)
    dpo_consis: DPOStageConfig = field(default_factory=DPOStageConfig)
    dpo_realfake: DPOStageConfig = field(default_factory=lambda: DPOStageConfig(data=ClipSpec(seed=300)))
    merge_dpo: MergeStageConfig = field(default_factory=MergeStageConfig)
    final: FinalConfig = field(default_factory=FinalConfig)
