"""Injected wrong captions must be wrong in the pixels: no spin claimed for a sprite that looks the
same at every angle (its spin would render exactly like staying put)."""
from __future__ import annotations

import numpy as np

from libragen_core.spriteworld.defects import _wrong_scene
from libragen_core.spriteworld.identity import SIZES, Identity
from libragen_core.spriteworld.scene import Scene, SubjectSpec


def _scene(identity: Identity) -> Scene:
    return Scene(3, [SubjectSpec(identity, "stay", {}, (0.5, 0.5), SIZES[identity.size])])


def test_no_spin_claimed_for_a_rotation_invisible_sprite():
    plain_circle = Identity("circle", "red", "white", "plain", "none", "medium")
    assert not plain_circle.rotation_visible
    claimed = set()
    for seed in range(300):
        wrong, mismatch, k = _wrong_scene(_scene(plain_circle), np.random.default_rng(seed))
        if mismatch == "motion":
            claimed.add(wrong.subjects[k].motion)
    assert claimed and not any(m.startswith("spin_") for m in claimed), claimed


def test_spin_still_claimed_where_turning_shows():
    star = Identity("star", "blue", "orange", "striped", "dot", "medium")
    claimed = set()
    for seed in range(300):
        wrong, mismatch, k = _wrong_scene(_scene(star), np.random.default_rng(seed))
        if mismatch == "motion":
            claimed.add(wrong.subjects[k].motion)
    assert {"spin_cw", "spin_ccw"} <= claimed
