"""Direction sensitivity: does the model read which way its caption says things move?

A model learns colours (they act the same on every token) long before direction (its effect is
opposite early and late in a clip, left and right), and its flow loss does not show the
difference: issue 21's diagnosis trained 3,000 steps on a left/right world with a falling loss,
and "left" and "right" gave pixel-identical videos. The probe measures direction directly, on
the same clips and noise, with the motion words of each caption swapped for their opposites
(swap_directions: left <-> right, up <-> down, clockwise <-> counterclockwise, ...):

  gap          loss(swapped captions) - loss(true captions) per sigma: > 0 when the model uses
               the direction words; 0 = it does not. A run whose gap stays at 0 is dead whatever
               its loss says. gap_se: its standard error over the clips.
  share        gap / (loss(empty caption) - loss(true)): the part of what the caption is worth to
               the model that its direction words carry.
  vdiff        RMS of v(true) - v(swapped) at the same noisy input over the RMS of v(true) -
               v(empty): how far the velocity moves when only the direction flips.
  text_diff    L2 distance of the text features of a caption and its swap over that of two
               different captions: does the text encoder keep the direction apart at all (the
               diagnosis: 0.46 for left/right against 43 for an outline colour)?
  sample_ratio mean |video(true) - video(swapped)| from the same noise over mean |video(true,
               noise a) - video(true, noise b)|: 0 = the direction words change nothing in what
               is generated (the diagnosis: 0.10/255 against 14/255, 0.007).

Used by training.pretrain (base stage), training.sft and training.spriteworld.ablation. It needs a DiT, a
function from captions to text features and latents; nothing of SpriteWorld.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .common.losses import flow_velocity

# Words whose opposite mirrors a motion. Multi-word and hyphenated forms come first in the
# pattern, so "counter-clockwise" is one match, not "counter-" + "clockwise".
OPPOSITES = {
    "left": "right", "right": "left", "up": "down", "down": "up",
    "leftward": "rightward", "rightward": "leftward", "leftwards": "rightwards", "rightwards": "leftwards",
    "upward": "downward", "downward": "upward", "upwards": "downwards", "downwards": "upwards",
    "top": "bottom", "bottom": "top", "upper": "lower", "lower": "upper",
    "clockwise": "counterclockwise", "counterclockwise": "clockwise", "counter-clockwise": "clockwise",
    "anticlockwise": "clockwise", "anti-clockwise": "clockwise",
}
# phrases that are their own mirror image: a bounce "up and down" stays a bounce
SELF_OPPOSITE = ("up and down",)
_PATTERN = re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in sorted(OPPOSITES, key=len, reverse=True))
                      + r")(?![\w])", re.IGNORECASE)
DEFAULT_SIGMAS = (0.3, 0.6, 0.9)


def swap_directions(text: str) -> str:
    """The text with every motion direction mirrored ("moves to the left" -> "moves to the right");
    text without direction words comes back unchanged."""
    keep = {}
    for i, phrase in enumerate(SELF_OPPOSITE):
        token = f"\0{i}\0"
        text, n = re.subn(re.escape(phrase), token, text, flags=re.IGNORECASE)
        if n:
            keep[token] = phrase

    def flip(m: re.Match) -> str:
        word = m.group(1)
        out = OPPOSITES[word.lower()]
        return out[:1].upper() + out[1:] if word[:1].isupper() else out

    text = _PATTERN.sub(flip, text)
    for token, phrase in keep.items():
        text = text.replace(token, phrase)
    return text


def directional(captions: Sequence[str]) -> list[int]:
    """Indices of the captions that a swap changes (the only ones the probe can use)."""
    return [i for i, c in enumerate(captions) if swap_directions(c) != c]


@torch.no_grad()
def loss_probe(dit, encode: Callable[[list[str]], torch.Tensor], latents: torch.Tensor, captions: Sequence[str],
               sigmas: Sequence[float] = DEFAULT_SIGMAS, *, refs: torch.Tensor | None = None, seed: int = 0,
               batch: int = 32) -> dict:
    """gap, share, vdiff and text_diff (module docstring) on the clips whose captions have a
    direction; per sigma and as means over the sigmas. `encode(captions)` -> [B, L, D] features on
    the DiT's device; `refs` [N, C, R, h, w]: reference latents appended as in training (SFT).
    Returns {"clips": 0} when no caption has a direction word. The DiT's training flag is restored.
    """
    keep = directional(captions)
    if not keep:
        return {"clips": 0}
    dev = next(dit.parameters()).device
    x0_all = latents[keep].float()
    own = [captions[i] for i in keep]
    variants = {"own": own, "swapped": [swap_directions(c) for c in own], "empty": [""] * len(own)}
    refs = None if refs is None else refs[keep]
    was = dit.training
    dit.eval()
    g = torch.Generator().manual_seed(seed)
    out: dict = {"clips": len(keep)}
    try:
        feats = {k: [encode(v[lo:lo + batch]).float() for lo in range(0, len(own), batch)] for k, v in variants.items()}
        gaps = []
        for s in sigmas:
            g.manual_seed(seed + int(round(s * 1000)))
            noise_all = torch.randn(x0_all.shape, generator=g)
            sq = {"own": 0.0, "swapped": 0.0, "empty": 0.0, "dir": 0.0, "cap": 0.0}
            per_clip = []
            for j, lo in enumerate(range(0, len(own), batch)):
                x0 = x0_all[lo:lo + batch].to(dev)
                noise = noise_all[lo:lo + batch].to(dev)
                sig = torch.full((x0.shape[0],), float(s), device=dev)
                r = None if refs is None else refs[lo:lo + batch].to(dev)
                v, err = {}, {}
                for k in variants:
                    v[k], target = flow_velocity(dit, x0, feats[k][j].to(dev), sig, noise, refs=r)
                    err[k] = (v[k] - target).square().mean(dim=(1, 2, 3, 4))
                    sq[k] += float(err[k].sum())
                per_clip.append((err["swapped"] - err["own"]).cpu())
                sq["dir"] += float((v["own"] - v["swapped"]).square().mean(dim=(1, 2, 3, 4)).sum())
                sq["cap"] += float((v["own"] - v["empty"]).square().mean(dim=(1, 2, 3, 4)).sum())
            n = len(own)
            row = {k: sq[k] / n for k in variants}
            row["gap"] = row["swapped"] - row["own"]
            worth = row["empty"] - row["own"]
            row["share"] = row["gap"] / worth if abs(worth) > 1e-12 else 0.0
            row["vdiff"] = (sq["dir"] / max(sq["cap"], 1e-20)) ** 0.5
            out[f"{s:g}"] = row
            gaps.append(torch.cat(per_clip))
        for key in ("gap", "share", "vdiff"):
            out[key] = float(np.mean([out[f"{s:g}"][key] for s in sigmas]))
        # the gap's standard error over clips (each clip's gap averaged over the sigmas): a gap
        # within ~2 of them is noise
        per = torch.stack(gaps).mean(0)
        out["gap_se"] = float(per.std() / len(per) ** 0.5) if len(per) > 1 else 0.0
        out["clip_gaps"] = per.tolist()  # for combine; flat() leaves lists out of the log
        out["text_diff"] = _text_separation(feats, len(own))
    finally:
        dit.train(was)
    return out


def combine(parts: Sequence[dict]) -> dict:
    """One loss_probe result from those of groups of clips that cannot share a batch (other clip
    shapes or reference counts): means weighted by clips; gap_se over all the clips' gaps."""
    parts = [p for p in parts if p.get("clips")]
    if not parts:
        return {"clips": 0}
    out = {"clips": sum(p["clips"] for p in parts)}
    for key in ("gap", "share", "vdiff", "text_diff"):
        out[key] = float(sum(p[key] * p["clips"] for p in parts) / out["clips"])
    per = np.concatenate([p["clip_gaps"] for p in parts])
    out["gap_se"] = float(per.std(ddof=1) / len(per) ** 0.5) if len(per) > 1 else 0.0
    for sigma in (k for k in parts[0] if isinstance(parts[0][k], dict)):
        out[sigma] = {k: float(sum(p[sigma][k] * p["clips"] for p in parts) / out["clips"]) for k in parts[0][sigma]}
    return out


