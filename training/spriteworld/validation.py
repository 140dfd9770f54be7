"""SpriteWorld checks that need its ground truth: the cheap motion / colour check and contact
sheets of the base stage, the tracking validation of the subject-to-video stages (identity and
motion error of samples of held-out identities), and the DPO pairs' tracking metrics.

The motion check needs no tracker: SpriteWorld subjects are drawn in saturated colours that the
backgrounds never use, so the pixels close to the captioned body colour locate the subject. Its
centroid's displacement from the first to the last frame is compared with the captioned
direction. On real clips it scores ~1.0 (a test checks that), so a generated score near chance
means the model did not learn motion (or colour) from text. The full metrics live in
libragen_core/eval; this check is for curves during training, where speed matters.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

STRAIGHT_MOVES = {
    "move_left": (-1.0, 0.0), "move_right": (1.0, 0.0), "move_up": (0.0, -1.0), "move_down": (0.0, 1.0),
    "move_up_left": (-0.7071, -0.7071), "move_up_right": (0.7071, -0.7071),
    "move_down_left": (-0.7071, 0.7071), "move_down_right": (0.7071, 0.7071),
}


def color_centers(frames: np.ndarray, rgb, tol: float = 60.0, min_pixels: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: centroid (x, y) of pixels within `tol` (RGB distance) of `rgb` (NaN if too few), and their count."""
    f = frames.astype(np.float32)
    d = np.sqrt(((f - np.asarray(rgb, np.float32)) ** 2).sum(-1))
    mask = d < tol
    counts = mask.reshape(mask.shape[0], -1).sum(1)
    ys, xs = np.mgrid[0:frames.shape[1], 0:frames.shape[2]]
    centers = np.full((frames.shape[0], 2), np.nan, np.float32)
    for t in range(frames.shape[0]):
        if counts[t] >= min_pixels:
            m = mask[t]
            centers[t] = (xs[m].mean() + 0.5, ys[m].mean() + 0.5)
    return centers, counts


@dataclass
class MotionResult:
    color_ok: bool  # the captioned body colour is present (a subject-sized blob) in most frames
    direction_ok: bool  # the blob moved the captioned way (cosine > 0.85: within ~30 degrees; at least min_shift px)
    displacement: tuple[float, float]
    cosine: float


def motion_check(frames: np.ndarray, rgb, motion: str, min_shift: float = 4.0, tol: float = 60.0) -> MotionResult:
    """frames uint8 [T, H, W, 3]; rgb the subject's body colour; motion one of STRAIGHT_MOVES."""
    centers, counts = color_centers(frames, rgb, tol)
    area = frames.shape[1] * frames.shape[2]
    present = (counts >= 12) & (counts < 0.4 * area)
    color_ok = bool(present.mean() >= 0.8)
    valid = np.flatnonzero(~np.isnan(centers[:, 0]) & present)
    if len(valid) < 2:
        return MotionResult(color_ok, False, (0.0, 0.0), 0.0)
    # average a few frames at each end: single-frame centroids of generated clips are noisy
    k = max(1, len(valid) // 4)
    disp = centers[valid[-k:]].mean(0) - centers[valid[:k]].mean(0)
    want = np.asarray(STRAIGHT_MOVES[motion], np.float32)
    norm = float(np.linalg.norm(disp))
    cos = float(disp @ want / norm) if norm > 0 else 0.0
    return MotionResult(color_ok, bool(norm >= min_shift and cos > 0.85), (float(disp[0]), float(disp[1])), cos)


def summarize(results: list[MotionResult]) -> dict[str, float]:
    if not results:
        return {}
    return {
        "color_ok": float(np.mean([r.color_ok for r in results])),
        "direction_ok": float(np.mean([r.direction_ok for r in results])),
        "cosine": float(np.mean([r.cosine for r in results])),
    }


def save_contact_sheet(path: str | os.PathLike, rows: list[tuple[np.ndarray, str]], step: int = 2, zoom: int = 2) -> np.ndarray:
    """rows of (frames uint8 [T, H, W, 3], label) -> a PNG (atomic); returns the image."""
    from libragen_core.io.images import save_png
    from libragen_core.spriteworld.preview import contact_sheet

    image = contact_sheet(rows, step=step, zoom=zoom)
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    save_png(path, image)
    return image


# ---------------------------------------------------------------- subject-to-video stages
def heldout_triplets(spec, kind: str, vc):
    from .triplets import ProceduralTriplets

    src = ProceduralTriplets(dataclasses.replace(spec, split="heldout", seed=vc.seed), kind)
    return [src[i] for i in range(vc.clips)]


def validate_s2v(dit, bundle, items, vc, folder: Path, step: int, tag: str, logger=None) -> dict:
    """Sample each held-out triplet with its references; identity score (tracker match of the
    subject, mean over frames) and motion error (tracked centre vs the true centre, short-side
    units) of generated vs real clips, plus a contact sheet."""
    from libragen_core.conditioning.references import prepare_references
    from libragen_core.conditioning.subjects import Subjects
    from libragen_core.sampling.sampler import sample

    from ..common.data import tensor_to_frames
    from ..post_common import encode_text
    from .triplets import track_scores

    dev = next(dit.parameters()).device
    s = vc.sampler
    ids, motion, rows = [], [], []
    neg = encode_text(bundle, [""])
    was = dit.training
    dit.eval()
    for i, (frames, refs, caption, scene_d) in enumerate(items):
        h, w = frames.shape[1:3]
        with torch.no_grad():
            z = bundle.vae.encode(prepare_references(refs, h, w, device=dev).unsqueeze(2))
        shape = (1, dit.config.in_dim, *bundle.vae.latent_shape(frames.shape[0], h, w))
        lat = sample(dit, shape, encode_text(bundle, [caption]), neg, Subjects(z.float()), steps=s.steps,
                     shift=s.shift, solver=s.solver, cfg=s.cfg, seed=vc.seed + i)
        with torch.no_grad():
            gen = tensor_to_frames(bundle.vae.decode(lat))[0]
        scores = track_scores(gen, scene_d)
        ids.append(scores["identity"])
        motion.append(scores["motion_err"])
        if len(rows) < 8:
            rows.append((frames, "real: " + caption.split("Video: ")[-1][:70]))
            rows.append((gen, f"{tag} step {step}: identity {ids[-1]:.2f}, motion err {motion[-1]:.2f}"))
    dit.train(was)
    img = save_contact_sheet(folder / "samples" / f"{tag}-{step:08d}.png", rows)
    if logger is not None:
        logger.image(step, "samples", img)
    return {"identity": float(np.mean(ids)), "motion_err": float(np.mean(motion))}


def pair_metrics(winner_frames: np.ndarray, loser_frames: np.ndarray, scene: dict) -> dict:
    """Identity score of each side (mean over subjects and frames of the tracker's match) and the
    motion gap (mean centre distance between the two tracks, in short-side units)."""
    from libragen_core.eval.tracking import track_scene
    from libragen_core.spriteworld.scene import Scene

    sc = Scene.from_dict(scene)
    tw, tl = track_scene(winner_frames, sc), track_scene(loser_frames, sc)
    short = min(winner_frames.shape[1:3])
    gap = np.mean([np.linalg.norm(a.centers - b.centers, axis=1).mean() / short for a, b in zip(tw, tl)])
    return {"identity_winner": float(np.mean([t.match.mean() for t in tw])),
            "identity_loser": float(np.mean([t.match.mean() for t in tl])),
            "motion_gap": float(gap)}
