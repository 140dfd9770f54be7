"""What every subject-to-video data source gives the cache and the stages.

A source is a sequence of items; for each it can say, without decoding anything, what the item
will be (`plan`: its content ids, caption and training shape), and then produce it (`load`: the
clip at that shape and its reference images). Content ids name what an item is made of (file
digests and the sampling and bucket settings; or a procedural source's settings and index), so
the cache (training/common/cache.py) keys latents by them plus the encoder's digest and encodes
every distinct thing once.

Sources: `S2VManifest` (real videos, training/common/s2v_manifest.py) and the SpriteWorld ones
(procedural clips and `libragen spriteworld dataset` folders, training/spriteworld/triplets.py), which add
ground truth (`Triplet.truth`) for the SpriteWorld-only validation.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

KINDS = ("in_pair", "cross_pair")


def content_id(**parts) -> str:
    """A short stable digest of JSON-able parts (sorted keys): the name of a piece of content."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Planned:
    """What item `index` of a source will be, known before decoding it."""

    index: int
    name: str  # for messages and sheets: the video path (and manifest line), or "procedural #i"
    clip_id: str  # content id of the sampled, bucketed clip
    ref_ids: tuple[str, ...]  # content id of each reference, prepared for this clip's frame size
    caption: str
    anonymous: str | None  # the caption with the subjects' looks taken out, when it is in LibraGen's format
    shape: tuple[int, int, int]  # (frames, height, width) of the training clip
    labels: tuple[str, ...] = ()

    @property
    def group(self) -> str:
        """Items of one group can share a batch: same clip shape and number of references."""
        f, h, w = self.shape
        return f"{f}x{h}x{w}-r{len(self.ref_ids)}"


@dataclass
class Triplet:
    frames: np.ndarray | None  # uint8 [T, H, W, 3] at the planned shape (None when not asked for)
    refs: list[np.ndarray]  # uint8 [h, w, 3] reference images, before fitting into the frame
    caption: str
    truth: dict | None = field(default=None)  # SpriteWorld scene (ground truth); None for real videos


class TripletSource(Protocol):
    kind: str  # "in_pair" or "cross_pair"

    def __len__(self) -> int: ...

    def plan(self, i: int) -> Planned | None:
        """None when the item is bad (reported under the bad-entry rule)."""

    def load(self, i: int, clip: bool = True) -> Triplet | None:
        """The item's clip (clip=False: references only, where they need no decoding of it) and
        references; None when it turns out bad while decoding (reported)."""

    def settings(self) -> dict: ...


def stage_sources(cfg, stage: str, facts) -> tuple[TripletSource, TripletSource]:
    """(training items, held-out items) of an SFT stage: the stage's manifest or data.manifest (real
    videos; the held-out part is data.heldout of its entries), else a SpriteWorld dataset folder
    (`dataset`) or procedural SpriteWorld clips (`data`), held out = clips of held-out identities
    (validation.clips of them, or probe.samples when the direction probe is on and asks for more)."""
    import dataclasses

    sc = getattr(cfg, stage)
    kind = {"sft_in": "in_pair", "sft_cross": "cross_pair"}[stage]
    manifest = sc.manifest or cfg.data.manifest
    if manifest:
        from .s2v_manifest import S2VManifest

        return (S2VManifest(manifest, kind, cfg.data, facts, "train"),
                S2VManifest(manifest, kind, cfg.data, facts, "heldout"))
    from ..spriteworld.triplets import ManifestTriplets, ProceduralTriplets

    vc = sc.validation
    n_held = max(vc.clips, sc.probe.samples if sc.probe.every else 0)
    held = ProceduralTriplets(dataclasses.replace(sc.data, split="heldout", seed=vc.seed), kind, n=n_held)
    if sc.dataset:
        return ManifestTriplets(sc.dataset, kind, n=sc.clips), held
    return ProceduralTriplets(sc.data, kind, n=sc.clips), held