def _text_separation(feats: dict, n: int) -> float:
    """Mean L2 distance of (caption, its swap) features over that of (caption, the next caption)."""
    own = torch.cat(feats["own"])
    sw = torch.cat(feats["swapped"])
    d_dir = (own - sw).flatten(1).norm(dim=1).mean()
    if n < 2:
        return float(d_dir)
    d_other = (own - own.roll(1, dims=0)).flatten(1).norm(dim=1).mean()
    return float(d_dir / d_other.clamp_min(1e-12))


def sample_probe(generate: Callable[[list[str], int], np.ndarray], captions: Sequence[str], seed: int = 0,
                 own_samples: np.ndarray | None = None) -> dict:
    """sample_ratio (module docstring): `generate(captions, seed)` -> samples [B, ...] (pixels or
    latents), the same noise for the same seed and batch size. own_samples: generate(own, seed)
    when the caller already has it (base validation samples the true captions anyway)."""
    keep = directional(captions)
    if not keep:
        return {"sample_clips": 0}
    own = [captions[i] for i in keep]
    a = own_samples[keep] if own_samples is not None else generate(own, seed)
    a = np.asarray(a, dtype=np.float64)
    swapped = np.asarray(generate([swap_directions(c) for c in own], seed), dtype=np.float64)
    other = np.asarray(generate(own, seed + 1), dtype=np.float64)
    d_dir = float(np.abs(a - swapped).mean())
    d_noise = float(np.abs(a - other).mean())
    return {"sample_clips": len(keep), "sample_diff": d_dir, "noise_diff": d_noise,
            "sample_ratio": d_dir / d_noise if d_noise > 0 else 0.0}


