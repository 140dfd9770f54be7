"""Subject-injection SFT: one LoRA on in-pair or on cross-pair triplets (docs/method.md section 3).

    python -m training.sft --config training/configs/spriteworld.toml                  # both LoRAs
    python -m training.sft --config ... --stage sft_cross --set sft_cross.optim.steps=50
    python -m training.sft --config training/configs/phantom-wan-1.3b.toml --stage sft_in \
        --set data.manifest=my_videos/manifest.jsonl --set run.out=runs/mine              # a real base

The data is a TripletSource (training/common/sources.py): real videos from a manifest, or
SpriteWorld clips. Its latents and text features are cached first (training/common/cache.py;
the VAE and the text encoder are on the device only for that), then the frozen DiT (bf16 / fp8
for a real base) trains a LoRA (fp32) on batches drawn within one aspect-ratio bucket.

References go in as at inference (white-padded, VAE-encoded, appended after the video latents
with RoPE positions F, F+1, ...); the loss covers the video frames only. Reference dropout
(zeroed reference slots) and text dropout (the empty prompt's features) train the null and
ref-only branches that dynamic CFG combines. Validation uses the held-out items: their flow loss,
and samples of their captions and references (mp4 + contact sheet; plus SpriteWorld's tracking
scores when the data has ground truth). The LoRA is written in ComfyUI's native Wan format to
<run.out>/<stage>/lora.safetensors, named after the base; the stage resumes from its newest
checkpoint (which holds the LoRA, the optimizer and the RNG state, never the base).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from libragen_core.errors import ConfigError, InputError
from libragen_core.lora import add_lora, extract_lora, save_lora
from libragen_core.models.vae_checkpoint import load_vae

from .common.base_model import (
    AdapterState,
    base_files,
    gradient_checkpointing_on,
    load_frozen_dit,
    make_encoders,
    move_adapters_to,
)
from .common.buckets import BucketSampler
from .common.cache import FeatureCache, FileFacts, prepare_stage_data
from .common.fsdp import sharding_mode
from .common.heldout import heldout_validator
from .common.loop import (
    TrainLoop,
    check_global_batch,
    main_process_first,
    make_accelerator,
    seed_everything,
    wait_for_everyone,
)
from .common.losses import flow_matching_loss, sample_sigmas
from .common.schema import PostChainConfig
from .common.sources import stage_sources
from .direction_probe import s2v_probe, swapped_captions
from .flow_dpo import condition_dropout
from .post_common import cache_folder, is_done, mark_done, stage_folder, stages_main

SFT_STAGES = {"sft_in": "in_pair", "sft_cross": "cross_pair"}
ADAPTER = "sft"


def lora_path(cfg: PostChainConfig, stage: str) -> Path:
    return stage_folder(cfg, stage) / "lora.safetensors"


def prepare_sft_data(cfg: PostChainConfig, stage: str, device="cpu", progress: bool = True,
                     anonymous: bool | None = None):
    """(training data, held-out data or None, base files, the sources) of a stage, cached.
    anonymous: also cache the captions without the subjects' looks (default: when the stage uses them)."""
    sc = getattr(cfg, stage)
    files = base_files(cfg)
    facts = FileFacts(cache_folder(cfg) / "files.json")
    train_src, held_src = stage_sources(cfg, stage, facts)
    if not (sc.manifest or cfg.data.manifest) and sc.dataset and len(train_src) < sc.clips:
        raise InputError(f"[{stage}] {sc.dataset} holds {len(train_src)} triplets, fewer than clips = {sc.clips}")
    cache = FeatureCache(cache_folder(cfg))
    encoders = make_encoders(files, facts, device, cfg.model.vae_tile)
    anonymous = sc.anonymous_refs > 0 if anonymous is None else anonymous
    probe = sc.probe.every > 0  # its swapped captions are encoded now, with the stage's own
    data = prepare_stage_data(train_src, cache, encoders, anonymous=anonymous, progress=progress, label=stage,
                              more_captions=swapped_captions(sc.probe.clips) if probe else None)
    held = None
    if len(held_src):
        held = prepare_stage_data(held_src, cache, encoders, progress=progress, label=f"{stage} held-out",
                                  required=False, more_captions=swapped_captions(sc.probe.samples) if probe else None)
        if held is None:
            print(f"[{stage}] no usable held-out item: the stage validates nothing (see the bad entries above)")
    return data, held, files, (train_src, held_src)


