"""Does the base DiT use its caption? Loss with each clip's own caption vs a shuffled one vs none.

    python -m training.text_probe --config training/configs/spriteworld.toml [--checkpoint DIR] \
        [--clips 256] [--sigmas 0.5,0.8,0.95] [--json out.json]

Same clips, noise and noise levels for the three captions, EMA weights when the checkpoint has
them. A model that ignores the text scores the same in all three columns; the gap shuffled - own
is the loss the caption's content saves, the gap empty - shuffled what the presence of any caption
saves. Motion and colour are decided at high noise, so the high sigmas are where the gap shows.
Reads the base stage's latent cache (built by the base stage; the probe never builds one).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from libragen_core.errors import LibraGenError

from .common.checkpoint import latest_checkpoint
from .common.data import LatentCache
from .common.losses import flow_matching_loss


def load_weights(folder: Path, dit, text, prefer: str = "ema") -> str:
    from libragen_core.io.safetensors_file import load_state_dict

    from .common.ema import EMA

    kind = "ema" if prefer == "ema" and (folder / "ema-dit.safetensors").is_file() else "model"
    for name, module in (("dit", dit), ("text", text)):
        sd = load_state_dict(folder / f"{kind}-{name}.safetensors")
        try:
            if kind == "ema":
                ema = EMA(module)
                ema.load_state_dict(sd)
                ema.copy_to(module)
            else:
                module.load_state_dict(sd)
        except (RuntimeError, KeyError) as e:
            raise LibraGenError(f"{folder}: the {name} weights do not fit this config's model ({str(e)[:200]}); a run "
                                "trained before text_vocabulary() (issue 21) has a smaller vocabulary") from e
    return kind


@torch.no_grad()
def probe(dit, text, latents: torch.Tensor, captions: list[str], sigmas: list[float], seed: int = 0,
          batch: int = 32) -> dict:
    """Loss per sigma with each clip's own caption, a shuffled one and none, and the two gaps.
    Leaves dit and text in eval mode."""
    from .pretrain.base import text_features

    n = len(captions)
    dev = next(dit.parameters()).device
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g).tolist()
    variants = {"own": list(captions), "shuffled": [captions[j] for j in perm], "empty": [""] * n}
    dit.eval()
    text.eval()
    out: dict = {}
    with torch.no_grad():
        for s in sigmas:
            g.manual_seed(seed + int(s * 1000))
            noise = torch.randn(latents.shape, generator=g)
            row = {}
            for name, caps in variants.items():
                total = 0.0
                for lo in range(0, n, batch):
                    lat = latents[lo:lo + batch].float().to(dev)
                    ctx = text_features(text, text, caps[lo:lo + batch], dev)
                    sig = torch.full((lat.shape[0],), s, device=dev)
                    loss = flow_matching_loss(dit, lat, ctx, sig, noise[lo:lo + batch].to(dev))
                    total += float(loss) * lat.shape[0]
                row[name] = total / n
            row["content_gap"] = row["shuffled"] - row["own"]
            row["presence_gap"] = row["empty"] - row["shuffled"]
            out[f"{s:g}"] = row
    return out


def main(argv=None) -> int:
    from .post_common import load_layered
    from .pretrain.base import build_dit, build_text

    p = argparse.ArgumentParser(prog="python -m training.text_probe", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, action="append", help="as for training.pretrain (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--checkpoint", default="", help="a checkpoints/step-N folder (default: the base stage's newest)")
    p.add_argument("--clips", type=int, default=256)
    p.add_argument("--sigmas", default="0.5,0.8,0.95")
    p.add_argument("--weights", choices=("ema", "model"), default="ema",
                   help="the EMA weights (what is exported) or the raw ones (the EMA lags ~1/(1-decay) steps)")
    p.add_argument("--phase", type=int, default=0, help="which phase's latent cache to read")
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)
    try:
        torch.set_num_threads(1)
        cfg = load_layered(args.config, args.set)
        base = Path(cfg.run.out) / "base"
        if args.checkpoint:
            ck = Path(args.checkpoint)
            if not ck.is_dir():
                raise LibraGenError(f"checkpoint folder {ck} not found; the loop keeps only the newest "
                                    "optim.keep_checkpoints of them (set it higher to probe earlier steps)")
        else:
            ck = latest_checkpoint(base / "checkpoints")
            if ck is None:
                raise LibraGenError(f"no base checkpoint under {base / 'checkpoints'}; train the base stage first")
        caches = sorted((base / "cache").glob(f"phase{args.phase}-*"))
        if not caches:
            raise LibraGenError(f"no latent cache for phase {args.phase} under {base / 'cache'}; the base stage builds it")
        cache = LatentCache(caches[0]).load()
        z = cache.latents.shape[1]
        dit, text = build_dit(cfg.base, z), build_text(cfg.base)
        kind = load_weights(ck, dit, text, args.weights)
        sigmas = [float(s) for s in args.sigmas.split(",") if s.strip()]
        n = min(args.clips, len(cache))
        res = probe(dit, text, cache.latents[:n], cache.captions[:n], sigmas)
    except LibraGenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{ck.name} ({kind} weights), {min(args.clips, len(cache))} clips")
    print("sigma   own      shuffled empty    content gap  presence gap")
    for s, r in res.items():
        print(f"{s:<7} {r['own']:.4f}   {r['shuffled']:.4f}   {r['empty']:.4f}   {r['content_gap']:+.4f}      {r['presence_gap']:+.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": str(ck), "weights": kind, "sigmas": res}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
