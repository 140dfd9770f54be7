"""Preference pairs for the two DPO pipelines (docs/method.md section 4): generation, filtering, storage.

- Consis-DPO: for one triplet (references, text) both videos start from the SAME noise, text and
  references. Winner: the normal sampler. Loser: the same sampler with the references' RoPE
  offsets shifted (at every step, since the offsets are part of the subjects the sampler injects
  each step). The shift loosens the binding between video and references, so layout and motion
  stay while identity drifts.
- Real-Fake DPO: winner = the real clip's latents, loser = the model's own sample from the same
  references and text.

Automatic filter: decode both videos, track the scene's subjects in each with
libragen_core.eval.tracking, and keep a pair when the winner's subject-identity score beats the
loser's by a margin and both move alike (mean centre distance small). The manual filter is a
decisions file: a JSON list of rejected pair ids (or {"rejected": [...]}) applied on top.

Storage: a folder with, per pair, `pairs/<id>.safetensors` (winner, loser, refs, context), optional
mp4s of both sides and `pairs/<id>.json` (its record, written last), and `pairs.jsonl` with every
record, written atomically once all pairs exist. A rerun (or a run killed by SIGKILL, then
restarted) makes only the pairs without a record.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from libragen_core.conditioning.subjects import Subjects
from libragen_core.errors import ConfigError, InputError
from libragen_core.io.atomic import atomic_path, write_jsonl
from libragen_core.io.safetensors_file import load_state_dict, save_state_dict
from libragen_core.sampling.sampler import initial_noise, sample

from .common.schema import SamplerConfig

DEFAULT_SAMPLER = SamplerConfig()

PAIRS_FILE = "pairs.jsonl"


@dataclass
class Triplet:
    """One training item: clean video latents (None when only generating), references, text."""

    id: str
    context: torch.Tensor  # [L, D] text features of the caption
    refs: torch.Tensor | None  # [R, C, 1, h, w] reference latents (Subjects layout)
    latents: torch.Tensor | None = None  # [C, F, h, w] the real clip
    caption: str = ""
    scene: dict | None = None  # SpriteWorld Scene.to_dict(), for the automatic filter


@dataclass
class PairRecord:
    id: str
    kind: str  # "consis" or "realfake"
    source: str  # triplet id
    seed: int
    caption: str = ""
    rope_offsets: list[float] | None = None
    metrics: dict = field(default_factory=dict)
    kept: bool = True
    reason: str = ""


def _generate(model, triplet: Triplet, negative: torch.Tensor, noise: torch.Tensor, subjects: Subjects,
              s: SamplerConfig) -> torch.Tensor:
    return sample(model, noise, triplet.context.unsqueeze(0), negative, subjects=subjects, steps=s.steps,
                  shift=s.shift, solver=s.solver, cfg=s.cfg)[0]


def consis_pair(model, triplet: Triplet, negative: torch.Tensor, latent_shape: Sequence[int], seed: int,
                rope_offsets: Sequence[float], settings: SamplerConfig = DEFAULT_SAMPLER
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(winner, loser) latents [C, F, h, w] from one noise; the loser's references sit at shifted
    RoPE positions. negative: [1, L, D] negative-prompt features."""
    if triplet.refs is None:
        raise InputError(f"triplet {triplet.id} has no references; Consis-DPO pairs need subject references")
    subjects = Subjects(triplet.refs)
    if len(rope_offsets) != subjects.count:
        rope_offsets = [float(rope_offsets[0])] * subjects.count if len(rope_offsets) == 1 else rope_offsets
    noise = initial_noise((1, *latent_shape), seed)
    winner = _generate(model, triplet, negative, noise, subjects, settings)
    loser = _generate(model, triplet, negative, noise, subjects.with_rope_offsets(rope_offsets), settings)
    return winner, loser


def realfake_pair(model, triplet: Triplet, negative: torch.Tensor, seed: int,
                  settings: SamplerConfig = DEFAULT_SAMPLER) -> tuple[torch.Tensor, torch.Tensor]:
    """(winner = the real clip's latents, loser = the model's sample from the same refs and text)."""
    if triplet.latents is None:
        raise InputError(f"triplet {triplet.id} has no clip latents; Real-Fake pairs need the real clip")
    subjects = Subjects(triplet.refs) if triplet.refs is not None else Subjects()
    noise = initial_noise((1, *triplet.latents.shape), seed)
    return triplet.latents.float(), _generate(model, triplet, negative, noise, subjects, settings)


# ---------------------------------------------------------------- automatic and manual filters

