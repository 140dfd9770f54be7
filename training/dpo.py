"""The DPO stage both pipelines share: fold the starting SFT LoRA into the base, build and filter
pairs, train a DPO LoRA with the Flow-DPO loss (training/flow_dpo.py) against the folded model.

Consis-DPO starts from the cross-pair SFT model and uses cross-pair triplets; Real-Fake DPO starts
from the in-pair SFT model and uses in-pair triplets (their real clips are the winners). Outputs
under <run.out>/<stage>/: pairs/ (pair files + pairs.jsonl), checkpoints/, metrics.jsonl,
samples/, lora.safetensors (ComfyUI Wan format), DONE.json.
"""
from __future__ import annotations

from pathlib import Path

import torch

from libragen_core.errors import ConfigError, InputError
from libragen_core.lora import (
    add_lora,
    extract_lora,
    load_lora,
    merge_lora_into,
    save_lora,
)

from .common.base_model import (
    AdapterState,
    base_files,
    gradient_checkpointing_on,
    load_frozen_dit,
    move_adapters_to,
)
from .common.buckets import BucketSampler
from .common.data import EpochSampler, tensor_to_frames
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
from .common.losses import sample_sigmas
from .common.schema import DPOStageConfig, PostChainConfig
from .dpo_pairs import generate_real_pairs
from .flow_dpo import DPOBatch, flow_dpo_backward
from .pairs import FilterSettings, Triplet, generate_pairs, load_pairs, read_records
from .post_common import (
    encode_text,
    is_done,
    load_base,
    mark_done,
    skipped_reason,
    stage_folder,
    vae_digest,
)
from .spriteworld.triplets import ProceduralTriplets, TripletCache
from .spriteworld.validation import heldout_triplets, validate_s2v

# stage -> (pair kind, triplet kind, SFT stage it starts from)
DPO_STAGES = {"dpo_consis": ("consis", "cross_pair", "sft_cross"),
              "dpo_realfake": ("realfake", "in_pair", "sft_in")}
ADAPTER = "dpo"


def lora_path(cfg: PostChainConfig, stage: str) -> Path:
    return stage_folder(cfg, stage) / "lora.safetensors"


def filter_settings(dc: DPOStageConfig) -> FilterSettings:
    f = dc.filter
    return FilterSettings(min_identity_margin=None if f.min_identity_margin < 0 else f.min_identity_margin,
                          max_motion_gap=None if f.max_motion_gap < 0 else f.max_motion_gap)


def stack_pairs(pairs: list[dict]) -> dict[str, torch.Tensor]:
    """Kept pairs -> winner/loser [N, C, f, h, w], context [N, L, D], refs [N, C, R, h, w] or absent."""
    out = {k: torch.stack([p[k].float() for p in pairs]) for k in ("winner", "loser", "context")}
    with_refs = ["refs" in p for p in pairs]
    if any(with_refs):
        if not all(with_refs) or len({tuple(p["refs"].shape) for p in pairs}) != 1:
            raise InputError("all pairs of a DPO stage must have the same number of references")
        out["refs"] = torch.stack([p["refs"].float().squeeze(2).transpose(0, 1) for p in pairs])  # [N, C, R, h, w]
    return out