# ---------------------------------------------------------------- on a subject-to-video stage's cache

def swapped_captions(n: int) -> Callable[[list[str]], list[str]]:
    """prepare_stage_data's more_captions for a probe on n items: the swaps of the first n captions
    that name a direction, so they are encoded with the stage's data while the text encoder is loaded."""
    return lambda captions: [swap_directions(captions[i]) for i in directional(captions)[:n]]


def s2v_probe(dit, data, held, load_vae: Callable, pc, sampler, seed: int) -> Callable[[int], dict]:
    """The direction probe of a subject-to-video stage (SFT) on its cached data (training/common/
    cache.py CachedData), with no text encoder on the device: every caption's features, true and
    swapped, come from the cache (prepare_stage_data(more_captions=swapped_captions(n))).

    Loss part: the first pc.clips items of `data` whose captions name a direction, references
    appended as in training, one loss_probe per bucket (combine). Sample part (pc.samples > 0 and a held-out `held`): the first
    pc.samples such held-out items, with their references, sampled from the same noise under the
    true and the swapped caption (`sampler` with pc.sample_steps steps; pixels 0-255, decoded by
    load_vae(device), which is loaded for each probe and released after). `pc`: a ProbeConfig."""
    import dataclasses

    from .common.data import tensor_to_frames
    from .common.heldout import sample_item

    keep = directional([it.caption for it in data.items])[: pc.clips]
    shown = directional([it.caption for it in held.items])[: pc.samples] if held is not None and pc.samples else []
    sampler = dataclasses.replace(sampler, steps=pc.sample_steps)

    def generate(vae, captions: list[str], seed: int, dev) -> np.ndarray:
        neg = held.null_context().to(dev)
        out = []
        for j, (i, caption) in enumerate(zip(shown, captions)):
            lat, _ = sample_item(dit, held, i, held.caption_features([caption]).to(dev), neg, sampler, seed + 1000 * j)
            out.append(tensor_to_frames(vae.decode(lat))[0])
        return np.stack(out)

    groups: dict[str, list[int]] = {}  # items of one group (clip shape, reference count) batch together
    for i in keep:
        groups.setdefault(data.items[i].group, []).append(i)

    def run(step: int) -> dict:
        dev = next(p for p in dit.parameters() if p.requires_grad).device
        parts = []
        for idx in groups.values():  # read from the cache at each probe, not held between probes
            x0, refs, _ = data.batch(idx)
            parts.append(loss_probe(dit, lambda caps: data.caption_features(caps).to(dev), x0,
                                    [data.items[i].caption for i in idx], pc.sigmas, refs=refs))
        out = combine(parts)
        if keep:  # over all the clips: a group of one clip has no other caption to compare with
            own = [data.items[i].caption for i in keep]
            out["text_diff"] = _text_separation({"own": [data.caption_features(own)],
                                                 "swapped": [data.caption_features([swap_directions(c) for c in own])]},
                                                len(own))
        out = flat(out)
        if shown:
            vae = load_vae(dev)
            try:
                with torch.no_grad():
                    out.update(flat(sample_probe(lambda caps, s: generate(vae, caps, s, dev),
                                                 [held.items[i].caption for i in shown], seed)))
            finally:
                del vae
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        return out

    return run


def flat(result: dict, prefix: str = "dir_") -> dict[str, float]:
    """The probe's figures as flat scalars for a run log: dir_gap, dir_gap_0.9, dir_share, ..."""
    out = {}
    for k, v in result.items():
        if isinstance(v, dict):
            for kk in ("gap", "share", "vdiff"):
                out[f"{prefix}{kk}_{k}"] = float(v[kk])
        elif isinstance(v, (int, float)):
            out[prefix + k] = float(v)
    return out


# ---------------------------------------------------------------- curves of runs (docs)

PANELS = (("dir_gap", "loss gap: swapped - true (x1e4)", 1e4), ("dir_share", "share of the caption's worth", 1.0),
          ("dir_vdiff", "velocity change / caption's (vdiff)", 1.0),
          ("dir_text_diff", "text features: swap / other caption", 1.0),
          ("dir_sample_ratio", "samples: swap / other noise", 1.0), ("loss", "flow loss (training)", 1.0))