@dataclass(frozen=True)
class FilterSettings:
    """Keep a pair when id_winner - id_loser >= min_identity_margin and motion_gap <= max_motion_gap.
    None switches a test off."""

    min_identity_margin: float | None = 0.05
    max_motion_gap: float | None = 0.15  # mean centre distance / short side


def judge(metrics: dict, f: FilterSettings) -> tuple[bool, str]:
    if not metrics:
        return True, ""
    margin = metrics["identity_winner"] - metrics["identity_loser"]
    if f.min_identity_margin is not None and margin < f.min_identity_margin:
        return False, f"identity margin {margin:.3f} < {f.min_identity_margin}"
    if f.max_motion_gap is not None and metrics["motion_gap"] > f.max_motion_gap:
        return False, f"motion gap {metrics['motion_gap']:.3f} > {f.max_motion_gap}"
    return True, ""


def read_decisions(path: str | os.PathLike | None) -> set[str]:
    """Rejected pair ids from a manual-review file: the pair review page's decisions.json
    (training/pair_review.py; its "reject" entries), a JSON list, or {"rejected": [...]}."""
    if path is None:
        return set()
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"the pair decisions file {path} does not exist; save it from the pair review page "
                          "(python -m training.pair_review), or leave the decisions setting out") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"the pair decisions file {path} is not valid JSON: {e}") from None
    if isinstance(data, dict) and "format" in data:
        from libragen_core.curation.decisions import read_decisions as read_page_decisions

        return {k for k, v in read_page_decisions(path).items() if v == "reject"}
    if isinstance(data, dict):
        data = data.get("rejected", None)
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise ConfigError(f"{path}: expected the review page's decisions.json, a JSON list of rejected pair ids "
                          "or {\"rejected\": [...]}")
    return set(data)


# ---------------------------------------------------------------- generation driver and storage

def record_file(out: Path, pid: str) -> Path:
    """A pair's own record, written (atomically) after its tensors and videos: its presence marks
    the pair finished, so a run killed at any point redoes at most the pair it was on."""
    return Path(out) / "pairs" / f"{pid}.json"


