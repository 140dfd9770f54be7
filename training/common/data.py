"""Training data pieces every source shares: the bad-entry rule, a deterministic resumable order,
the clip record, pixel/tensor conversion, file digests, and a latent cache of clip sources.

Bad entries (`BadEntries`; used by the real-video manifest and by SpriteWorld dataset folders): an
entry whose video is missing, empty, unreadable, of the wrong size/frame count, or whose caption
is empty, is reported with its path and reason. With `on_bad="skip"` (the default) it is left out
and counted; the run stops only when more than `max_bad_fraction` of the entries are bad (a
broken dataset, not a few broken files). With `on_bad="fatal"` the first bad entry stops the run.
Either way the error names the file.

Latent cache (`LatentCache`, SpriteWorld pretraining): VAE latents of a clip source's first n
clips, in safetensors shards (`shard-NNNNN.safetensors`: latents fp16 [k, C, f, h, w]; captions
and clip indices in the shard's JSON metadata), each written atomically. `index.json` records the
source settings and the VAE file's digest: a cache built with other settings or another VAE is
never reused; a shard that cannot be read is reported and rebuilt. The subject-to-video stages
use training/common/cache.py instead.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from libragen_core.errors import CheckpointError, InputError
from libragen_core.io.atomic import atomic_path
from libragen_core.io.safetensors_file import read_header, save_state_dict


class BadEntryError(InputError):
    """A dataset entry (clip or caption) cannot be used."""


class BadEntries:
    """The bad-entry rule (module docstring): with on_bad="skip" a bad entry is warned about, named
    and counted, and the run stops only when more than max_bad_fraction of `total` entries (and
    more than one) are bad; with on_bad="fatal" the first one stops it. `where` names the dataset."""

    def __init__(self, where, total: int, on_bad: str = "skip", max_bad_fraction: float = 0.01, fix: str = ""):
        if on_bad not in ("skip", "fatal"):
            raise InputError(f"on_bad must be 'skip' or 'fatal', got {on_bad!r}")
        self.where, self.total, self.on_bad, self.max_bad_fraction, self.fix = where, total, on_bad, max_bad_fraction, fix
        self.entries: list[tuple[str, str]] = []

    def report(self, path, reason: str, stacklevel: int = 2) -> None:
        msg = f"bad dataset entry {path}: {reason}"
        if self.on_bad == "fatal":
            raise BadEntryError(msg + " (on_bad='fatal'; fix or delete the entry, or use on_bad='skip')")
        self.entries.append((str(path), reason))
        warnings.warn(msg + "; skipped", stacklevel=stacklevel + 1)
        if len(self.entries) > max(1, self.max_bad_fraction * self.total):
            raise BadEntryError(
                f"{len(self.entries)} bad entries in {self.where} (more than {self.max_bad_fraction:.0%} of "
                f"{self.total}); first: {self.entries[0][0]}: {self.entries[0][1]}. {self.fix}".rstrip()
            )


@dataclass
class Clip:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    caption: str
    index: int
    scene: object | None = None
    subject_mask: np.ndarray | None = None  # bool [T, H, W]: pixels a subject paints (procedural clips only)


def frames_to_tensor(frames: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 [T, H, W, 3] (or a list of them) -> float [B, 3, T, H, W] in [-1, 1]."""
    arr = frames if isinstance(frames, np.ndarray) else np.stack(frames)
    if arr.ndim == 4:
        arr = arr[None]
    t = torch.from_numpy(np.ascontiguousarray(arr)).float()
    return t.permute(0, 4, 1, 2, 3) / 127.5 - 1.0


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """[B, 3, T, H, W] in [-1, 1] -> uint8 [B, T, H, W, 3]."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()


# ---------------------------------------------------------------- deterministic order
class EpochSampler:
    """Batches of indices in a fresh permutation per epoch, from (seed, epoch) alone.

    The state (epoch, position) goes into checkpoints, so a resumed run draws exactly the batches
    the uninterrupted run would have drawn. The last incomplete batch of an epoch is dropped.
    """

    def __init__(self, n: int, batch: int, seed: int = 0):
        if n < batch:
            raise InputError(f"the dataset has {n} items, fewer than one batch of {batch}")
        self.n, self.batch, self.seed = n, batch, seed
        self.epoch, self.position = 0, 0

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def next(self) -> np.ndarray:
        if self.position + self.batch > self.n:
            self.epoch, self.position = self.epoch + 1, 0
        idx = self._order()[self.position:self.position + self.batch]
        self.position += self.batch
        return idx

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "n": self.n, "batch": self.batch, "seed": self.seed}

    def load_state_dict(self, sd: dict) -> None:
        if (sd["n"], sd["batch"], sd["seed"]) != (self.n, self.batch, self.seed):
            raise CheckpointError(f"the checkpoint's data order was for n={sd['n']} batch={sd['batch']} "
                                  f"seed={sd['seed']}; this run has n={self.n} batch={self.batch} seed={self.seed}")
        self.epoch, self.position = sd["epoch"], sd["position"]


# ---------------------------------------------------------------- latent cache
def cache_file_ready(path: Path, what: str = "cache file") -> bool:
    """The safetensors file exists and is whole; a damaged one is reported and deleted (to be rebuilt)."""
    if not path.is_file():
        return False
    try:
        read_header(path)
        return True
    except CheckpointError as e:
        warnings.warn(f"{what} {path} is damaged ({e}); rebuilding it", stacklevel=3)
        path.unlink(missing_ok=True)
        return False


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class LatentCache:
    """Normalized VAE latents + captions of a source's first n items, in shards on disk."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.latents: torch.Tensor | None = None
        self.captions: list[str] = []
        self.indices: list[int] = []

    def _shard(self, k: int) -> Path:
        return self.folder / f"shard-{k:05d}.safetensors"

    def build(self, source, n: int, encode: Callable[[torch.Tensor], torch.Tensor], vae_digest: str,
              shard_size: int = 256, batch: int = 8, progress: bool = True, rank: int = 0, world: int = 1,
              barrier: Callable[[], None] = lambda: None) -> LatentCache:
        """Encode items [0, n) of `source` (missing/invalid shards only), then load everything.

        encode: pixels [B, 3, T, H, W] in [-1, 1] -> normalized latents.
        Items for which a ManifestClips source returns None (bad entries) are left out.
        Several processes (rank of world, with their barrier) share the work: the main process
        checks the settings, then each encodes the shards k with k % world == rank.
        """
        from tqdm.auto import tqdm

        self.folder.mkdir(parents=True, exist_ok=True)
        if rank == 0:
            self._start(source, n, vae_digest, shard_size)
        barrier()
        n_shards = (n + shard_size - 1) // shard_size
        todo = [k for k in range(rank, n_shards, world) if not self._valid(k)]
        bar = tqdm(total=sum(min(shard_size, n - k * shard_size) for k in todo), desc="encoding latents",
                   disable=not progress, unit="clip")
        for k in todo:
            lo, hi = k * shard_size, min(n, (k + 1) * shard_size)
            lat, caps, idxs, pending = [], [], [], []
            for i in range(lo, hi):
                clip = source.load(i) if hasattr(source, "load") else source[i]
                if clip is not None:
                    pending.append(clip)
                if len(pending) >= batch or (i == hi - 1 and pending):
                    with torch.no_grad():
                        px = frames_to_tensor(np.stack([c.frames for c in pending]))
                        lat.append(encode(px).to(torch.float16).cpu())
                    caps += [c.caption for c in pending]
                    idxs += [c.index for c in pending]
                    bar.update(len(pending))
                    pending = []
            if not lat:
                continue
            meta = {"captions": json.dumps(caps), "indices": json.dumps(idxs)}
            save_state_dict({"latents": torch.cat(lat)}, self._shard(k), metadata=meta)
        bar.close()
        barrier()
        return self.load(n_shards)

    def _start(self, source, n: int, vae_digest: str, shard_size: int) -> None:
        # through JSON, as stored: a tuple in the settings must compare equal to the list read back
        settings = json.loads(json.dumps({"source": source.settings(), "n": n, "shard_size": shard_size,
                                          "vae": vae_digest}))
        index_file = self.folder / "index.json"
        if index_file.is_file():
            try:
                old = json.loads(index_file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                old = None
            if old != settings:
                # a cache of other data / another VAE: start over rather than mix
                for p in self.folder.glob("shard-*.safetensors"):
                    p.unlink()
        with atomic_path(index_file) as tmp:
            tmp.write_text(json.dumps(settings, indent=1), encoding="utf-8")

    def _valid(self, k: int) -> bool:
        return cache_file_ready(self._shard(k), "latent cache shard")

    def load(self, n_shards: int | None = None) -> LatentCache:
        from safetensors import safe_open

        paths = sorted(self.folder.glob("shard-*.safetensors"))
        if n_shards is not None:
            paths = [self._shard(k) for k in range(n_shards) if self._shard(k).is_file()]
        if not paths:
            raise CheckpointError(f"the latent cache {self.folder} holds no shards; build it first")
        lats, self.captions, self.indices = [], [], []
        for p in paths:
            _, meta = read_header(p)
            with safe_open(str(p), framework="pt") as f:
                lats.append(f.get_tensor("latents"))
            self.captions += json.loads(meta["captions"])
            self.indices += json.loads(meta["indices"])
        self.latents = torch.cat(lats)
        return self

    def __len__(self) -> int:
        return 0 if self.latents is None else self.latents.shape[0]

    def batch(self, idx: Sequence[int]) -> tuple[torch.Tensor, list[str]]:
        idx = [int(i) for i in idx]
        return self.latents[idx].float(), [self.captions[i] for i in idx]

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.latents.float().transpose(0, 1).flatten(1)
        return x.mean(1), x.std(1)