def pair_groups(pairs: list[dict]) -> dict[str, list[int]]:
    """Pair indices by the shape of their latents and references: a batch is stacked from one group."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        key = "x".join(map(str, p["winner"].shape)) + ("/" + "x".join(map(str, p["refs"].shape)) if "refs" in p else "")
        groups.setdefault(key, []).append(i)
    return groups


def run_dpo(cfg: PostChainConfig, stage: str) -> Path | None:
    """Train the stage's DPO LoRA; returns its file, or None when the stage was skipped for too
    few kept pairs (too_few_pairs = "skip")."""
    from .sft import lora_path as sft_lora
    from .sft import prepare_sft_data

    kind, triplet_kind, start = DPO_STAGES[stage]
    dc: DPOStageConfig = getattr(cfg, stage)
    folder = stage_folder(cfg, stage)
    out = lora_path(cfg, stage)
    if is_done(folder):
        reason = skipped_reason(folder)
        print(f"[{stage}] already " + (f"skipped ({reason})" if reason else f"finished ({out})") +
              f"; delete {folder / 'DONE.json'} to redo")
        return None if reason else out
    if cfg.run.mixed_precision == "fp16":
        # split or joint, flow_dpo_backward runs the backward passes itself: the loss scaler would
        # unscale gradients it never scaled
        raise ConfigError(f"[{stage}] the DPO step does its own backward passes, which fp16 loss scaling "
                          "does not see; use run.mixed_precision = 'bf16' or 'no'")
    start_file = sft_lora(cfg, start)
    if not start_file.is_file():
        raise InputError(f"[{stage}] starts from the {start} LoRA {start_file}; run `python -m training.sft "
                         f"--stage {start}` first")
    acc = make_accelerator(cfg.run)
    check_global_batch(dc.optim.batch, acc.num_processes, f"{stage}.optim.batch")  # before the pairs, not after
    real = cfg.model.from_files
    sharded = sharding_mode(cfg.run.sharding, acc.num_processes) == "fsdp"
    if sharded and not real:
        raise ConfigError(f"[{stage}] FSDP is for a base loaded from files (model.dit); the SpriteWorld DPO stages "
                          "train the whole small model: use run.sharding = 'ddp'")
    if real:
        # a base from files: the SFT stage's cached data (its held-out items validate), the pair
        # stage (every process its share), then the frozen base
        with main_process_first(cfg.run):
            prepared = prepare_sft_data(cfg, start, acc.device, progress=acc.is_main_process, anonymous=False)
        _, held, files, (_, held_src) = prepared
        generate_real_pairs(cfg, stage, prepared)
        dit = load_frozen_dit(files, cfg.model.dtype, acc.device, sharded=sharded)
        bundle = None
    else:
        bundle = load_base(cfg, acc.device)
        dit = bundle.dit
    # the reference model = base with the SFT LoRA folded in; the DPO adapter goes on top of it
    merge_lora_into(dit, load_lora(start_file))

    if not real:
        if acc.is_main_process:
            # SpriteWorld pairs are made by the main process (their triplets are procedural); the others wait
            _generate(cfg, stage, dc, dit, bundle, folder, kind, triplet_kind)
        wait_for_everyone(cfg.run)
    records = read_records(folder / "pairs")
    pairs = load_pairs(folder / "pairs", dc.filter.decisions or None)
    n = len(pairs)
    if n < dc.optim.batch:
        reason = (f"only {n} of {len(records)} pairs are left after filtering, fewer than one batch "
                  f"({dc.optim.batch})")
        fix = "generate more pairs, loosen the filter or lower the batch"
        if dc.too_few_pairs == "stop":
            raise InputError(f"[{stage}] {reason}; {fix} (or set {stage}.too_few_pairs = 'skip')")
        if acc.is_main_process:
            mark_done(folder, {"skipped": reason, "pairs_kept": n, "pairs_total": len(records)})
            print(f"[{stage}] SKIPPED: {reason}. No LoRA is written; the DPO merge goes on without it. To train "
                  f"it: {fix}, then delete {folder / 'DONE.json'} and rerun.")
        wait_for_everyone(cfg.run)
        return None
    groups = pair_groups(pairs)

    # the LoRA's random init from a seed of its own, not from whatever this process drew before
    seed_everything(cfg.run.seed + 2000 + list(DPO_STAGES).index(stage))
    add_lora(dit, rank=dc.lora.rank, alpha=dc.lora.alpha, targets=dc.lora.targets, adapter_name=ADAPTER,
             dropout=dc.lora.dropout)
    if real:  # pairs of several buckets (frame sizes); checkpoints hold the LoRA only, never the base
        move_adapters_to(dit, "cpu" if sharded else acc.device)  # sharding moves everything to the device
        dit.gradient_checkpointing = gradient_checkpointing_on(dc.optim.gradient_checkpointing, True)
        sampler = BucketSampler(groups, dc.optim.batch, cfg.run.seed + 29)
        loop = TrainLoop(folder, stage, dc.optim, cfg.run, {"lora": AdapterState(dit)}, forward_modules={"lora": dit},
                         data_state=sampler, accelerator=acc)
    else:
        if len(groups) > 1:
            raise InputError(f"[{stage}] SpriteWorld pairs must all have one shape; got {', '.join(groups)}")
        sampler = EpochSampler(n, dc.optim.batch, cfg.run.seed + 29)
        loop = TrainLoop(folder, stage, dc.optim, cfg.run, {"dit": dit}, data_state=sampler, accelerator=acc)
    model_key = "lora" if real else "dit"
    loop.resume()
    dev = loop.device
    items = heldout_triplets(dc.data, triplet_kind, dc.validation) if dc.validation.clips and not real else []

    def step_fn(step: int, gen: torch.Generator):
        # every process draws the global batch's pairs, sigmas and noise, then keeps its share
        idx = [int(i) for i in sampler.next()]
        b = len(idx)
        data = stack_pairs([pairs[i] for i in idx])
        sigma = sample_sigmas(b, dc.sigma_sampling, shift=dc.sigma_shift, generator=gen)
        eps = torch.randn((b, *data["winner"].shape[1:]), generator=gen)  # one eps per pair: shared by both sides
        m = loop.share(b)
        sigma, eps = sigma[m].to(dev), eps[m].to(dev)
        batch = DPOBatch(winner=data["winner"][m].to(dev), loser=data["loser"][m].to(dev),
                         context=data["context"][m].to(dev),
                         refs=data["refs"][m].to(dev) if "refs" in data else None)
        stats = flow_dpo_backward(loop.wrapped[model_key], batch, eps, sigma, dc.beta, dc.sft_weight,
                                  dc.split_backward)
        return torch.tensor(stats.loss), stats.scalars()  # its gradients are in already: no graph

    if real:
        validate = heldout_validator(dit, held, held_src, files.vae, dc.validation, folder, stage,
                                     cfg.data.fps or 16.0, logger=loop.log, write=acc.is_main_process)
    else:
        def validate(step: int) -> dict:
            return validate_s2v(dit, bundle, items, dc.validation, folder, step, stage, loop.log) if items else {}

    loop.run(step_fn, validate)
    lora = extract_lora(dit, ADAPTER) if loop.step >= dc.optim.steps else None  # every process: FSDP gathers
    if loop.step < dc.optim.steps:
        acc.print(f"[{stage}] stopped at step {loop.step} of {dc.optim.steps} (max_minutes); re-run to continue")
    elif acc.is_main_process:
        save_lora(lora, out, method=stage.replace("_", "-"), base_model=base_files(cfg).name,
                  metadata={"steps": str(loop.step), "beta": repr(dc.beta), "starts_from": start_file.name,
                            "pairs": str(n)})
        mark_done(folder, {"lora": str(out), "steps": loop.step, "pairs_kept": n, "pairs_total": len(records)})
        print(f"[{stage}] wrote {out}")
    wait_for_everyone(cfg.run)
    return out


def _generate(cfg: PostChainConfig, stage: str, dc: DPOStageConfig, dit, bundle, folder: Path, kind: str,
              triplet_kind: str) -> None:
    """Encode the stage's triplets, then generate, filter and store its pairs under folder/pairs."""
    dev = bundle.device
    cache = TripletCache.build(folder / "cache", ProceduralTriplets(dc.data, triplet_kind), dc.pairs,
                               lambda px: bundle.vae.encode(px, chunked=False), vae_digest(cfg))
    negative = encode_text(bundle, [""])
    triplets = (Triplet(id=f"{i:06d}", context=encode_text(bundle, [cache.captions[i]])[0],
                        refs=cache.subjects_latents(i).to(dev), latents=cache.latents[i].float().to(dev),
                        caption=cache.captions[i], scene=cache.scenes[i]) for i in range(len(cache)))

    def decode(lat: torch.Tensor):
        with torch.no_grad():
            return tensor_to_frames(bundle.vae.decode(lat[None].to(dev)))[0]

    s = dc.sampler
    records = generate_pairs(dit, triplets, folder / "pairs", kind, negative, seed=cfg.run.seed,
                             settings=s, rope_offsets=(dc.rope_offset,),
                             decode=decode if dc.filter.auto else None, filters=filter_settings(dc),
                             decisions=dc.filter.decisions or None)
    kept = sum(r.kept for r in records)
    print(f"[{stage}] {kept} of {len(records)} pairs kept")
