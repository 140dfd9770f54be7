"""Run a generator over the eval suite and score every video against its scene's ground truth.

A generator is any object with
    generate(refs: list[np.ndarray uint8 HxWx3], prompt: str, seed: int, frames: int, height: int,
             width: int) -> np.ndarray uint8 [frames, height, width, 3]
(the real pipeline's Generator, or the two baselines here). Each case is generated once per
prompt variant (caption, seen user phrasing, held-out user phrasing) from the case's cross-pair
references, and scored by `evaluate_clip`. Aggregates are means per split: identities seen in
training vs held out, the three prompt kinds, and the subject count.

Baselines (genuine generators, used as the bounds of every report):
  GroundTruthGenerator  renders the scene the prompt describes: the upper bound (it looks the
                        scene up by prompt, since a renderer cannot read free text).
  CopyPasteGenerator    pastes the references, fitted side by side on white, static in every
                        frame: the degenerate "copy the reference" model.
  RoundTripGenerator    another generator's clip encoded and decoded by a VAE: the ceiling of
                        any model that decodes with that VAE.
"""
from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable, Sequence

import numpy as np

from ..conditioning.references import fit_inside
from ..errors import InputError
from ..spriteworld.render import render_scene
from .metrics_identity import COPY_PASTE_THRESHOLD, copy_paste_score, placements, subject_fidelity
from .metrics_motion import motion_alignment
from .metrics_quality import dynamic_degree, flow_magnitude, motion_smoothness, realness
from .suite import PROMPT_KINDS, EvalCase
from .tracking import check_frames, single_thread_blas, track_scene

SUMMARY_METRICS = ("fidelity", "fidelity_min", "motion", "motion_acc", "copy_paste", "smoothness", "dynamic", "realness")


class GroundTruthGenerator:
    """Renders the true scene of a known prompt (the upper bound of every metric)."""

    name = "gt"

    def __init__(self, cases: list[EvalCase]):
        self._scenes = {p: c.scene for c in cases for p in c.prompts.values()}

    def generate(self, refs, prompt: str, seed: int, frames: int, height: int, width: int) -> np.ndarray:
        if prompt not in self._scenes:
            raise InputError("GroundTruthGenerator only knows the suite's prompts; this one is not among them")
        scene = copy.deepcopy(self._scenes[prompt])
        scene.size, scene.n_frames = (height, width), frames
        return render_scene(scene).frames


class RoundTripGenerator:
    """`inner`'s clip through `vae` (encode, decode, both streamed as at inference)."""

    name = "round-trip"

    def __init__(self, inner, vae):
        self.inner, self.vae = inner, vae

    def generate(self, refs, prompt: str, seed: int, frames: int, height: int, width: int) -> np.ndarray:
        return vae_round_trip(self.vae, self.inner.generate(refs, prompt, seed, frames, height, width))