COLOURS = ((31, 119, 180), (230, 110, 0), (20, 150, 40), (200, 30, 30), (130, 70, 180), (110, 110, 110))


def run_curves(folder: Path, stage: str = "base") -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value)]} of a run's probe (probe/dir_*) and its training loss."""
    from .common.logs import read_metrics

    rows = read_metrics(Path(folder) / stage / "metrics.jsonl")
    out: dict[str, list[tuple[int, float]]] = {}
    for step in sorted(rows):
        for k, v in rows[step].items():
            name = k.removeprefix("probe/")
            if (k.startswith("probe/dir_") and name in dict((p[0], 0) for p in PANELS)) or k == "loss":
                out.setdefault(name, []).append((step, float(v)))
    return out


def plot_runs(runs: dict[str, dict], size: tuple[int, int] = (1050, 640)):
    """One panel per probe figure (PANELS), one coloured line per run; drawn with PIL."""
    from .common.figures import blank_figure

    W, H = size
    img, d, font = blank_figure(size)
    cols, rows = 3, 2
    pw, ph = (W - 20) // cols, (H - 60) // rows
    x_max = max((s for r in runs.values() for c in r.values() for s, _ in c), default=1) or 1
    for i, (key, title, scale) in enumerate(PANELS):
        ox, oy = 10 + (i % cols) * pw, 50 + (i // cols) * ph
        left, top, right, bottom = ox + 48, oy + 18, ox + pw - 10, oy + ph - 28
        values = [v * scale for r in runs.values() for _, v in r.get(key, [])]
        lo, hi = (min(values + [0.0]), max(values + [0.0])) if values else (0.0, 1.0)
        if hi - lo < 1e-12:
            hi = lo + 1.0
        pad = 0.05 * (hi - lo)
        lo, hi = lo - pad, hi + pad

        def px(step, v, lo=lo, hi=hi, left=left, right=right, top=top, bottom=bottom):
            return left + step / x_max * (right - left), bottom - (v - lo) / (hi - lo) * (bottom - top)

        d.text((left, oy), title, fill=(0, 0, 0), font=font)
        d.rectangle([left, top, right, bottom], outline=(0, 0, 0))
        for t in np.linspace(lo, hi, 5):
            _, y = px(0, t)
            d.line([(left, y), (right, y)], fill=(232, 232, 232))
            d.text((ox + 2, y - 6), f"{t:.3g}", fill=(80, 80, 80), font=font)
        if lo < 0 < hi:
            d.line([px(0, 0), px(x_max, 0)], fill=(150, 150, 150))
        for t in np.linspace(0, x_max, 5):
            x, _ = px(t, lo)
            d.text((x - 10, bottom + 4), f"{int(t)}", fill=(80, 80, 80), font=font)
        for j, curves in enumerate(runs.values()):
            pts = [px(s, v * scale) for s, v in curves.get(key, [])]
            c = COLOURS[j % len(COLOURS)]
            if len(pts) > 1:
                d.line(pts, fill=c, width=2)
            for x, y in pts:
                d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=c)
    x = 12
    for j, name in enumerate(runs):
        c = COLOURS[j % len(COLOURS)]
        d.rectangle([x, 14, x + 12, 26], fill=c)
        d.text((x + 17, 13), name, fill=(0, 0, 0), font=font)
        x += 22 + int(d.textlength(name, font=font))
    d.text((W - 170, H - 18), "training step", fill=(0, 0, 0), font=font)
    return img


def main(argv=None) -> int:
    import argparse

    from libragen_core.io.atomic import atomic_path

    p = argparse.ArgumentParser(prog="python -m training.direction_probe",
                                description="Plot the direction probe of runs: python -m training.direction_probe "
                                            "--out docs/img/x.png 'label=runs/a' 'label=runs/b'")
    p.add_argument("runs", nargs="+", help="LABEL=RUN_FOLDER (the run's <run.out>)")
    p.add_argument("--stage", default="base", help="the stage folder whose metrics.jsonl to read (default base)")
    p.add_argument("--out", required=True, type=Path, help="PNG to write")
    a = p.parse_args(argv)
    runs = {}
    for item in a.runs:
        label, _, folder = item.partition("=")
        if not folder:
            label, folder = Path(item).name, item
        curves = run_curves(Path(folder), a.stage)
        if not curves:
            print(f"error: no metrics in {Path(folder) / a.stage / 'metrics.jsonl'}", file=sys.stderr)
            return 2
        runs[label] = curves
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(a.out) as tmp:
        plot_runs(runs).save(tmp, format="PNG")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
