"""Config sections of the post-training stages (METHOD.md 3-4), added to the chain config.

`PostChainConfig` is the pretraining `ChainConfig` plus one section per post-training stage, so a
single TOML file configures the whole chain and every entry point validates all of it up front:

    [sft_in] / [sft_cross]          LoRA SFT on in-pair / cross-pair triplets
    [merge_sft]                     dW = weight * dW_cross + (1 - weight) * dW_in
    [dpo_consis] / [dpo_realfake]   DPO LoRAs from the cross-pair / in-pair SFT models
    [merge_dpo]                     the two DPO models merged the same way
    [final]                         the exported model folder

Each stage writes under <run.out>/<stage>/ and marks itself finished with DONE.json.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from libragen_core.errors import ConfigError
from libragen_core.lora import DEFAULT_TARGETS

from .common.data import ClipSpec
from .common.schema import ChainConfig, OptimConfig, ProbeConfig


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
    decisions: str = ""  # manual review: JSON list of rejected pair ids ("" = none)


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
    sft_in: SFTStageConfig = field(default_factory=SFTStageConfig)  # in-pair triplets
    sft_cross: SFTStageConfig = field(default_factory=SFTStageConfig)  # cross-pair triplets
    merge_sft: MergeStageConfig = field(default_factory=MergeStageConfig)
    dpo_consis: DPOStageConfig = field(default_factory=DPOStageConfig)
    dpo_realfake: DPOStageConfig = field(default_factory=lambda: DPOStageConfig(data=ClipSpec(seed=300)))
    merge_dpo: MergeStageConfig = field(default_factory=MergeStageConfig)
    final: FinalConfig = field(default_factory=FinalConfig)
