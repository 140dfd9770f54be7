"""Subject-to-video training triplets (references, text, video) and their latent cache.

In-pair references are square crops of the clip's own frames (a frame where the subject is at
least 90% visible, background included), cross-pair references render the same identity on
white at another angle, scale and light; the same rules as `libragen spriteworld dataset` kinds
in_pair / cross_pair, drawn here in memory from (seed, index) so an in-pair and a cross-pair cache
with the same ClipSpec hold the very same clips with different references.

References are prepared exactly as at inference (libragen_core.pipeline.encode_subjects): fit
inside the video frame, padded with white, VAE-encoded one image per latent frame.

Cache file: `<folder>/triplets-<key>.safetensors` with latents [N, C, f, h, w] and refs
[N, R, C, h, w] (fp16), captions and scenes in the metadata; the key covers the source settings
and the VAE file, so other data or another VAE never reuse it. Written once, atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from libragen_core.conditioning.references import prepare_references
from libragen_core.errors import ConfigError, InputError
from libragen_core.io.safetensors_file import load_state_dict, read_header, save_state_dict

from ..common.data import file_digest, frames_to_tensor
from ..common.sources import KINDS, Planned, Triplet, content_id
from .clips import ClipSpec, ProceduralClips


def reference_images(result, kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    """uint8 [h, w, 3] reference images, one per subject of a rendered scene."""
    from libragen_core.spriteworld.dataset import crop_box
    from libragen_core.spriteworld.render import render_identity

    scene = result.scene
    out = []
    for k, spec in enumerate(scene.subjects):
        if kind == "in_pair":
            vis = result.visible[k]
            t = int(rng.choice(np.nonzero(vis >= min(0.9, vis.max()))[0]))
            x0, y0, x1, y1 = crop_box(result, k, t)
            out.append(np.ascontiguousarray(result.frames[t, y0:y1, x0:x1]))
        elif kind == "cross_pair":
            image, _ = render_identity(spec.identity, scene.short, angle=float(rng.uniform(-60, 60)),
                                       scale=float(rng.uniform(0.55, 0.85)), light=float(rng.uniform(0.75, 1.15)),
                                       background="white")
            out.append(image)
        else:
            raise ConfigError(f"triplet kind must be one of {KINDS}; got {kind!r}")
    return out


def track_scores(frames: np.ndarray, scene_d: dict) -> dict:
    """A generated clip against the scene it was asked for: identity (the tracker's match of each
    subject, mean over frames) and motion error (tracked centre vs the true centre, short-side units)."""
    from libragen_core.eval.tracking import track_scene
    from libragen_core.spriteworld.render import render_scene
    from libragen_core.spriteworld.scene import Scene

    scene = Scene.from_dict(scene_d)
    truth = render_scene(scene).centers  # [K, T, 2]
    tracks = track_scene(frames, scene)
    short = min(frames.shape[1:3])
    return {"identity": float(np.mean([t.match.mean() for t in tracks])),
            "motion_err": float(np.mean([np.linalg.norm(t.centers - c, axis=1).mean() / short
                                         for t, c in zip(tracks, truth)]))}


class ProceduralTriplets:
    """Triplet i: the clip of ProceduralClips(spec)[i] plus its references of `kind`; as a
    TripletSource (training/common/sources.py), the first n of them."""

    def __init__(self, spec: ClipSpec, kind: str, n: int = 0):
        if kind not in KINDS:
            raise ConfigError(f"triplet kind must be one of {KINDS}; got {kind!r}")
        self.spec, self.kind, self.n = spec, kind, n
        self.clips = ProceduralClips(spec)

    def __len__(self) -> int:
        return self.n

    def plan(self, i: int) -> Planned:
        from libragen_core.spriteworld.captions import anonymous_caption, scene_caption

        scene, _ = self.clips.scene(i)
        spec = json.loads(json.dumps(asdict(self.spec)))
        caption = scene_caption(scene)
        return Planned(index=i, name=f"procedural clip {i}", clip_id=content_id(source="spriteworld", spec=spec, index=i),
                       ref_ids=tuple(content_id(source="spriteworld", spec=spec, index=i, kind=self.kind, ref=k)
                                     for k in range(len(scene.subjects))),
                       caption=caption, anonymous=anonymous_caption(caption), shape=(self.spec.frames, *self.spec.size))

    def load(self, i: int, clip: bool = True) -> Triplet:
        frames, refs, caption, scene = self[i]
        return Triplet(frames=frames, refs=refs, caption=caption, truth=scene)

    def __getitem__(self, i: int) -> tuple[np.ndarray, list[np.ndarray], str, dict]:
        from libragen_core.spriteworld.captions import scene_caption
        from libragen_core.spriteworld.render import render_scene

        scene, _ = self.clips.scene(i)
        result = render_scene(scene)
        # references draw from their own stream: the clip does not depend on the reference kind
        refs = reference_images(result, self.kind, np.random.default_rng([self.spec.seed, i, 7]))
        # through JSON, so a fresh item equals one read back from a cache (lists, not tuples)
        return result.frames, refs, scene_caption(scene), json.loads(json.dumps(scene.to_dict()))

    def score(self, i: int, frames: np.ndarray) -> dict:
        """Ground-truth scores of a clip generated for triplet i (track_scores)."""
        return track_scores(frames, self[i][3])

    def settings(self) -> dict:
        return {"source": "procedural-triplets", "kind": self.kind, **asdict(self.spec)}


class ManifestTriplets:
    """Triplets of a `libragen spriteworld dataset --kind in_pair|cross_pair` folder (clips + ref PNGs)."""

    def __init__(self, folder: str | os.PathLike, kind: str, n: int = 0):
        from libragen_core.spriteworld.dataset import read_manifest

        self.folder, self.kind = Path(folder), kind
        self.records = read_manifest(self.folder)
        self.n = min(n, len(self.records)) if n else len(self.records)
        kinds = {r.get("kind") for r in self.records}
        if kinds != {kind}:
            raise ConfigError(f"{self.folder} holds {sorted(map(str, kinds))} records but this stage trains on "
                              f"{kind} triplets; write one with `libragen spriteworld dataset --kind {kind}`")
        first = self.records[0]
        self.spec = ClipSpec(size=tuple(first["size"]), frames=int(first["n_frames"]))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, list[np.ndarray], str, dict]:
        from PIL import Image

        from libragen_core.io.video import read_video

        rec = self.records[i]
        frames, _ = read_video(self.folder / rec["video"])
        refs = [np.array(Image.open(self.folder / r["path"]).convert("RGB")) for r in rec["refs"]]
        return frames, refs, rec["caption"], rec["scene"]

    def plan(self, i: int) -> Planned:
        from libragen_core.spriteworld.captions import anonymous_caption

        rec = self.records[i]
        size = list(self.spec.size)
        return Planned(index=i, name=str(self.folder / rec["video"]),
                       clip_id=content_id(video=file_digest(self.folder / rec["video"]), size=size),
                       ref_ids=tuple(content_id(image=file_digest(self.folder / r["path"]), size=size)
                                     for r in rec["refs"]),
                       caption=rec["caption"], anonymous=anonymous_caption(rec["caption"]),
                       shape=(self.spec.frames, *self.spec.size))

    def load(self, i: int, clip: bool = True) -> Triplet:
        frames, refs, caption, scene = self[i]
        return Triplet(frames=frames, refs=refs, caption=caption, truth=scene)

    def settings(self) -> dict:
        digest = hashlib.sha256((self.folder / "manifest.jsonl").read_bytes()).hexdigest()[:16]
        return {"source": "manifest-triplets", "kind": self.kind, "folder": str(self.folder.resolve()), "manifest": digest}


class TripletCache:
    """Latents, reference latents, captions and scenes of the first n triplets of a source."""

    def __init__(self, latents: torch.Tensor, refs: torch.Tensor, captions: list[str], scenes: list[dict]):
        self.latents, self.refs, self.captions, self.scenes = latents, refs, captions, scenes

    def __len__(self) -> int:
        return self.latents.shape[0]

    @classmethod
    def build(cls, folder: str | os.PathLike, source: ProceduralTriplets | ManifestTriplets, n: int,
              encode: Callable[[torch.Tensor], torch.Tensor], vae_digest: str, batch: int = 8,
              progress: bool = True) -> TripletCache:
        """encode: pixels [B, 3, T, H, W] in [-1, 1] -> normalized latents."""
        from tqdm.auto import tqdm

        if n < 1:
            raise ConfigError(f"a triplet cache needs at least one clip, got n={n}")
        folder = Path(folder)
        key = hashlib.sha256(json.dumps({"src": source.settings(), "n": n, "vae": vae_digest},
                                        sort_keys=True).encode()).hexdigest()[:16]
        path = folder / f"triplets-{key}.safetensors"
        if path.is_file():
            return cls.load(path)
        folder.mkdir(parents=True, exist_ok=True)
        lats, refs, caps, scenes = [], [], [], []
        h, w = source.spec.size
        bar = tqdm(total=n, desc=f"encoding {source.kind} triplets", disable=not progress, unit="clip")
        for lo in range(0, n, batch):
            items = [source[i] for i in range(lo, min(n, lo + batch))]
            counts = {len(r) for _, r, _, _ in items}
            if len(counts) != 1:
                raise InputError("triplets of one cache must all have the same number of subjects; fix n_subjects")
            with torch.no_grad():
                lats.append(encode(frames_to_tensor(np.stack([f for f, _, _, _ in items]))).to(torch.float16))
                ref_px = torch.stack([prepare_references(r, h, w) for _, r, _, _ in items])  # [B, R, 3, H, W]
                b, r = ref_px.shape[:2]
                z = encode(ref_px.flatten(0, 1).unsqueeze(2))  # [B*R, C, 1, h, w]
                refs.append(z.squeeze(2).unflatten(0, (b, r)).to(torch.float16))
            caps += [c for _, _, c, _ in items]
            scenes += [s for _, _, _, s in items]
            bar.update(len(items))
        bar.close()
        cache = cls(torch.cat(lats), torch.cat(refs), caps, scenes)
        save_state_dict({"latents": cache.latents.contiguous(), "refs": cache.refs.contiguous()}, path,
                        metadata={"captions": json.dumps(caps), "scenes": json.dumps(scenes)})
        return cache

    @classmethod
    def load(cls, path: str | os.PathLike) -> TripletCache:
        _, meta = read_header(path)
        sd = load_state_dict(path)
        return cls(sd["latents"], sd["refs"], json.loads(meta["captions"]), json.loads(meta["scenes"]))

    def batch(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """(latents [B, C, f, h, w], ref frames [B, C, R, h, w], captions) in float32."""
        idx = [int(i) for i in idx]
        return (self.latents[idx].float(), self.refs[idx].float().transpose(1, 2).contiguous(),
                [self.captions[i] for i in idx])

    def subjects_latents(self, i: int) -> torch.Tensor:
        """Triplet i's references in the sampler's Subjects layout [R, C, 1, h, w]."""
        return self.refs[i].float().unsqueeze(2)
