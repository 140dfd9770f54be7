"""Merge the SFT LoRAs, and the DPO models, with one weight a (docs/method.md section 3-4).

    python -m training.merge --config training/configs/spriteworld.toml              # merge_sft and merge_dpo
    python -m training.merge --config ... --stage merge_sft --set merge_sft.sweep=[0,0.25,0.5,0.75,1]
    python -m training.merge --cross a.safetensors --in-pair b.safetensors --weight 0.3 --out m.safetensors

SFT:  dW = a * dW_cross + (1 - a) * dW_in                    (-> <out>/merge_sft/lora.safetensors)

DPO: the two DPO LoRAs start from different SFT models (Consis-DPO from the cross-pair one,
Real-Fake from the in-pair one), so each is only meaningful on top of its own SFT. The final
model merges the two whole post-trained models the way the SFT LoRAs were merged:

    dW = a * (dW_cross + dW_consis) + (1 - a) * (dW_in + dW_realfake)

which, with the same a, is the merged SFT plus a * dW_consis + (1 - a) * dW_realfake. The methods
are libragen_core.lora.merge_loras': `concat`/`linear` are exact (rank = sum of ranks), `svd`
truncates the exact sum to `rank`, `ties`/`dare` prune per layer. `sweep` writes one file per
weight into sweep/ for the ablation table.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from libragen_core.errors import ConfigError, InputError, LibraGenError
from libragen_core.lora import load_lora, merge_loras, save_lora

from .common.schema import MergeStageConfig, PostChainConfig
from .post_common import DPO_STAGE_NAMES, is_done, mark_done, skipped_reason, stage_folder, stages_main


def merge_weighted(side_a: Sequence, side_b: Sequence, a: float, mc: MergeStageConfig):
    """a * sum(side_a) + (1 - a) * sum(side_b) for LoraWeights lists; returns the MergeResult.
    A side weighted 0 is left out, so a = 0 or 1 gives exactly the other side (not an empty layer)."""
    loras, weights = [], []
    for side, w in ((side_a, a), (side_b, 1.0 - a)):
        if w != 0.0:
            loras += list(side)
            weights += [w] * len(side)
    return merge_loras(loras, weights, mc.method, rank=mc.rank or None, density=mc.density,
                       drop_rate=mc.drop_rate, seed=mc.seed)


def write_merge(side_a: Sequence[str | os.PathLike], side_b: Sequence[str | os.PathLike], a: float,
                mc: MergeStageConfig, out: str | os.PathLike, label: str) -> Path:
    la, lb = [load_lora(p) for p in side_a], [load_lora(p) for p in side_b]
    bases = {w.metadata.get("base_model", "") for w in (*la, *lb)}
    if len(bases) > 1:
        raise InputError(f"these LoRAs were trained on different bases ({', '.join(sorted(bases))}); a merge of them "
                         "fits none: merge LoRAs of one base")
    result = merge_weighted(la, lb, a, mc)
    meta = {"merge_weight": repr(a), "merge_error": f"{result.total_rel_error:.3g}",
            "merge_a": ",".join(Path(p).name for p in side_a), "merge_b": ",".join(Path(p).name for p in side_b)}
    return save_lora(result.lora, out, method=f"{label}:{mc.method}", base_model=bases.pop() or "wan2.1",
                     metadata=meta)


def sweep_names(weights: Sequence[float]) -> list[str]:
    return [f"a{w:.2f}.safetensors" for w in weights]


def run_merge_stage(cfg: PostChainConfig, stage: str) -> Path:
    """merge_sft or merge_dpo from the finished SFT / DPO stages of the same run. In a
    multi-process run the main process merges and the others wait for it."""
    from .common.loop import is_main_process, wait_for_everyone

    out = stage_folder(cfg, stage) / "lora.safetensors"
    if is_main_process(cfg.run):
        _merge_stage(cfg, stage)
    wait_for_everyone(cfg.run)
    return out


def _merge_stage(cfg: PostChainConfig, stage: str) -> Path:
    from .dpo import lora_path as dpo_lora
    from .sft import lora_path as sft_lora

    mc = getattr(cfg, stage)
    folder = stage_folder(cfg, stage)
    out = folder / "lora.safetensors"
    if is_done(folder):
        print(f"[{stage}] already finished ({out})")
        return out
    if stage == "merge_sft":
        side_a, side_b = [sft_lora(cfg, "sft_cross")], [sft_lora(cfg, "sft_in")]
    elif stage == "merge_dpo":
        # a DPO stage skipped for too few pairs leaves its side to the SFT LoRA alone
        skipped = {s: r for s in DPO_STAGE_NAMES if (r := skipped_reason(stage_folder(cfg, s)))}
        side_a = [sft_lora(cfg, "sft_cross")] + ([] if "dpo_consis" in skipped else [dpo_lora(cfg, "dpo_consis")])
        side_b = [sft_lora(cfg, "sft_in")] + ([] if "dpo_realfake" in skipped else [dpo_lora(cfg, "dpo_realfake")])
        for s, r in skipped.items():
            print(f"[{stage}] {s} was skipped ({r}): merging without it")
    else:
        raise ValueError(f"unknown merge stage {stage!r}")
    missing = [str(p) for p in (*side_a, *side_b) if not Path(p).is_file()]
    if missing:
        raise InputError(f"[{stage}] needs {', '.join(missing)}; run the stages that write them first")
    folder.mkdir(parents=True, exist_ok=True)
    label = "sft-merge" if stage == "merge_sft" else "dpo-merge"
    write_merge(side_a, side_b, mc.weight, mc, out, label)
    if mc.sweep:
        (folder / "sweep").mkdir(exist_ok=True)
        for w, name in zip(mc.sweep, sweep_names(mc.sweep)):
            write_merge(side_a, side_b, w, mc, folder / "sweep" / name, label)
    mark_done(folder, {"lora": str(out), "weight": mc.weight, "method": mc.method, "sweep": list(mc.sweep),
                       "side_a": [str(p) for p in side_a], "side_b": [str(p) for p in side_b]})
    print(f"[{stage}] wrote {out}" + (f" and {len(mc.sweep)} sweep files" if mc.sweep else ""))
    return out


def main(argv=None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--cross", nargs="+")
    pre.add_argument("--in-pair", dest="in_pair", nargs="+")
    pre.add_argument("--weight", type=float, default=0.5)
    pre.add_argument("--method", default="concat")
    pre.add_argument("--rank", type=int, default=0)
    pre.add_argument("--out")
    known, rest = pre.parse_known_args(argv)
    if known.cross or known.in_pair:  # direct file merge, no config
        try:
            if not (known.cross and known.in_pair and known.out):
                raise ConfigError("a direct merge needs --cross FILE.. --in-pair FILE.. --out FILE")
            mc = MergeStageConfig(method=known.method, weight=known.weight, rank=known.rank)
            print(write_merge(known.cross, known.in_pair, mc.weight, mc, known.out, "merge"))
        except LibraGenError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    return stages_main("python -m training.merge", __doc__, ["merge_sft", "merge_dpo"], run_merge_stage, rest)


if __name__ == "__main__":
    sys.exit(main())
