"""Automatic judges of DPO pairs on real data: checks that need no model weights, and a hook for
a scorer of the user's own. SpriteWorld pairs keep their exact ground-truth judge
(training/pairs.judge: tracker identity margin and motion gap against the scene).

A judge takes the decoded winner and loser (uint8 [T, H, W, 3]) and the pair's caption and
returns (keep, reason, metrics). A pair is kept when every judge keeps it; the metrics go into
the pair's record and onto the review page's cards.

- too_similar: mean |winner - loser| (0..1) below a floor: nothing to prefer, the pair teaches noise.
- frozen_loser: the loser's mean frame-to-frame change below a share of the winner's: a still
  loser teaches "move" rather than the pair's subject (identity / realness).
- broken_loser: the loser is flat (tiny spread of pixel values: black, grey or a wash-out).
- user scorer: `filter.scorer = "package.module:function"`, function(winner, loser, caption) ->
  float, importable from the training environment; a pair is kept when the score >= filter.min_score.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

from libragen_core.errors import ConfigError

Judge = Callable[[np.ndarray, np.ndarray, str], tuple[bool, str, dict]]


def _motion(frames: np.ndarray) -> float:
    if len(frames) < 2:
        return 0.0
    return float(np.abs(np.diff(frames.astype(np.float32), axis=0)).mean() / 255.0)


def too_similar(min_difference: float) -> Judge:
    def judge(winner, loser, caption):
        d = float(np.abs(winner.astype(np.float32) - loser.astype(np.float32)).mean() / 255.0)
        if d < min_difference:
            return False, f"winner and loser differ by {d:.4f} < {min_difference} (too similar)", {"pair_difference": d}
        return True, "", {"pair_difference": d}
    return judge


def frozen_loser(min_motion_ratio: float) -> Judge:
    def judge(winner, loser, caption):
        mw, ml = _motion(winner), _motion(loser)
        ratio = ml / mw if mw > 0 else 1.0
        m = {"motion_winner": mw, "motion_loser": ml}
        if ratio < min_motion_ratio:
            return False, f"the loser moves {ratio:.2f} x the winner < {min_motion_ratio} (frozen)", m
        return True, "", m
    return judge


def broken_loser(min_spread: float = 2.0 / 255.0) -> Judge:
    def judge(winner, loser, caption):
        spread = float(loser.astype(np.float32).std() / 255.0)
        if spread < min_spread:
            return False, f"the loser's pixels spread {spread:.4f} < {min_spread:.4f} (flat: broken)", {"loser_spread": spread}
        return True, "", {"loser_spread": spread}
    return judge


def user_scorer(spec: str, min_score: float) -> Judge:
    """`package.module:function` -> a judge keeping pairs that score >= min_score."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ConfigError(f"filter.scorer = {spec!r}: write it as 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"filter.scorer = {spec!r} cannot be imported ({e}); put the module on PYTHONPATH") from None

    def judge(winner, loser, caption):
        score = float(fn(winner, loser, caption))
        if not np.isfinite(score) or score < min_score:
            return False, f"scorer {spec} gave {score:.4g} < {min_score}", {"score": score}
        return True, "", {"score": score}
    return judge


def real_data_judges(f) -> list[Judge]:
    """The judges a PairFilterConfig switches on (a threshold < 0 switches its judge off)."""
    judges: list[Judge] = []
    if f.reject_flat_loser:  # first: a flat loser is also "frozen", and broken is the truer reason
        judges.append(broken_loser())
    if f.min_pair_difference >= 0:
        judges.append(too_similar(f.min_pair_difference))
    if f.min_loser_motion >= 0:
        judges.append(frozen_loser(f.min_loser_motion))
    if f.scorer:
        judges.append(user_scorer(f.scorer, f.min_score))
    return judges


def run_judges(judges: list[Judge], winner: np.ndarray, loser: np.ndarray, caption: str) -> tuple[bool, str, dict]:
    """Every judge runs (all metrics recorded); the first rejection's reason is kept."""
    keep, reason, metrics = True, "", {}
    for j in judges:
        k, r, m = j(winner, loser, caption)
        metrics.update(m)
        if not k and keep:
            keep, reason = False, r
    return keep, reason, metrics
