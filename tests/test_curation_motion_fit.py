"""The caption check's pose track and path fit (motion_fit.py) on rendered SpriteWorld clips.

Each clip goes through the real H.264 round trip, so the chroma blend and the blur are those the
curation filters see. A true claim must fit; a claim of another kind of motion must not.
"""
from __future__ import annotations

import pytest

from libragen_core.curation.analysis import Clip
from libragen_core.curation.appearance import best_jitter
from libragen_core.curation.motion_fit import (
    path_contradiction,
    path_residual,
    pose_track,
    size_ratio,
    turning,
)
from libragen_core.io.video import read_video, write_video
from libragen_core.spriteworld.captions import scene_caption
from libragen_core.spriteworld.identity import SIZES, Identity
from libragen_core.spriteworld.render import render_scene
from libragen_core.spriteworld.scene import Background, Camera, Scene, SubjectSpec

LOOK = Identity("star", "blue", "orange", "striped", "dot", "medium")


def _clip(tmp_path, motion: str, params: dict, start=(0.5, 0.5), pan=None) -> tuple[Clip, Scene]:
    spec = SubjectSpec(LOOK, motion, params, start, SIZES[LOOK.size])
    scene = Scene(7, [spec], background=Background("plain", "sand"),
                  camera=Camera(pan, 0.15 if pan else 0.0))
    path = tmp_path / f"{motion}.mp4"
    write_video(path, render_scene(scene).frames, fps=scene.fps)
    return Clip(read_video(path)[0], scene_caption(scene)), scene


def _track(clip: Clip):
    dist, jitter, where = best_jitter(clip, LOOK)
    assert dist < 30
    return pose_track(clip, LOOK, jitter, where, (0.12 + 0.1 * SIZES[LOOK.size]) * clip.short, 40.0)


CASES = [
    ("move_right", {"distance": 0.35}, (0.3, 0.5), ("circle_cw", "stay", "move_left", "zigzag_left")),
    ("circle_ccw", {"radius": 0.17, "phase": 30.0}, (0.6, 0.5), ("move_up", "bounce", "stay")),
    ("shrink", {"factor": 1.7}, (0.5, 0.5), ("move_down", "circle_cw")),
    ("spin_cw", {"turns": 1.0}, (0.5, 0.5), ("stay", "move_left", "zigzag_right")),
]


@pytest.mark.parametrize("motion,params,start,wrong", CASES)
def test_true_claim_fits_and_other_kinds_do_not(tmp_path, motion, params, start, wrong):
    clip, _ = _clip(tmp_path, motion, params, start)
    track = _track(clip)
    assert path_contradiction(track, motion, clip.short, None, LOOK) == ""
    for claim in wrong:
        assert path_contradiction(track, claim, clip.short, None, LOOK), claim


def test_pose_track_follows_size_and_angle(tmp_path):
    clip, _ = _clip(tmp_path, "shrink", {"factor": 1.7})
    assert size_ratio(_track(clip)) < 0.75
    clip, _ = _clip(tmp_path, "spin_ccw", {"turns": 1.0})
    signed, total = turning(_track(clip))
    assert signed < -200 and total >= abs(signed)


def test_claimed_pan_is_part_of_the_fit(tmp_path):
    # a subject that stays while the camera pans right slides left on screen: "stay" fits it
    # closely only with the claimed pan, and a claimed circle does not fit it either way
    clip, _ = _clip(tmp_path, "stay", {}, pan="right")
    track = _track(clip)
    with_pan = path_residual("stay", track["pos"], clip.short, "right")[0]
    without = path_residual("stay", track["pos"], clip.short, None)[0]
    assert with_pan < 1.5 < 2.0 < without
    assert path_contradiction(track, "stay", clip.short, "right", LOOK) == ""
    assert path_contradiction(track, "circle_cw", clip.short, "right", LOOK)
