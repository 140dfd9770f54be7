"""Latents and text features of the subject-to-video stages, cached on disk and keyed by digests.

    <cache>/clips/ab/<key>.safetensors   one clip's normalized VAE latents [C, f, h, w] (fp16)
    <cache>/refs/ab/<key>.safetensors    one reference's latents [C, h, w] (fp16), prepared for a frame size
    <cache>/text/ab/<key>.safetensors    one caption's features [n, D] (the encoder's dtype): its real tokens; the
                                         zeros after them are put back at load time (metadata: length)
    <cache>/files.json                   digests and video facts of the files read, by (path, size, mtime)

A key is the digest of an item's content id (training/common/sources.py: what the item is made of,
files by their digests) and of the encoder file it went through, so another VAE, text encoder,
frame sampling or bucket never reuses an entry, the in-pair and cross-pair stages share the
latents of the same clips, and adding videos to a manifest encodes only the new ones. Each entry
is one file (one shard per item) written atomically; a damaged one is reported and rebuilt.

`prepare_stage_data` runs as its own step before any DiT step: it loads the VAE on the device,
encodes what is missing (streamed through the causal VAE, in spatial tiles where a frame is
large), releases it, then does the same with the text encoder. `python -m training.cache` runs
just this (e.g. on another machine, or before a long run).
"""
from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from libragen_core.errors import CheckpointError, InputError
from libragen_core.io.atomic import write_json
from libragen_core.io.safetensors_file import load_state_dict, read_header, save_state_dict
from libragen_core.io.video import probe_video

from .data import cache_file_ready, file_digest, frames_to_tensor
from .sources import Planned, TripletSource, content_id

CACHE_FORMAT = 1


# ---------------------------------------------------------------- file facts
class FileFacts:
    """Digests (and video facts) of files, remembered by path, size and mtime in a JSON file, so a
    rerun does not read every video and multi-GB model file again."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else None
        self.table: dict[str, dict] = {}
        if self.path is not None and self.path.is_file():
            try:
                self.table = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                self.table = {}  # a damaged memo only costs reading the files again
        self.dirty = False

    def _entry(self, path: Path) -> dict:
        st = path.stat()
        key = str(path.resolve())
        e = self.table.get(key)
        if e is None or e.get("size") != st.st_size or e.get("mtime_ns") != st.st_mtime_ns:
            e = self.table[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
            self.dirty = True
        return e

    def digest(self, path: str | os.PathLike) -> str:
        e = self._entry(Path(path))
        if "digest" not in e:
            e["digest"] = file_digest(path)
            self.dirty = True
        return e["digest"]

    def video(self, path: str | os.PathLike) -> dict:
        """probe_video's facts plus the file's digest (InputError for an unreadable video)."""
        e = self._entry(Path(path))
        if "video" not in e:
            e["video"] = probe_video(Path(path))
            self.dirty = True
        return {**e["video"], "digest": self.digest(path)}

    def save(self) -> None:
        if self.dirty and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, self.table)
            self.dirty = False


# ---------------------------------------------------------------- the store
class FeatureCache:
    """One safetensors file per cached item under <folder>/<kind>/ (module docstring)."""

    KINDS = ("clips", "refs", "text")

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    @staticmethod
    def key(content: str, encoder_digest: str) -> str:
        return content_id(format=CACHE_FORMAT, content=content, encoder=encoder_digest)

    def path(self, kind: str, key: str) -> Path:
        if kind not in self.KINDS:
            raise ValueError(f"cache kind must be one of {self.KINDS}, got {kind!r}")
        return self.folder / kind / key[:2] / f"{key}.safetensors"

    def ready(self, kind: str, key: str) -> bool:
        """The entry exists and is whole; a damaged one is reported, deleted and reported missing."""
        return cache_file_ready(self.path(kind, key))

    def put(self, kind: str, key: str, tensor: torch.Tensor, metadata: dict | None = None) -> None:
        p = self.path(kind, key)
        p.parent.mkdir(parents=True, exist_ok=True)
        save_state_dict({"x": tensor.detach().cpu().contiguous()}, p, metadata=metadata)

    def get(self, kind: str, key: str) -> tuple[torch.Tensor, dict]:
        p = self.path(kind, key)
        try:
            _, meta = read_header(p)
            return load_state_dict(p)["x"], meta
        except CheckpointError as e:
            raise CheckpointError(f"{e}. Run `python -m training.cache` (or the stage again) to rebuild the "
                                  "cache entry") from None


def text_key(caption: str, encoder_digest: str) -> str:
    return FeatureCache.key(content_id(caption=caption), encoder_digest)


# ---------------------------------------------------------------- encoders
class Encoders:
    """The VAE and the text encoder of a base, loaded on the device only while the cache needs them.

    load_vae / load_text: device -> module; vae_file / text_file: the files (their digests key
    the cache). stream: encode clips through the causal VAE a few frames at a time (real bases)
    rather than whole (the small SpriteWorld VAE, where that is faster); tile: frames wider or
    taller than this many pixels are encoded in tiles (0 = never)."""

    def __init__(self, vae_file: Path, text_file: Path, load_vae: Callable, load_text: Callable,
                 facts: FileFacts, device="cpu", stream: bool = True, tile: int = 0, batch: int = 8):
        self.vae_file, self.text_file = Path(vae_file), Path(text_file)
        self._load_vae, self._load_text = load_vae, load_text
        self.facts, self.device, self.stream, self.tile, self.batch = facts, device, stream, tile, batch
        self._vae = self._text = None

    @property
    def vae_digest(self) -> str:
        return self.facts.digest(self.vae_file)

    @property
    def text_digest(self) -> str:
        return self.facts.digest(self.text_file)

    def vae(self):
        if self._vae is None:
            self._vae = self._load_vae(self.device)
        return self._vae

    def text(self):
        if self._text is None:
            self._text = self._load_text(self.device)
        return self._text

    def encode_pixels(self, px: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] in [-1, 1] -> normalized latents, streamed / tiled as set."""
        vae = self.vae()
        h, w = px.shape[-2:]
        tile = self.tile if self.tile and max(h, w) > self.tile else None
        with torch.no_grad():
            return vae.encode(px, chunked=self.stream, tile=tile, overlap=64)

    def release(self) -> None:
        """Take both encoders off the device (and out of memory)."""
        self._vae = self._text = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ---------------------------------------------------------------- a stage's data
