"""SpriteWorld metrics: real clips score near the top; wrong subject / motion, frozen, pasted score low."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

pytest.importorskip("cv2")

from libragen_core.eval.harness import CopyPasteGenerator
from libragen_core.eval.metrics_identity import copy_paste_score, placements, subject_fidelity
from libragen_core.eval.metrics_motion import motion_alignment
from libragen_core.eval.metrics_quality import dynamic_degree, flow_magnitude, motion_smoothness, realness
from libragen_core.eval.tracking import track_scene
from libragen_core.spriteworld.identity import Identity
from libragen_core.spriteworld.render import render_identity, render_scene
from libragen_core.spriteworld.scene import Background, Scene, SubjectSpec

STAR = Identity("star", "blue", "orange", "striped", "dot", "large")


def _scene(identity=STAR, motion="move_right", params=None, start=(0.3, 0.5), bg="mint green", kind="plain", seed=3):
    params = {"distance": 0.38} if params is None and motion == "move_right" else (params or {})
    # 9 frames keep the tests fast; every metric works on any 4k+1 length
    return Scene(seed, [SubjectSpec(identity, motion, params, start, 0.42)], n_frames=9, background=Background(kind, bg))


def _fidelity(frames, scene):
    return subject_fidelity(track_scene(frames, scene))[0]["mean"]


@pytest.fixture(scope="module")
def real():
    scene = _scene()
    return scene, render_scene(scene).frames


def test_tracker_follows_the_true_subject(real):
    scene, frames = real
    gt = render_scene(scene)
    tr = track_scene(frames, scene)[0]
    assert np.abs(tr.centers - gt.centers[0]).max() < 1.5
    assert np.abs(np.log(tr.scales / gt.scales[0])).max() < 0.12


@pytest.mark.parametrize("change", [{"color": "green"}, {"shape": "heart"}, {"pattern": "plain"}])
def test_fidelity_separates_the_right_identity_from_a_wrong_one(real, change):
    scene, frames = real
    right = _fidelity(frames, scene)
    wrong_scene = copy.deepcopy(scene)
    wrong_scene.subjects[0].identity = dataclasses.replace(STAR, **change)
    wrong = _fidelity(render_scene(wrong_scene).frames, scene)  # the video shows another subject
    assert right > 0.9
    assert wrong < right - 0.25, (change, right, wrong)


def test_motion_alignment_scores_the_true_motion_and_rejects_others(real):
    scene, frames = real
    res = motion_alignment(track_scene(frames, scene), scene)[0]
    assert res["score"] > 0.85 and res["correct"] and res["predicted"] == "move_right"
    for motion, params in (("stay", {}), ("spin_cw", {"turns": 1.0}), ("grow", {"factor": 1.6})):
        other = _scene(motion=motion, params=params, start=(0.5, 0.5))
        frames_other = render_scene(other).frames  # same identity, another motion
        res = motion_alignment(track_scene(frames_other, scene), scene)[0]
        assert res["score"] < 0.2 and not res["correct"], (motion, res)


def test_motion_alignment_compensates_a_camera_pan():
    scene = _scene(motion="stay", start=(0.5, 0.5), kind="checkered")
    scene.camera.pan, scene.camera.distance = "left", 0.2
    frames = render_scene(scene).frames  # the subject drifts right on screen; in the world it stays
    res = motion_alignment(track_scene(frames, scene), scene)[0]
    assert res["predicted"] == "stay" and res["score"] > 0.85


def test_copy_paste_is_high_for_a_paste_and_low_for_a_real_clip(real):
    scene, frames = real
    ref, mask = render_identity(STAR, 64, angle=35.0, scale=0.7)
    boxes = placements(ref.shape[:2], (64, 64))
    assert copy_paste_score(frames[0], ref, mask, boxes)["score"] < 0.3
    pasted = CopyPasteGenerator().generate([ref], "x", 0, 9, 64, 64)
    assert copy_paste_score(pasted[0], ref, mask, boxes)["score"] > 0.9

    # in-pair: a crop of the last frame pasted static at its own box into every frame
    gt = render_scene(scene)
    x0, y0, x1, y1 = (int(v) for v in gt.bboxes[0, -1])
    crop, cmask = frames[-1, y0:y1, x0:x1], gt.masks[0, -1, y0:y1, x0:x1]
    paste = np.repeat(frames[:1].copy(), len(frames), axis=0)
    paste[:, y0:y1, x0:x1] = crop
    boxes = placements(crop.shape[:2], (64, 64), source_box=(x0, y0, x1, y1))
    assert copy_paste_score(paste[0], crop, cmask, boxes)["score"] > 0.9
    assert copy_paste_score(frames[0], crop, cmask, boxes)["score"] < 0.3  # the real subject started elsewhere


def test_dynamic_degree_smoothness_realness():
    scene = _scene()
    scene.n_frames = 17  # no tracking here, so the suite's clip length costs little
    frames = render_scene(scene).frames
    f_true = flow_magnitude(frames)
    assert dynamic_degree(frames, f_true)["score"] > 0.95
    frozen = np.repeat(frames[:1], len(frames), axis=0)
    assert dynamic_degree(frozen, f_true)["score"] < 0.2
    assert motion_smoothness(frames)["score"] > 0.9
    shuffled = frames[np.random.default_rng(0).permutation(len(frames))]
    assert motion_smoothness(shuffled)["score"] < 0.5
    assert realness(frames)["score"] > 0.9
    noisy = np.clip(frames + np.random.default_rng(1).normal(0, 30, frames.shape), 0, 255).astype(np.uint8)
    assert realness(noisy)["score"] < 0.6


def test_multi_subject_metrics_are_per_subject():
    heart = Identity("heart", "red", "yellow", "plain", "eyes", "medium")
    scene = Scene(5, [SubjectSpec(STAR, "move_right", {"distance": 0.3}, (0.25, 0.3), 0.36),
                      SubjectSpec(heart, "spin_cw", {"turns": 1.0}, (0.6, 0.72), 0.36)],
                  n_frames=9, background=Background("plain", "sky blue"))
    wrong = copy.deepcopy(scene)
    wrong.subjects[1].identity = dataclasses.replace(heart, color="teal")  # only the second subject is wrong
    tracks = track_scene(render_scene(wrong).frames, scene)
    fid = subject_fidelity(tracks)
    assert fid[0]["mean"] > 0.9 and fid[1]["mean"] < 0.5
    mot = motion_alignment(track_scene(render_scene(scene).frames, scene), scene)
    assert [m["predicted"] for m in mot] == ["move_right", "spin_cw"] and min(m["score"] for m in mot) > 0.8