def run_sft(cfg: PostChainConfig, stage: str) -> Path:
    if stage not in SFT_STAGES:
        raise ValueError(f"unknown SFT stage {stage!r}")
    kind = SFT_STAGES[stage]
    sc = getattr(cfg, stage)
    folder = stage_folder(cfg, stage)
    out = lora_path(cfg, stage)
    if is_done(folder):
        print(f"[{stage}] already finished ({out}); delete {folder / 'DONE.json'} to redo")
        return out
    acc = make_accelerator(cfg.run)
    check_global_batch(sc.optim.batch, acc.num_processes, f"{stage}.optim.batch")  # before the cache, not after
    sharded = sharding_mode(cfg.run.sharding, acc.num_processes) == "fsdp"
    offload = cfg.model.offload_blocks
    if offload and acc.num_processes > 1:
        raise ConfigError("model.offload_blocks works in one process only; for several GPUs shard the base instead "
                          "(training/accelerate/fsdp-14b.yaml)")
    if sharded and sc.probe.every:
        raise ConfigError(f"[{stage}] the direction probe runs on one process, and a sharded model needs all of them: "
                          f"set {stage}.probe.every = 0 or run.sharding = 'ddp'")
    with main_process_first(cfg.run):  # the main process encodes, the others find the cache built
        data, held, files, (_, held_src) = prepare_sft_data(cfg, stage, acc.device, progress=acc.is_main_process)
    checkpointing = gradient_checkpointing_on(sc.optim.gradient_checkpointing, files.from_files)
    if offload and not checkpointing:
        raise ConfigError("model.offload_blocks needs gradient checkpointing (the backward pass brings each block "
                          f"back by recomputing it); set {stage}.optim.gradient_checkpointing = true or 'auto'")
    dit = load_frozen_dit(files, cfg.model.dtype, acc.device, offload, sharded=sharded)
    # the LoRA's random init from a seed of its own, not from whatever this process drew before
    seed_everything(cfg.run.seed + 1000 + list(SFT_STAGES).index(stage))
    add_lora(dit, rank=sc.lora.rank, alpha=sc.lora.alpha, targets=sc.lora.targets, adapter_name=ADAPTER,
             dropout=sc.lora.dropout)
    move_adapters_to(dit, "cpu" if sharded else acc.device)  # sharding moves everything to the device
    dit.gradient_checkpointing = checkpointing
    null_context = data.null_context()
    sampler = BucketSampler(data.groups(), sc.optim.batch, cfg.run.seed + 11)
    loop = TrainLoop(folder, stage, sc.optim, cfg.run, {"lora": AdapterState(dit)}, forward_modules={"lora": dit},
                     data_state=sampler, accelerator=acc, device_placement=not offload)
    loop.resume()
    dev = loop.device

    def step_fn(step: int, gen: torch.Generator):
        # every process draws the global batch's dropout, sigmas and noise, then keeps its share
        idx = sampler.next()
        b = len(idx)
        anonymous = torch.zeros(b, dtype=torch.bool)
        if sc.anonymous_refs:  # drawn only when used, so runs without it keep their random stream
            anonymous = torch.rand(b, generator=gen) < sc.anonymous_refs
        x0, refs, ctx = data.batch(idx, anonymous.tolist())
        refs, ctx, drop_r, drop_t = condition_dropout(refs, ctx, null_context, sc.ref_dropout, sc.text_dropout, gen)
        sigma = sample_sigmas(b, sc.sigma_sampling, shift=sc.sigma_shift, generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        m = loop.share(b)
        loss = flow_matching_loss(loop.wrapped["lora"], x0[m].to(dev), ctx[m].to(dev), sigma[m].to(dev),
                                  eps[m].to(dev), refs=refs[m].to(dev))
        return loss, {"ref_dropped": float(drop_r.float().mean()), "text_dropped": float(drop_t.float().mean()),
                      "anonymous": float(anonymous.float().mean())}

    validate = heldout_validator(dit, held, held_src, files.vae, sc.validation, folder, stage, cfg.data.fps or 16.0,
                                 logger=loop.log, write=acc.is_main_process)

    probe = None
    if sc.probe.every and acc.is_main_process:
        probe = s2v_probe(dit, data, held, lambda d: load_vae(files.vae, device=d), sc.probe, sc.validation.sampler,
                          sc.validation.seed)
    loop.run(step_fn, validate, probe_fn=probe, probe_every=sc.probe.every)
    lora = extract_lora(dit, ADAPTER) if loop.step >= sc.optim.steps else None  # every process: FSDP gathers
    if loop.step < sc.optim.steps:
        acc.print(f"[{stage}] stopped at step {loop.step} of {sc.optim.steps} (max_minutes); re-run to continue")
    elif acc.is_main_process:
        save_lora(lora, out, method=f"sft-{kind.replace('_', '-')}", base_model=files.name,
                  metadata={"steps": str(loop.step)})
        mark_done(folder, {"lora": str(out), "steps": loop.step, "kind": kind, "base": files.name,
                           "items": len(data)})
        print(f"[{stage}] wrote {out}")
    wait_for_everyone(cfg.run)
    return out


def main(argv=None) -> int:
    return stages_main("python -m training.sft", __doc__, list(SFT_STAGES), run_sft, argv)

if __name__ == "__main__":
    sys.exit(main())