@dataclass(frozen=True)
class CachedItem:
    name: str
    clip: str  # cache keys
    refs: tuple[str, ...]
    text: str
    anonymous: str | None
    group: str
    caption: str
    labels: tuple[str, ...] = ()


class CachedData:
    """A stage's items, read from the cache a batch at a time."""

    def __init__(self, cache: FeatureCache, items: list[CachedItem], text_digest: str):
        self.cache, self.items, self.text_digest = cache, items, text_digest
        self.null_text = text_key("", text_digest)

    def __len__(self) -> int:
        return len(self.items)

    def groups(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, it in enumerate(self.items):
            out.setdefault(it.group, []).append(i)
        return out

    def text(self, key: str) -> torch.Tensor:
        """[1, length, D] float32: the cached real-token rows, zero-padded back to the encoder's length."""
        x, meta = self.cache.get("text", key)
        out = torch.zeros((1, int(meta["length"]), x.shape[-1]), dtype=torch.float32)
        out[0, : x.shape[0]] = x.float()
        return out

    def null_context(self) -> torch.Tensor:
        return self.text(self.null_text)

    def caption_features(self, captions: Sequence[str]) -> torch.Tensor:
        """[B, L, D] float32 features of captions encoded with this data (an item's own, or one
        asked for through prepare_stage_data's more_captions); CheckpointError for one never encoded."""
        return torch.cat([self.text(text_key(c, self.text_digest)) for c in captions])

    def latents(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Item i: (clip latents [C, f, h, w], reference latents [C, R, h, w]) in float32."""
        it = self.items[i]
        clip = self.cache.get("clips", it.clip)[0].float()
        refs = torch.stack([self.cache.get("refs", k)[0].float() for k in it.refs], dim=1)
        return clip, refs

    def batch(self, idx: Sequence[int], anonymous: Sequence[bool] | None = None):
        """(latents [B, C, f, h, w], refs [B, C, R, h, w], text [B, L, D]) float32; anonymous[b] picks
        the caption without the subjects' looks where the item has one."""
        lats, refs, ctx = [], [], []
        for b, i in enumerate(idx):
            z, r = self.latents(int(i))
            lats.append(z)
            refs.append(r)
            it = self.items[int(i)]
            use_anon = anonymous is not None and anonymous[b] and it.anonymous is not None
            ctx.append(self.text(it.anonymous if use_anon else it.text))
        return torch.stack(lats), torch.stack(refs), torch.cat(ctx)


def _trim(features: torch.Tensor) -> torch.Tensor:
    """[L, D] -> the rows up to the last non-zero one (at least one row)."""
    nonzero = (features != 0).any(dim=-1).nonzero()
    n = int(nonzero[-1]) + 1 if len(nonzero) else 1
    return features[:n]


def prepare_stage_data(source: TripletSource, cache: FeatureCache, encoders: Encoders, anonymous: bool = False,
                       progress: bool = True, label: str = "", required: bool = True,
                       more_captions: Callable[[list[str]], Sequence[str]] | None = None) -> CachedData | None:
    """Plan every item of `source`, encode what the cache lacks (VAE first, then the text encoder,
    each released afterwards), and return the items that made it (bad ones are reported by the
    source and left out). No usable item: InputError, or None when not `required`.
    more_captions(the usable items' captions, in order) -> captions to encode as well, while the
    text encoder is loaded (the direction probe's swapped captions: training/direction_probe.py)."""
    from tqdm.auto import tqdm

    from libragen_core.conditioning.references import prepare_references

    plans: list[Planned] = []
    for i in tqdm(range(len(source)), desc=f"checking {label or source.kind} data", disable=not progress,
                  unit="clip", leave=False):
        p = source.plan(i)
        if p is not None:
            plans.append(p)
    encoders.facts.save()
    if not plans and not required:
        return None
    if not plans:
        raise InputError(f"no usable {source.kind} items in {source.settings()}; see the bad entries reported above")
    vd = encoders.vae_digest
    ck = {p.index: FeatureCache.key(p.clip_id, vd) for p in plans}
    rk = {p.index: [FeatureCache.key(r, vd) for r in p.ref_ids] for p in plans}
    todo = [p for p in plans if not cache.ready("clips", ck[p.index]) or not all(cache.ready("refs", k)
                                                                                   for k in rk[p.index])]
    bad: set[int] = set()
    if todo:
        pending: list[tuple[Planned, object, bool]] = []

        def flush():
            need = [(p, t) for p, t, need_clip in pending if need_clip]
            if need:
                z = encoders.encode_pixels(frames_to_tensor(np.stack([t.frames for _, t in need])))
                for (p, _), zi in zip(need, z):
                    cache.put("clips", ck[p.index], zi.to(torch.float16))
            refs = [(p, k, img) for p, t, _ in pending for k, img in zip(rk[p.index], t.refs)
                    if not cache.ready("refs", k)]
            if refs:
                f, h, w = pending[0][0].shape
                px = torch.cat([prepare_references([img], h, w) for _, _, img in refs]).unsqueeze(2)
                z = encoders.encode_pixels(px)[:, :, 0]
                for (_, k, _), zi in zip(refs, z):
                    cache.put("refs", k, zi.to(torch.float16))
            pending.clear()

        bar = tqdm(todo, desc=f"encoding {label or source.kind} clips", disable=not progress, unit="clip")
        for p in bar:
            need_clip = not cache.ready("clips", ck[p.index])
            t = source.load(p.index, clip=need_clip)
            if t is None:
                bad.add(p.index)
                continue
            if pending and (pending[0][0].shape != p.shape or len(pending) >= encoders.batch):
                flush()
            pending.append((p, t, need_clip))
        if pending:
            flush()
        bar.close()
    plans = [p for p in plans if p.index not in bad]
    if not plans:
        if not required:
            return None
        raise InputError(f"no usable {source.kind} items in {source.settings()}; see the bad entries reported above")
    td = encoders.text_digest
    captions = {""} | {p.caption for p in plans} | ({p.anonymous for p in plans if p.anonymous} if anonymous else set())
    if more_captions is not None:
        captions |= set(more_captions([p.caption for p in plans]))
    missing = sorted(c for c in captions if not cache.ready("text", text_key(c, td)))
    if missing:
        encoders.release()  # the VAE leaves the device before the text encoder comes
        text = encoders.text()
        # stored in the dtype the encoder computes in (umT5: bf16 or fp16; the small SpriteWorld
        # encoder: fp32), so the cached features are exactly what it gives
        store = getattr(text, "dtype", None)
        store = store if store in (torch.bfloat16, torch.float16) else torch.float32
        bar = tqdm(total=len(missing), desc="encoding captions", disable=not progress, unit="caption")
        for lo in range(0, len(missing), encoders.batch):
            chunk = missing[lo:lo + encoders.batch]
            with torch.no_grad():
                feats = text.encode(chunk)
            for c, f in zip(chunk, feats):
                cache.put("text", text_key(c, td), _trim(f).to(store), {"length": str(f.shape[0])})
            bar.update(len(chunk))
        bar.close()
    encoders.release()
    items = [CachedItem(name=p.name, clip=ck[p.index], refs=tuple(rk[p.index]), text=text_key(p.caption, td),
                        anonymous=text_key(p.anonymous, td) if (anonymous and p.anonymous) else None, group=p.group,
                        caption=p.caption, labels=p.labels) for p in plans]
    return CachedData(cache, items, td)
