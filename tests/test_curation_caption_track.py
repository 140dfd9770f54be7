"""The caption check's track helpers: cut a track where it switches to something else."""
from __future__ import annotations

import numpy as np

from libragen_core.curation.caption_check import _cut_at_jump, _late_looks


def _line(T=17, step=(-1.0, -1.0), start=(44.0, 35.0)):
    return np.asarray(start) + np.arange(T)[:, None] * np.asarray(step)


def test_steady_track_is_kept_whole():
    tr = _line()
    tr[5] = np.nan  # a frame hidden by an occluder is no jump
    out = _cut_at_jump(tr, 4.5)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(tr))


def test_track_is_cut_at_a_switch_to_another_subject():
    tr = _line()
    tr[9:] = tr[9:] + np.array([11.0, 3.0])  # the matcher latched onto a look-alike 11 px away
    out = _cut_at_jump(tr, 4.5)
    assert not np.isnan(out[:9]).any()
    assert np.isnan(out[9:]).all()


def test_late_looks_follow_the_claimed_change():
    assert min(_late_looks("shrink")["jitters"]) < 0.7
    assert max(_late_looks("grow")["jitters"]) > 1.4
    assert len(_late_looks("spin_cw")["angles"]) >= 12
    assert _late_looks("move_left") == {} and _late_looks(None) == {}
