"""The real-data pair judges (training/pair_judges.py) on decoded-video-shaped frames, and the
user scorer hook (this module's `contrast_gain` stands in for a user's scorer)."""
from __future__ import annotations

import numpy as np
import pytest

from libragen_core.errors import ConfigError
from tests.real_data import clip_frames
from training.common.schema import PairFilterConfig
from training.pair_judges import real_data_judges, run_judges, user_scorer


def contrast_gain(winner: np.ndarray, loser: np.ndarray, caption: str) -> float:
    return float(winner.std() - loser.std())


def _moving():
    return clip_frames(48, 64, 9, (220, 40, 40), seed=0)


def test_a_good_pair_is_kept_with_its_metrics():
    winner = _moving()
    loser = clip_frames(48, 64, 9, (40, 60, 220), seed=1)  # same motion, another subject colour
    keep, reason, m = run_judges(real_data_judges(PairFilterConfig()), winner, loser, "")
    assert keep and reason == ""
    assert m["pair_difference"] > 0.005 and m["motion_loser"] > 0 and m["loser_spread"] > 0.01


@pytest.mark.parametrize("loser, why", [
    ("same", "too similar"),
    ("frozen", "frozen"),
    ("flat", "broken"),
])
def test_bad_losers_are_rejected_with_the_reason(loser, why):
    winner = _moving()
    bad = {"same": winner.copy(),
           "frozen": np.repeat(clip_frames(48, 64, 1, (40, 60, 220), seed=1), 9, axis=0),
           "flat": np.full_like(winner, 128)}[loser]
    keep, reason, _ = run_judges(real_data_judges(PairFilterConfig()), winner, bad, "")
    assert not keep and why in reason


def test_a_judge_switched_off_does_not_reject():
    winner = _moving()
    cfg = PairFilterConfig(min_pair_difference=-1, min_loser_motion=-1, reject_flat_loser=False)
    assert real_data_judges(cfg) == []
    assert run_judges(real_data_judges(cfg), winner, winner.copy(), "")[0]


def test_user_scorer_hook():
    winner = _moving()
    flat = np.full_like(winner, 128)
    judge = user_scorer("tests.test_training_pair_judges:contrast_gain", min_score=1.0)
    assert judge(winner, flat, "")[0] and not judge(flat, winner, "")[0]
    cfg = PairFilterConfig(min_pair_difference=-1, min_loser_motion=-1, reject_flat_loser=False,
                           scorer="tests.test_training_pair_judges:contrast_gain", min_score=1.0)
    keep, reason, m = run_judges(real_data_judges(cfg), flat, winner, "")
    assert not keep and "contrast_gain" in reason and m["score"] < 0
    with pytest.raises(ConfigError, match="package.module:function"):
        user_scorer("no_colon", 0.0)
    with pytest.raises(ConfigError, match="cannot be imported"):
        user_scorer("tests.nowhere_module:f", 0.0)
