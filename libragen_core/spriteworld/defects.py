"""Defective clips with exact labels, for training and testing the curation filters.

Each defect reproduces one reason the LibraGen data pipeline rejects a clip:
  shot_cut       frames from `frame` on come from another scene (new background and subjects)
  frozen         every frame from `from_frame` on repeats that frame
  text_overlay   a static caption/watermark drawn inside `box` (x0, y0, x1, y1) on every frame
  blur           Gaussian blur of `sigma` px on every frame
  noise          additive Gaussian noise of `sigma` (0-255 scale)
  leaves_frame   subject `subject` (drawn in front) moves out of the frame; `frame` = first frame
                 with < 50% visible
  too_small      every subject is drawn at `scale` (diameter / short side) instead of its own size
  wrong_caption  frames are fine, the caption describes another `mismatch` ("motion" or "subject")
  none           a clean clip (so filters can be scored on false positives too)
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .captions import scene_caption
from .identity import sample_identity
from .motions import MOTIONS, SINGLE_MOTIONS
from .render import RenderResult, render_scene
from .scene import Scene, sample_scene

DEFECT_KINDS = ("shot_cut", "frozen", "text_overlay", "blur", "noise", "leaves_frame", "too_small", "wrong_caption")
WATERMARKS = ("SAMPLE", "PREVIEW", "DEMO", "(c) clips", "www.clip.tv", "HD", "LIVE", "stock")


@dataclass
class DefectiveClip:
    kind: str
    frames: np.ndarray  # uint8 [T, H, W, 3]
    caption: str
    label: dict  # {"kind": ..., plus the defect's parameters}; JSON-ready
    scene: Scene  # the scene that was rendered (leaves_frame / too_small change it)
    result: RenderResult  # its render (ground truth of the rendered scene, before frame edits)


def make_defect(kind: str, scene: Scene, rng: np.random.Generator) -> DefectiveClip:
    if kind not in DEFECT_KINDS and kind != "none":
        raise InputError(f"unknown defect {kind!r}; choose one of none, {', '.join(DEFECT_KINDS)}")
    scene = copy.deepcopy(scene)
    T = scene.n_frames
    if kind == "leaves_frame":
        scene = _leaving_scene(scene, rng)
    elif kind == "too_small":
        small = round(float(rng.uniform(0.07, 0.1)), 4)
        for s in scene.subjects:
            s.scale = small
            if s.motion in ("grow", "shrink"):
                s.motion, s.params = "stay", {}
    elif kind == "frozen" and _is_static(scene):
        # a static clip cannot look frozen; give it in-place motion first (always fits the frame)
        first = scene.subjects[0]
        if first.identity.rotation_visible:
            first.motion, first.params = "spin_cw", {"turns": 1.0}
        else:
            first.motion, first.params = "shrink", {"factor": 1.6}
    result = render_scene(scene)
    frames = result.frames.copy()
    caption = scene_caption(scene)
    label: dict = {"kind": kind}
    if kind == "shot_cut":
        k = int(rng.integers(T // 4, 3 * T // 4 + 1))
        other = _other_scene(scene, rng)
        frames[k:] = render_scene(other).frames[k:]
        label.update(frame=k, other_scene=other.to_dict())
    elif kind == "frozen":
        k = int(rng.integers(0, T // 2 + 1))
        frames[k:] = frames[k]
        label.update(from_frame=k)
    elif kind == "text_overlay":
        frames, text, box = _overlay_text(frames, rng)
        label.update(text=text, box=box)
    elif kind == "blur":
        sigma = round(float(rng.uniform(1.3, 2.2)), 3)
        frames = gaussian_blur(frames, sigma)
        label.update(sigma=sigma)
    elif kind == "noise":
        sigma = round(float(rng.uniform(18.0, 32.0)), 3)
        noisy = frames.astype(np.float32) + rng.normal(0.0, sigma, size=frames.shape).astype(np.float32)
        frames = np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
        label.update(sigma=sigma)
    elif kind == "leaves_frame":
        k = len(scene.subjects) - 1  # _leaving_scene drew the leaving subject last
        below = np.nonzero(result.visible[k] < 0.5)[0]
        label.update(subject=k, frame=int(below[0]))
    elif kind == "too_small":
        label.update(scale=scene.subjects[0].scale)
    elif kind == "wrong_caption":
        wrong, mismatch, k = _wrong_scene(scene, rng)
        caption = scene_caption(wrong)
        label.update(mismatch=mismatch, subject=k, true_caption=scene_caption(scene))
    return DefectiveClip(kind, frames, caption, label, scene, result)


def _is_static(scene: Scene) -> bool:
    return not scene.camera.pan and not scene.light.change and all(s.motion == "stay" for s in scene.subjects)


def _other_scene(scene: Scene, rng: np.random.Generator) -> Scene:
    for _ in range(20):
        other = sample_scene(rng, len(scene.subjects), "any", size=tuple(scene.size), n_frames=scene.n_frames)
        if other.background.color != scene.background.color:
            return other
    return other


def _bring_to_front(scene: Scene, k: int) -> None:
    """Draw subject k last (in front of the others), renumbering interaction references."""
    order = [j for j in range(len(scene.subjects)) if j != k] + [k]
    new_index = {old: new for new, old in enumerate(order)}
    scene.subjects = [scene.subjects[j] for j in order]
    for s in scene.subjects:
        for key in ("target", "partner"):
            if key in s.params:
                s.params[key] = new_index[s.params[key]]
    if scene.interaction is not None:
        scene.interaction.subjects = tuple(new_index[j] for j in scene.interaction.subjects)


def _leaving_scene(scene: Scene, rng: np.random.Generator) -> Scene:
    """Subject 0 walks out of the frame; it is drawn in front, with no occluder, so it is seen first."""
    if scene.interaction is not None and 0 in scene.interaction.subjects:
        for k in scene.interaction.subjects:
            scene.subjects[k].motion, scene.subjects[k].params = "stay", {}
        scene.interaction = None
    scene.camera.pan, scene.camera.distance = None, 0.0
    scene.occluder = None
    subj = scene.subjects[0]
    direction = str(rng.choice(["left", "right", "up", "down"]))
    start = np.array([rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65)])
    axis = 0 if direction in ("left", "right") else 1
    edge = start[axis] if direction in ("left", "up") else 1 - start[axis]
    # starts are fractions of width/height; motion lengths are in short-side units
    extent = scene.size[1 - axis] / min(scene.size)  # size is (H, W); axis 0 is x
    distance = edge * extent + 0.6 * subj.scale + float(rng.uniform(0.0, 0.1))
    subj.motion, subj.params = f"move_{direction}", {"distance": round(distance, 4)}
    subj.start = (round(float(start[0]), 5), round(float(start[1]), 5))
    _bring_to_front(scene, 0)
    return scene


def _wrong_scene(scene: Scene, rng: np.random.Generator) -> tuple[Scene, str, int]:
    wrong = copy.deepcopy(scene)
    free = [k for k in range(len(scene.subjects)) if scene.interaction is None or k not in scene.interaction.subjects]
    if free and rng.random() < 0.5:
        k = int(rng.choice(free))
        current = wrong.subjects[k].motion
        family = current.split("_")[0]
        opposite = {"grow": "shrink", "shrink": "grow"}
        choices = [m for m in SINGLE_MOTIONS if m.split("_")[0] != family] + [opposite.get(current, "")]
        if family in ("move", "zigzag", "circle", "spin"):
            flip = {"left": "right", "right": "left", "up": "down", "down": "up", "cw": "ccw", "ccw": "cw"}
            parts = current.split("_")
            choices.append("_".join([parts[0]] + [flip[p] for p in parts[1:]]))
        choices = [m for m in choices if m in MOTIONS and m != current]
        if not wrong.subjects[k].identity.rotation_visible:
            # a spin of a sprite that looks the same at every angle renders like staying put: a
            # caption claiming it would not be wrong in the pixels (the sampler avoids such spins too)
            choices = [m for m in choices if not m.startswith("spin_")]
        wrong.subjects[k].motion = str(rng.choice(choices))
        return wrong, "motion", k
    k = int(rng.integers(len(scene.subjects)))
    old = wrong.subjects[k].identity
    taken = {(s.identity.color, s.identity.shape) for s in scene.subjects}
    for _ in range(200):
        new = sample_identity(rng, "any")
        if new.shape != old.shape and new.color != old.color and (new.color, new.shape) not in taken:
            break
    wrong.subjects[k].identity = new
    return wrong, "subject", k


def gaussian_blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over H and W of uint8 [T, H, W, C] (reflect padding)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = frames.astype(np.float32)
    for axis in (1, 2):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, w in enumerate(kernel):
            acc += w * np.take(padded, np.arange(i, i + n), axis=axis)
        out = acc
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _overlay_text(frames: np.ndarray, rng: np.random.Generator):
    from PIL import Image, ImageDraw, ImageFont

    T, h, w, _ = frames.shape
    text = str(rng.choice(WATERMARKS))
    font = ImageFont.load_default(size=max(9, round(min(h, w) * 0.2)))
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font, stroke_width=1)
    tw, th = x1 - x0, y1 - y0
    px = int(rng.integers(0, max(1, w - tw)))
    py = int(rng.integers(0, max(1, h - th)))
    draw.text((px - x0, py - y0), text, font=font, fill=255, stroke_width=1)
    ink = np.asarray(layer, dtype=np.float32)[None, ..., None] / 255.0
    # white text on dark backgrounds, black on light ones, slightly transparent like a watermark
    region = frames[:, py : py + th, px : px + tw].astype(np.float32).mean()
    color = 0.0 if region > 128 else 255.0
    opacity = float(rng.uniform(0.8, 0.95))
    out = frames.astype(np.float32) * (1 - opacity * ink) + color * opacity * ink
    ys, xs = np.nonzero(np.asarray(layer))
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else [0, 0, 0, 0]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), text, box