def generate_pairs(model, triplets: Iterable[Triplet], out: str | os.PathLike, kind: str, negative: torch.Tensor,
                   seed: int = 0, settings: SamplerConfig = DEFAULT_SAMPLER,
                   rope_offsets: Sequence[float] = (8.0,), decode: Callable | None = None,
                   filters: FilterSettings = FilterSettings(), decisions: str | os.PathLike | None = None,
                   progress: Callable[[int], None] | None = None, shard: tuple[int, int] = (0, 1),
                   videos: bool = False, fps: float = 16.0, judges: Sequence[Callable] = ()) -> list[PairRecord]:
    """Generate, filter and store pairs; returns the records (kept or not) of this shard.

    shard = (rank, world): this process makes the pairs n with n % world == rank; a pair's seed
    depends on n only, so any number of processes makes the same pairs. Each pair is stored as
    pairs/<id>.safetensors (winner, loser, context, refs), with videos=True also
    pairs/<id>.winner.mp4 / .loser.mp4 (decoded with `decode`), then pairs/<id>.json (its record);
    a pair whose record exists is not made again. With one process the index pairs.jsonl is
    written at the end; with several, the main process calls write_index once all are done.

    decode: latents [C, F, h, w] -> uint8 frames [T, H, W, 3]; with it and a SpriteWorld scene per
    triplet the ground-truth filter runs (judge); judges (training/pair_judges.py, real data) run
    on the decoded videos too. A pair with non-finite latents is never kept.
    """
    if kind not in ("consis", "realfake"):
        raise ConfigError(f"pair kind must be 'consis' or 'realfake'; got {kind!r}")
    rank, world = shard
    if videos and decode is None:
        raise ConfigError("pair videos need a decoder (decode=...)")
    out = Path(out)
    (out / "pairs").mkdir(parents=True, exist_ok=True)
    rejected = read_decisions(decisions)
    records, ids = [], []
    for n, t in enumerate(triplets):
        pid = f"{kind}-{t.id}"
        ids.append(pid)
        if n % world != rank:
            continue
        rec_file = record_file(out, pid)
        if rec_file.is_file():  # finished earlier (a resumed run)
            r = PairRecord(**json.loads(rec_file.read_text(encoding="utf-8")))
            if pid in rejected:
                r.kept, r.reason = False, "rejected in manual review"
            records.append(r)
            if progress is not None:
                progress(len(records))
            continue
        pair_seed = int(seed) * 1_000_003 + n
        for stale in (out / "pairs").glob(f".{pid}.*.partial*"):  # a killed run's half-written files of this pair
            stale.unlink(missing_ok=True)
        file = out / "pairs" / f"{pid}.safetensors"
        if file.is_file():
            sd = load_state_dict(file)
            winner, loser = sd["winner"], sd["loser"]
        else:
            if kind == "consis":
                shape = t.latents.shape if t.latents is not None else None
                if shape is None:
                    raise InputError(f"triplet {t.id}: the latent shape comes from its clip latents; none given")
                winner, loser = consis_pair(model, t, negative, shape, pair_seed, rope_offsets, settings)
            else:
                winner, loser = realfake_pair(model, t, negative, pair_seed, settings)
            tensors = {"winner": winner.float().cpu().contiguous(), "loser": loser.float().cpu().contiguous(),
                       "context": t.context.float().cpu().contiguous()}
            if t.refs is not None:
                tensors["refs"] = t.refs.float().cpu().contiguous()
            save_state_dict(tensors, file)
        frames = None
        if decode is not None and (videos or judges or t.scene is not None):
            frames = decode(winner), decode(loser)
        if videos:
            from libragen_core.io.video import write_video

            for side, f in zip(("winner", "loser"), frames):
                with atomic_path(out / "pairs" / f"{pid}.{side}.mp4") as tmp:
                    write_video(tmp, f, fps=fps)
            if t.refs is not None:  # the references as the model sees them, for the review page
                import numpy as np

                from libragen_core.io.images import save_png

                save_png(out / "pairs" / f"{pid}.refs.png", np.concatenate([decode(r)[0] for r in t.refs], axis=1))
        metrics = {}
        if frames is not None and t.scene is not None:
            from .spriteworld.validation import pair_metrics

            metrics = pair_metrics(frames[0], frames[1], t.scene)
        kept, reason = judge(metrics, filters)
        if judges and frames is not None:
            from .pair_judges import run_judges

            ok, why, more = run_judges(list(judges), frames[0], frames[1], t.caption)
            metrics = {**metrics, **more}
            if kept and not ok:
                kept, reason = False, why
        if not (bool(torch.isfinite(winner).all()) and bool(torch.isfinite(loser).all())):
            kept, reason = False, "non-finite latents (a broken sample)"
        if pid in rejected:
            kept, reason = False, "rejected in manual review"
        r = PairRecord(id=pid, kind=kind, source=t.id, seed=pair_seed, caption=t.caption,
                       rope_offsets=list(rope_offsets) if kind == "consis" else None,
                       metrics=metrics, kept=kept, reason=reason)
        with atomic_path(rec_file) as tmp:
            tmp.write_text(json.dumps(asdict(r), sort_keys=True), encoding="utf-8")
        records.append(r)
        if progress is not None:
            progress(len(records))
    if world == 1:
        write_index(out, ids, rejected)
    return records


def write_index(out: str | os.PathLike, ids: Sequence[str], rejected: set[str] = frozenset()) -> list[PairRecord]:
    """pairs.jsonl from the pairs' own records, in triplet order (every process's share)."""
    out = Path(out)
    missing = [i for i in ids if not record_file(out, i).is_file()]
    if missing:
        raise InputError(f"{len(missing)} pairs of {out} are not finished ({', '.join(missing[:3])}...); run the "
                         "pair generation again: it makes only the missing ones")
    records = []
    for i in ids:
        r = PairRecord(**json.loads(record_file(out, i).read_text(encoding="utf-8")))
        if i in rejected:
            r.kept, r.reason = False, "rejected in manual review"
        records.append(r)
    write_records(out, records)
    return records


def write_records(out: Path, records: Sequence[PairRecord]) -> None:
    write_jsonl(out / PAIRS_FILE, (asdict(r) for r in records))


def read_records(out: str | os.PathLike) -> list[PairRecord]:
    path = Path(out) / PAIRS_FILE
    if not path.is_file():
        raise InputError(f"{path} does not exist: the pair folder is incomplete; generate the pairs first")
    return [PairRecord(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line]


def load_pairs(out: str | os.PathLike, decisions: str | os.PathLike | None = None) -> list[dict[str, torch.Tensor]]:
    """The kept pairs' tensors (winner, loser, context, refs?), manual rejections applied again;
    possibly none (the DPO stage decides what too few means)."""
    out = Path(out)
    rejected = read_decisions(decisions)
    pairs = []
    for r in read_records(out):
        if r.kept and r.id not in rejected:
            sd = load_state_dict(out / "pairs" / f"{r.id}.safetensors")
            sd["id"] = r.id
            pairs.append(sd)
    return pairs
