"""The fixed SpriteWorld evaluation suite: scenes, prompt variants and references, from fixed seeds.

Each case is one Scene (what the video should show: identities, motions, interaction, camera,
light) with
  prompts     {"caption": the training-style caption,
               "user_seen": a user phrasing from a template used in training,
               "user_heldout": a user phrasing from a held-out template (never trained on),
               "anonymous": the caption with the subjects' looks taken out (the rewriter's form for
                            unlabelled references): only the references say what they look like}
  refs        one cross-pair reference per subject: its identity rendered on white by
              render_identity at another angle, scale and light (the model must not copy it)
  ref_masks   the subject pixels of each reference (for the copy-paste metric)
  inpair_*    one in-pair reference per subject: a crop of the clip's LAST frame around it, with
              its box (frame 0 of a faithful video then shows the subject elsewhere unless it stays)
The splits: identities seen in training vs held out (the identity module's hash rule), and 1, 2
or 3 subjects. Occluders are left out: they hide subjects from every metric alike.
  small: one case per (identity split x subject count) = 6 cases, 18 prompts
  full:  four per combination = 24 cases, 72 prompts
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..spriteworld.captions import anonymous_caption, scene_caption, user_prompts
from ..spriteworld.render import render_identity, render_scene
from ..spriteworld.scene import Scene, sample_scene

SUITE_SEED = 20260521
SUITES = {"small": 1, "full": 4}
PROMPT_KINDS = ("caption", "user_seen", "user_heldout", "anonymous")


def parse_prompt_kinds(text: str) -> tuple[str, ...]:
    """'all' or comma-separated kinds (as the command lines take them) -> kinds; run_eval checks the names."""
    return PROMPT_KINDS if text == "all" else tuple(k.strip() for k in text.split(",") if k.strip())


@dataclass
class EvalCase:
    id: str
    scene: Scene
    identity_split: str  # "seen" | "heldout"
    prompts: dict[str, str]
    refs: list[np.ndarray]
    ref_masks: list[np.ndarray]
    seed: int
    inpair_refs: list[np.ndarray] = field(default_factory=list)
    inpair_masks: list[np.ndarray] = field(default_factory=list)
    inpair_boxes: list[list[int]] = field(default_factory=list)

    @property
    def n_subjects(self) -> int:
        return len(self.scene.subjects)

    def summary(self) -> dict:
        return {
            "id": self.id,
            "identity_split": self.identity_split,
            "n_subjects": self.n_subjects,
            "seed": self.seed,
            "identities": [s.identity.key for s in self.scene.subjects],
            "motions": [s.motion for s in self.scene.subjects],
            "camera": self.scene.camera.pan,
            "prompts": dict(self.prompts),
            "scene": self.scene.to_dict(),
        }


def _inpair(scene: Scene) -> tuple[list, list, list]:
    """Square crops (margin 15%) around each subject in the last frame, with their masks and boxes."""
    r = render_scene(scene)
    t = scene.n_frames - 1
    h, w = scene.size
    refs, masks, boxes = [], [], []
    for k in range(len(scene.subjects)):
        x0, y0, x1, y1 = r.bboxes[k, t]
        side = int(np.ceil(max(x1 - x0, y1 - y0, 4) * 1.3))
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        bx = int(np.clip(round(cx - side / 2), 0, max(0, w - side)))
        by = int(np.clip(round(cy - side / 2), 0, max(0, h - side)))
        box = [bx, by, min(w, bx + side), min(h, by + side)]
        refs.append(np.ascontiguousarray(r.frames[t, box[1] : box[3], box[0] : box[2]]))
        masks.append(np.ascontiguousarray(r.masks[k, t, box[1] : box[3], box[0] : box[2]]))
        boxes.append(box)
    return refs, masks, boxes


def build_suite(name: str = "small", size: tuple[int, int] = (64, 64), n_frames: int = 17, seed: int = SUITE_SEED) -> list[EvalCase]:
    if name not in SUITES:
        raise InputError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}")
    per = SUITES[name]
    cases = []
    i = 0
    for split, label in (("train", "seen"), ("heldout", "heldout")):
        for n in (1, 2, 3):
            for j in range(per):
                rng = np.random.default_rng([seed, i])
                scene = sample_scene(rng, n, split, size=tuple(size), n_frames=n_frames, p_occluder=0.0)
                seen = user_prompts(scene, "train")
                held = user_prompts(scene, "heldout")
                caption = scene_caption(scene)
                prompts = {"caption": caption, "user_seen": seen[i % len(seen)], "user_heldout": held[i % len(held)],
                           "anonymous": anonymous_caption(caption)}
                refs, masks = [], []
                for spec in scene.subjects:
                    img, mask = render_identity(spec.identity, min(size), angle=float(rng.uniform(-60, 60)),
                                                scale=float(rng.uniform(0.55, 0.85)), light=float(rng.uniform(0.85, 1.1)))
                    refs.append(img)
                    masks.append(mask)
                ip_refs, ip_masks, ip_boxes = _inpair(scene)
                cases.append(EvalCase(f"{label}-{n}s-{j}", scene, label, prompts, refs, masks, int(rng.integers(2**31 - 1)),
                                      ip_refs, ip_masks, ip_boxes))
                i += 1
    return cases