def vae_round_trip(vae, frames: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, 3] -> the same clip decoded from its latents."""
    import torch

    dev = next(vae.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().permute(3, 0, 1, 2)[None].to(dev) / 127.5 - 1
    with torch.no_grad():
        y = vae.decode_raw(vae.encode_raw(x))
    return ((y[0].permute(1, 2, 3, 0).clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).cpu().numpy()


class CopyPasteGenerator:
    """Pastes the references, each fitted into its own column on white, into every frame."""

    name = "copy-paste"

    def generate(self, refs, prompt: str, seed: int, frames: int, height: int, width: int) -> np.ndarray:
        from PIL import Image

        canvas = np.full((height, width, 3), 255, dtype=np.uint8)
        n = max(1, len(refs))
        slot = width // n
        for k, ref in enumerate(refs):
            ref = np.asarray(ref, dtype=np.uint8)
            p = fit_inside(ref.shape[1], ref.shape[0], slot, height)
            img = np.asarray(Image.fromarray(ref).resize((p.width, p.height), Image.BILINEAR))
            canvas[p.top : p.top + p.height, k * slot + p.left : k * slot + p.left + p.width] = img
        return np.repeat(canvas[None], frames, axis=0)


_REFERENCE_FLOW: dict[str, float] = {}


def reference_flow(case: EvalCase) -> float:
    """Flow magnitude of the true render of the case (what dynamic degree compares against)."""
    key = case.scene.to_json()
    if key not in _REFERENCE_FLOW:
        _REFERENCE_FLOW[key] = flow_magnitude(render_scene(case.scene).frames)
    return _REFERENCE_FLOW[key]


REF_KINDS = ("cross", "inpair")


def case_references(case: EvalCase, ref_kind: str = "cross") -> tuple[list, list, list]:
    """(images, masks, source boxes or None) of the references a generator gets for this case."""
    if ref_kind == "cross":
        return case.refs, case.ref_masks, [None] * case.n_subjects
    if ref_kind == "inpair":
        return case.inpair_refs, case.inpair_masks, case.inpair_boxes
    raise InputError(f"unknown reference kind {ref_kind!r}; choose one of {', '.join(REF_KINDS)}")


def evaluate_clip(frames, case: EvalCase, ref_kind: str = "cross") -> dict:
    """Every metric of one video against its case: per subject and a summary (all 0..1, 1 = best).

    ref_kind: which references the video was generated from ("cross": on white, "inpair": crops
    of the true clip's last frame); copy-paste is measured against those.
    """
    frames = check_frames(frames)
    T, H, W, _ = frames.shape
    if (H, W) != tuple(case.scene.size) or T != case.scene.n_frames:
        raise InputError(f"the video is {T}x{H}x{W} but the case asks for {case.scene.n_frames}x{case.scene.size[0]}x{case.scene.size[1]}")
    with single_thread_blas():
        tracks = track_scene(frames, case.scene)
    fid = subject_fidelity(tracks)
    mot = motion_alignment(tracks, case.scene)
    K = case.n_subjects
    refs, masks, sources = case_references(case, ref_kind)
    cps = []
    for k in range(K):
        boxes = placements(refs[k].shape[:2], (H, W), k, K, sources[k])
        cps.append(copy_paste_score(frames[0], refs[k], masks[k], boxes))
    smooth = motion_smoothness(frames)
    dyn = dynamic_degree(frames, reference_flow(case))
    real = realness(frames)
    subjects = []
    for k, spec in enumerate(case.scene.subjects):
        f = dict(fid[k])
        f.pop("per_frame")
        subjects.append({"identity": spec.identity.key, "fidelity": f, "fidelity_per_frame": fid[k]["per_frame"],
                         "motion": mot[k], "copy_paste": cps[k]})
    summary = {
        "fidelity": float(np.mean([f["mean"] for f in fid])),
        "fidelity_min": float(np.min([f["min"] for f in fid])),
        "motion": float(np.mean([m["score"] for m in mot])),
        "motion_acc": float(np.mean([m["correct"] for m in mot])),
        "copy_paste": float(np.mean([c["score"] for c in cps])),
        "smoothness": smooth["score"],
        "dynamic": dyn["score"],
        "realness": real["score"],
    }
    return {"summary": summary, "subjects": subjects, "smoothness": smooth, "dynamic": dyn, "realness": real}


def _mean_summary(rows: list[dict]) -> dict:
    if not rows:
        return {}
    out = {m: float(np.mean([r["metrics"]["summary"][m] for r in rows])) for m in SUMMARY_METRICS}
    cps = [s["copy_paste"]["score"] for r in rows for s in r["metrics"]["subjects"]]
    out["copy_paste_rate"] = float(np.mean([c > COPY_PASTE_THRESHOLD for c in cps]))
    out["n"] = len(rows)
    return out


def aggregate(rows: list[dict]) -> dict:
    """Means of the summary metrics overall and per split (identities, prompt kind, subject count)."""
    groups: dict[str, dict] = {"all": _mean_summary(rows)}
    groups["identities"] = {s: _mean_summary([r for r in rows if r["identity_split"] == s]) for s in ("seen", "heldout")}
    groups["prompt"] = {p: _mean_summary([r for r in rows if r["prompt_kind"] == p]) for p in PROMPT_KINDS}
    groups["subjects"] = {str(n): _mean_summary([r for r in rows if r["n_subjects"] == n]) for n in (1, 2, 3)}
    return groups


def run_eval(generator, cases: list[EvalCase], *, model_name: str = "model", progress: bool | Callable = True,
             ref_kind: str = "cross", prompt_kinds: Sequence[str] = PROMPT_KINDS) -> dict:
    """Generate and score every (case, prompt kind); returns the JSON-ready results.

    ref_kind "cross" gives the generator the on-white references (the default, what users give);
    "inpair" gives it crops of the true clip, the setting in which copy-paste shows up; "none"
    gives it none (a text-to-video baseline), scored against the on-white references.
    """
    if ref_kind != "none":
        case_references(cases[0], ref_kind) if cases else None  # a wrong ref_kind fails before any generation
    unknown = sorted(set(prompt_kinds) - set(PROMPT_KINDS))
    if unknown or not prompt_kinds:
        raise InputError(f"prompt kinds {unknown or '(none)'} are not in the suite; choose from {', '.join(PROMPT_KINDS)}")
    scored_as = "cross" if ref_kind == "none" else ref_kind
    rows = []
    cache: dict[str, dict] = {}  # identical videos (a baseline ignores the prompt) are scored once
    jobs = [(c, kind) for c in cases for kind in prompt_kinds]
    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=f"eval {model_name}", unit="video")
    t0 = time.perf_counter()
    for i, (case, kind) in enumerate(jobs):
        H, W = case.scene.size
        g0 = time.perf_counter()
        refs = [] if ref_kind == "none" else case_references(case, ref_kind)[0]
        frames = generator.generate([r.copy() for r in refs], case.prompts[kind], case.seed, case.scene.n_frames, H, W)
        gen_s = time.perf_counter() - g0
        frames = check_frames(frames)
        key = hashlib.sha256(frames.tobytes()).hexdigest() + case.id
        if key not in cache:
            cache[key] = evaluate_clip(frames, case, scored_as)
        rows.append({"case": case.id, "prompt_kind": kind, "prompt": case.prompts[kind], "identity_split": case.identity_split,
                     "n_subjects": case.n_subjects, "generate_s": round(gen_s, 3), "metrics": cache[key], "_frames": frames})
        if bar is not None:
            bar.update(1)
        elif callable(progress):
            progress(i + 1, len(jobs))
    if bar is not None:
        bar.close()
    return {
        "model": model_name,
        "references": ref_kind,
        "n_cases": len(cases),
        "n_videos": len(rows),
        "seconds": round(time.perf_counter() - t0, 2),
        "copy_paste_threshold": COPY_PASTE_THRESHOLD,
        "cases": [c.summary() for c in cases],
        "rows": rows,
        "aggregates": aggregate(rows),
    }
