"""Subject fidelity and copy-paste: does each subject look like its reference, and is frame 0 a paste?

Subject fidelity (0..1, 1 = the subject is exactly the identity in every frame): the tracker
(tracking.py) finds the subject's pose in each frame from pixels; the per-frame score is its
identity match there: colour agreement of every silhouette pixel with the identity drawn at that
pose (a wrong colour, pattern or marking region lowers it in proportion to its area) times
(1 - identity colour found in a band just outside the silhouette: a wrong shape or size). The
clip's fidelity is the mean over frames; min and 10th percentile show a subject that is lost or
morphs in a few frames. Multi-subject scenes report one entry per subject.

Copy-paste (0..1, 1 = frame 0 reproduces the reference image verbatim): the reference is placed
where a pasting model would put it (the "placements": the reference fitted into the whole frame
with white padding, as the model sees it; fitted into the k-th of K side-by-side slots; for an
in-pair crop, its source box). At each placement, m_subj = fraction of the reference's subject
pixels whose colour frame 0 reproduces (within 40 RGB), m_bg = the same over its background
pixels; score = m_subj * (0.5 + 0.5 * m_bg), max over placements. A real clip shows the subject
at its own pose, scale, position and background, so it scores low against an on-white
reference; a paste scores ~1. The suite-level copy-paste rate is the fraction of subjects above
COPY_PASTE_THRESHOLD.
"""
from __future__ import annotations

import numpy as np

from ..conditioning.references import fit_inside
from ..errors import InputError
from .tracking import Track

COPY_PASTE_THRESHOLD = 0.6
_COPY_TOL = 40.0


def subject_fidelity(tracks: list[Track]) -> list[dict]:
    """Per subject: mean, min, p10 of the per-frame identity match, plus its two factors."""
    out = []
    for tr in tracks:
        m = tr.match
        out.append({
            "mean": float(m.mean()),
            "min": float(m.min()),
            "p10": float(np.percentile(m, 10)),
            "color_match": float(tr.color_match.mean()),
            "leak": float(tr.leak.mean()),
            "per_frame": [round(float(v), 4) for v in m],
        })
    return out


def _resize(img: np.ndarray, w: int, h: int, nearest: bool = False) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((w, h), Image.NEAREST if nearest else Image.BILINEAR))


def placements(ref_shape: tuple[int, int], frame_hw: tuple[int, int], slot: int = 0, n_slots: int = 1,
               source_box=None) -> list[tuple[int, int, int, int]]:
    """Canonical boxes (x0, y0, x1, y1) in frame pixels where a pasted reference would sit."""
    rh, rw = ref_shape
    H, W = frame_hw
    boxes = [fit_inside(rw, rh, W, H).box]
    if n_slots > 1:
        sw = W // n_slots
        p = fit_inside(rw, rh, sw, H)
        boxes.append((slot * sw + p.left, p.top, slot * sw + p.left + p.width, p.top + p.height))
    if source_box is not None:
        boxes.append(tuple(int(v) for v in source_box))
    return boxes


def copy_paste_score(frame0: np.ndarray, ref: np.ndarray, ref_mask: np.ndarray, boxes) -> dict:
    """Similarity of frame 0 to the reference at its canonical placements (see module doc)."""
    frame0 = np.asarray(frame0)
    ref = np.asarray(ref)
    ref_mask = np.asarray(ref_mask, dtype=bool)
    if ref.shape[:2] != ref_mask.shape:
        raise InputError(f"reference {ref.shape[:2]} and its mask {ref_mask.shape} differ in size")
    H, W = frame0.shape[:2]
    best = {"score": 0.0, "subject": 0.0, "background": 0.0, "box": None}
    for box in boxes:
        x0, y0, x1, y1 = box
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        r = _resize(ref, x1 - x0, y1 - y0).astype(np.float32)
        m = _resize(ref_mask.astype(np.uint8) * 255, x1 - x0, y1 - y0, nearest=True) > 127
        f = frame0[y0:y1, x0:x1].astype(np.float32)
        ok = np.linalg.norm(f - r, axis=-1) < _COPY_TOL
        subj = float(ok[m].mean()) if m.any() else 0.0
        bg = float(ok[~m].mean()) if (~m).any() else 1.0
        score = subj * (0.5 + 0.5 * bg)
        if score > best["score"]:
            best = {"score": score, "subject": subj, "background": bg, "box": [int(x0), int(y0), int(x1), int(y1)]}
    return best
