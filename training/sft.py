"""Subject-injection SFT: one LoRA on in-pair or on cross-pair triplets (METHOD.md 3).

    python -m training.sft --config training/configs/spriteworld.toml                  # both LoRAs
    python -m training.sft --config ... --stage sft_cross --set sft_cross.optim.steps=50

References go in as at inference (white-padded, VAE-encoded, appended after the video latents
with RoPE positions F, F+1, ...); the loss covers the video frames only. Reference dropout
(zeroed reference slots) and text dropout (the empty prompt's features) train the null and
ref-only branches that dynamic CFG combines. The LoRA is written in ComfyUI's native Wan format
to <run.out>/<stage>/lora.safetensors; the stage resumes from its newest checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from libragen_core.errors import InputError
from libragen_core.lora import add_lora, extract_lora, save_lora
from libragen_core.spriteworld.captions import anonymous_caption

from .common.data import EpochSampler
from .common.loop import (
    TrainLoop,
    check_global_batch,
    main_process_first,
    make_accelerator,
    seed_everything,
    wait_for_everyone,
)
from .common.losses import flow_matching_loss, sample_sigmas
from .flow_dpo import condition_dropout
from .post_common import (
    encode_text,
    heldout_triplets,
    is_done,
    load_base,
    mark_done,
    s2v_direction_probe,
    stage_folder,
    stage_main,
    vae_digest,
    validate_s2v,
)
from .post_config import PostChainConfig
from .triplets import ManifestTriplets, ProceduralTriplets, TripletCache

SFT_STAGES = {"sft_in": "in_pair", "sft_cross": "cross_pair"}
ADAPTER = "sft"


def lora_path(cfg: PostChainConfig, stage: str) -> Path:
    return stage_folder(cfg, stage) / "lora.safetensors"


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
    bundle = load_base(cfg, acc.device)
    dit = bundle.dit
    source = ManifestTriplets(sc.dataset, kind) if sc.dataset else ProceduralTriplets(sc.data, kind)
    if sc.dataset and len(source) < sc.clips:
        raise InputError(f"[{stage}] {sc.dataset} holds {len(source)} triplets, fewer than clips = {sc.clips}")
    with main_process_first(cfg.run):  # the main process encodes, the others load its file
        cache = TripletCache.build(folder / "cache", source, sc.clips,
                                   lambda px: bundle.vae.encode(px, chunked=False), vae_digest(cfg),
                                   progress=acc.is_main_process)
    # the LoRA's random init from a seed of its own, not from whatever this process drew before
    seed_everything(cfg.run.seed + 1000 + list(SFT_STAGES).index(stage))
    add_lora(dit, rank=sc.lora.rank, alpha=sc.lora.alpha, targets=sc.lora.targets, adapter_name=ADAPTER,
             dropout=sc.lora.dropout)
    null_context = encode_text(bundle, [""])
    sampler = EpochSampler(len(cache), sc.optim.batch, cfg.run.seed + 11)
    loop = TrainLoop(folder, stage, sc.optim, cfg.run, {"dit": dit}, data_state=sampler, accelerator=acc)
    loop.resume()
    dev = loop.device
    items = heldout_triplets(sc.data, kind, sc.validation) if sc.validation.clips else []

    def step_fn(step: int, gen: torch.Generator):
        # every process draws the global batch's dropout, sigmas and noise, then keeps its share
        x0, refs, caps = cache.batch(sampler.next())
        anonymous = torch.zeros(len(caps), dtype=torch.bool)
        if sc.anonymous_refs:  # drawn only when used, so runs without it keep their random stream
            anonymous = torch.rand(len(caps), generator=gen) < sc.anonymous_refs
        caps = [anonymous_caption(c) if a else c for c, a in zip(caps, anonymous.tolist())]
        ctx = encode_text(bundle, caps).to(dev)
        refs, ctx, drop_r, drop_t = condition_dropout(refs, ctx, null_context, sc.ref_dropout, sc.text_dropout, gen)
        b = x0.shape[0]
        sigma = sample_sigmas(b, sc.sigma_sampling, shift=sc.sigma_shift, generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        m = loop.share(b)
        loss = flow_matching_loss(loop.wrapped["dit"], x0[m].to(dev), ctx[m], sigma[m].to(dev), eps[m].to(dev),
                                  refs=refs[m].to(dev))
        return loss, {"ref_dropped": float(drop_r.float().mean()), "text_dropped": float(drop_t.float().mean()),
                      "anonymous": float(anonymous.float().mean())}

    def validate(step: int) -> dict:
        return validate_s2v(dit, bundle, items, sc.validation, folder, step, stage, loop.log) if items else {}

    probe = None
    if sc.probe.every and acc.is_main_process:
        probe_items = items if len(items) >= sc.probe.samples else heldout_triplets(
            sc.data, kind, dataclasses.replace(sc.validation, clips=sc.probe.samples))
        probe = s2v_direction_probe(dit, bundle, cache, probe_items, sc.probe, sc.validation)
    loop.run(step_fn, validate, probe_fn=probe, probe_every=sc.probe.every)
    if loop.step < sc.optim.steps:
        acc.print(f"[{stage}] stopped at step {loop.step} of {sc.optim.steps} (max_minutes); re-run to continue")
    elif acc.is_main_process:
        save_lora(extract_lora(dit, ADAPTER), out, method=f"sft-{kind.replace('_', '-')}",
                  base_model="libragen-sprite", metadata={"steps": str(loop.step)})
        mark_done(folder, {"lora": str(out), "steps": loop.step, "kind": kind})
        print(f"[{stage}] wrote {out}")
    wait_for_everyone(cfg.run)
    return out


def main(argv=None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--stage", choices=[*SFT_STAGES, "both"], default="both")
    known, rest = pre.parse_known_args(argv)
    stages = list(SFT_STAGES) if known.stage == "both" else [known.stage]

    def run(cfg: PostChainConfig):
        for s in stages:
            if getattr(cfg, s).enabled:
                run_sft(cfg, s)

    return stage_main("python -m training.sft", __doc__, run, rest)


if __name__ == "__main__":
    sys.exit(main())
