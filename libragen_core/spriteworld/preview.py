"""Contact sheets: a few clips as rows of frames with their caption underneath, for eyeballing."""
from __future__ import annotations

import textwrap

import numpy as np

from .captions import scene_caption
from .defects import DEFECT_KINDS, make_defect
from .render import render_scene
from .scene import sample_scene


def contact_sheet(rows, step: int = 2, zoom: int = 2, width_chars: int | None = None) -> np.ndarray:
    """rows: [(frames uint8 [T, H, W, 3], text)]; every `step`-th frame, magnified `zoom` times."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=12)
    gap = 4
    blocks = []
    sheet_w = max(len(range(0, len(f), step)) * (f.shape[2] * zoom + gap) for f, _ in rows) + gap
    chars = width_chars or max(20, sheet_w // 7)
    for frames, text in rows:
        tiles = [np.kron(f, np.ones((zoom, zoom, 1), dtype=np.uint8)) for f in frames[::step]]
        th, tw = tiles[0].shape[:2]
        strip = np.full((th + 2 * gap, sheet_w, 3), 255, dtype=np.uint8)
        for i, tile in enumerate(tiles):
            x = gap + i * (tw + gap)
            strip[gap : gap + th, x : x + tw] = tile
        lines = [w for para in text.splitlines() for w in textwrap.wrap(para, chars)]
        label = Image.new("RGB", (sheet_w, 15 * len(lines) + gap), (255, 255, 255))
        draw = ImageDraw.Draw(label)
        for j, line in enumerate(lines):
            draw.text((gap, j * 15), line, fill=(0, 0, 0), font=font)
        blocks += [strip, np.asarray(label), np.full((2, sheet_w, 3), 180, dtype=np.uint8)]
    return np.concatenate(blocks, axis=0)


def preview_rows(n: int = 6, seed: int = 0, *, size=(64, 64), n_frames: int = 17, split: str = "train",
                 defects: bool = False, scene_options: dict | None = None):
    """Rows for contact_sheet: n sampled scenes (or, with defects=True, one per defect kind)."""
    rows = []
    options = dict(scene_options or {})
    n_subjects = options.pop("n_subjects", None)
    kinds = ("none",) + DEFECT_KINDS
    for i in range(len(kinds) if defects else n):
        rng = np.random.default_rng([seed, i])
        scene = sample_scene(rng, n_subjects, split, size=size, n_frames=n_frames, **options)
        if defects:
            clip = make_defect(kinds[i], scene, rng)
            rows.append((clip.frames, f"[{kinds[i]}] {clip.caption}"))
        else:
            rows.append((render_scene(scene).frames, scene_caption(scene)))
    return rows
