"""DPO pair generation as its own stage, on real data (docs/method.md section 4).

    python -m training.dpo_pairs --config training/configs/cpu-smoke.toml --stage dpo_consis --set data.manifest=...
    accelerate launch --config_file training/accelerate/ddp-1.3b.yaml -m training.dpo_pairs --config ...   # N GPUs

For a base from files (model.dit / vae / text_encoder) and a manifest: the stage's triplets are
the training items of its SFT stage's data (Consis-DPO: the cross-pair entries, started from the
cross-pair SFT LoRA; Real-Fake DPO: the in-pair entries, from the in-pair SFT LoRA), their
latents and text features taken from the feature cache (training/common/cache.py). The frozen
DiT gets its SFT LoRA folded in, then every process makes its share of the pairs (pair n goes
to process n % world; its noise depends on n only, so any number of processes makes the same
pairs). Per pair, under <run.out>/<stage>/pairs/: <id>.safetensors (winner and loser latents,
text features, references), <id>.winner.mp4 / <id>.loser.mp4 / <id>.refs.png (for the review
page, python -m training.pair_review), <id>.json (its record with the automatic judges' verdict,
training/pair_judges.py, written last); pairs.jsonl once all exist. A killed run, rerun, makes only the
pairs without a record. The DPO stage (training/dpo.py) runs this first, then trains on the
stored latents.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from libragen_core.errors import InputError

from .common.loop import distributed, main_process_first, wait_for_everyone
from .common.schema import PostChainConfig
from .pair_judges import real_data_judges
from .pairs import PairRecord, Triplet, generate_pairs, read_decisions, read_records, record_file, write_index
from .post_common import stage_folder, stages_main

# stage -> (pair kind, the SFT stage whose data and LoRA it starts from)
PAIR_STAGES = {"dpo_consis": ("consis", "sft_cross"), "dpo_realfake": ("realfake", "sft_in")}


def pairs_folder(cfg: PostChainConfig, stage: str) -> Path:
    return stage_folder(cfg, stage) / "pairs"


def generate_real_pairs(cfg: PostChainConfig, stage: str, prepared=None) -> list[PairRecord]:
    """Make (or finish) the stage's pairs on every process; returns the index's records (all
    processes' pairs), read after the barrier. prepared: what training.sft.prepare_sft_data gave
    for the SFT stage it starts from, when the caller has it already (the DPO stage)."""
    from libragen_core.lora import load_lora, merge_lora_into
    from libragen_core.models.vae_checkpoint import load_vae

    from .common.base_model import file_device, load_frozen_dit
    from .common.data import tensor_to_frames
    from .sft import lora_path as sft_lora
    from .sft import prepare_sft_data

    if not cfg.model.from_files:
        raise InputError(f"[{stage}] pair generation from a manifest needs a base from files (model.dit, model.vae, "
                         "model.text_encoder); SpriteWorld runs make their pairs inside training.dpo")
    kind, start = PAIR_STAGES[stage]
    dc = getattr(cfg, stage)
    start_file = sft_lora(cfg, start)
    if not start_file.is_file():
        raise InputError(f"[{stage}] starts from the {start} LoRA {start_file}; run `python -m training.sft "
                         f"--stage {start}` first")
    state = distributed(cfg.run)
    dev = file_device(state.device)
    if prepared is None:
        with main_process_first(cfg.run):  # the main process fills the cache, the others find it built
            prepared = prepare_sft_data(cfg, start, dev, progress=state.is_main_process, anonymous=False)
    data, _, files, _ = prepared
    n = min(dc.pairs, len(data))
    out = pairs_folder(cfg, stage)
    ids = [f"{kind}-{i:06d}" for i in range(n)]
    if all(record_file(out, pid).is_file() for pid in ids):
        # every pair is made (a DPO stage run again, or resumed): no base to load for it
        return _write_index(cfg, stage, state, out, ids, dc)
    dit = load_frozen_dit(files, cfg.model.dtype, dev)
    merge_lora_into(dit, load_lora(start_file))
    vae = load_vae(files.vae, device=dev)
    negative = data.null_context().to(dev)

    def triplets():
        for i in range(n):
            it = data.items[i]
            if i % state.num_processes != state.process_index:  # another process's pair: no need to read it
                yield Triplet(id=f"{i:06d}", context=torch.zeros(0), refs=None, caption=it.caption)
                continue
            z, refs = data.latents(i)
            yield Triplet(id=f"{i:06d}", context=data.text(it.text)[0].to(dev),
                          refs=refs.transpose(0, 1).unsqueeze(2).to(dev), latents=z.to(dev), caption=it.caption)

    def decode(lat: torch.Tensor):
        with torch.no_grad():
            return tensor_to_frames(vae.decode(lat[None].to(dev).float()))[0]

    from tqdm.auto import tqdm

    s = dc.sampler
    mine = len(range(state.process_index, n, state.num_processes))
    bar = tqdm(total=mine, desc=f"[{stage}] pairs (process {state.process_index})", unit="pair")
    with torch.no_grad():
        generate_pairs(dit, triplets(), out, kind, negative, seed=cfg.run.seed,
                       settings=s, rope_offsets=(dc.rope_offset,),
                       decode=decode, shard=(state.process_index, state.num_processes), videos=True,
                       fps=cfg.data.fps or 16.0, progress=lambda k: bar.update(k - bar.n),
                       judges=real_data_judges(dc.filter) if dc.filter.auto else ())
    bar.close()
    wait_for_everyone(cfg.run)
    return _write_index(cfg, stage, state, out, ids, dc)


def _write_index(cfg: PostChainConfig, stage: str, state, out: Path, ids: list[str], dc) -> list[PairRecord]:
    """The main process writes pairs.jsonl (with the review decisions); every process reads it."""
    if state.is_main_process:
        records = write_index(out, ids, read_decisions(dc.filter.decisions or None))
        print(f"[{stage}] {len(records)} pairs in {out}")
    wait_for_everyone(cfg.run)
    return read_records(out)


def main(argv=None) -> int:
    return stages_main("python -m training.dpo_pairs", __doc__, list(PAIR_STAGES), generate_real_pairs, argv)


if __name__ == "__main__":
    sys.exit(main())
