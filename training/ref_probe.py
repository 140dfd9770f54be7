"""Does the SFT model read its references? Loss with the references vs with them zeroed.

    python -m training.ref_probe --config training/configs/spriteworld.toml --stage sft_in \
        [--lora PATH | --no-lora] [--clips 96] [--sigmas 0.5,0.8,0.95] [--json out.json]

The stage's base with its LoRA folded in, on the first clips of the stage's cached data (the
cache the stage built; only missing anonymous captions are encoded), each with its own caption
and with its anonymous form (the subjects' looks taken out: conditioning.captions.anonymous_caption). Same
clips, noise and noise levels in every column. `gain` = loss with zeroed references (the
sampler's null condition) - loss with them: what the references save. With full captions the
text already says what the subjects look like, so the anonymous column is where a model that
reads its references shows it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from libragen_core.errors import LibraGenError
from libragen_core.io.atomic import write_json

from .common.cache import CachedData
from .common.losses import flow_matching_loss
from .common.schema import PostChainConfig
from .sft import SFT_STAGES, lora_path, prepare_sft_data


@torch.no_grad()
def probe(dit, data: CachedData, n: int, sigmas: list[float], seed: int = 0, batch: int = 16) -> dict:
    """{caption kind: {sigma: {"refs", "zero_refs", "gain"}}} over the first n triplets."""
    dev = next(dit.parameters()).device
    dit.eval()
    out: dict = {}
    for kind, anonymous in (("caption", False), ("anonymous", True)):
        latents, refs, ctx = data.batch(list(range(n)), [anonymous] * n)
        rows = {}
        for s in sigmas:
            noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed + int(s * 1000)))
            row = {}
            for name, r in (("refs", refs), ("zero_refs", torch.zeros_like(refs))):
                total = 0.0
                for lo in range(0, n, batch):
                    sl = slice(lo, lo + batch)
                    sig = torch.full((latents[sl].shape[0],), s, device=dev)
                    loss = flow_matching_loss(dit, latents[sl].to(dev), ctx[sl].to(dev), sig, noise[sl].to(dev),
                                              refs=r[sl].to(dev))
                    total += float(loss) * latents[sl].shape[0]
                row[name] = total / n
            row["gain"] = row["zero_refs"] - row["refs"]
            rows[f"{s:g}"] = row
        out[kind] = rows
    return out


def run_probe(cfg: PostChainConfig, stage: str, lora: str | None = "", clips: int = 96,
              sigmas=(0.5, 0.8, 0.95)) -> dict:
    """lora: "" = the stage's own LoRA file, None = the base alone, else a LoRA file."""
    from libragen_core.lora import load_lora, merge_lora_into

    from .common.base_model import load_frozen_dit

    data, _, files, _ = prepare_sft_data(cfg, stage, anonymous=True, progress=False)
    dit = load_frozen_dit(files, cfg.model.dtype).float()
    if lora is not None:
        path = Path(lora) if lora else lora_path(cfg, stage)
        if not path.is_file():
            raise LibraGenError(f"no LoRA at {path}; finish the {stage} stage, give --lora, or probe the base (--no-lora)")
        merge_lora_into(dit, load_lora(path))
    return probe(dit, data, min(clips, len(data)), list(sigmas))


def main(argv=None) -> int:
    from .post_common import load_layered

    p = argparse.ArgumentParser(prog="python -m training.ref_probe", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, action="append", help="as for training.sft (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--stage", choices=list(SFT_STAGES), default="sft_in", help="whose data and LoRA")
    p.add_argument("--lora", default="", help="a LoRA file (default: the stage's own)")
    p.add_argument("--no-lora", action="store_true", help="probe the exported base alone")
    p.add_argument("--clips", type=int, default=96)
    p.add_argument("--sigmas", default="0.5,0.8,0.95")
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)
    try:
        torch.set_num_threads(1)
        cfg = load_layered(args.config, args.set)
        sigmas = [float(s) for s in args.sigmas.split(",") if s.strip()]
        res = run_probe(cfg, args.stage, None if args.no_lora else args.lora, args.clips, sigmas)
    except LibraGenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for kind, rows in res.items():
        for s, row in rows.items():
            print(f"{kind:9s} sigma {s}: refs {row['refs']:.4f}  zeroed {row['zero_refs']:.4f}  gain {row['gain']:+.4f}")
    if args.json:
        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
