"""Shot cuts: PySceneDetect's content score (HSV + edge change) between consecutive frames.

A cut is one frame pair that changes far more than every other pair; steady fast motion or a
camera pan change every pair alike, so the score is the largest content change over the second
largest, and the change must also be large in absolute terms.
"""
from __future__ import annotations

import cv2
import numpy as np

from .analysis import Clip
from .filters import FilterResult


def content_scores(clip: Clip) -> np.ndarray:
    """[T-1] PySceneDetect ContentDetector frame scores (content_val) between consecutive frames."""
    from scenedetect.common import FrameTimecode
    from scenedetect.detectors import ContentDetector
    from scenedetect.stats_manager import StatsManager

    detector = ContentDetector(min_scene_len=1)
    detector.stats_manager = StatsManager()
    fps = 16.0
    timecodes = []
    for t, frame in enumerate(clip.frames):
        tc = FrameTimecode(t, fps=fps)
        timecodes.append(tc)
        detector.process_frame(tc, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    key = ContentDetector.FRAME_SCORE_KEY
    return np.array([detector.stats_manager.get_metrics(tc, [key])[0] or 0.0 for tc in timecodes[1:]], np.float64)


def check_shot_cut(clip: Clip, th: dict) -> FilterResult:
    scores = content_scores(clip)
    if len(scores) < 2:
        return FilterResult("shot_cut", True, 0.0, th["shot_cut"], "too few frames to see a cut")
    order = np.sort(scores)
    top, second = float(order[-1]), float(order[-2])
    ratio = top / max(second, 1.0)
    at = int(np.argmax(scores)) + 1
    cut = ratio >= th["shot_cut"] and top >= th["shot_cut_floor"]
    reason = (f"shot cut at frame {at}: content change {top:.1f} is {ratio:.1f}x the next largest"
              if cut else "")
    return FilterResult("shot_cut", not cut, ratio if top >= th["shot_cut_floor"] else 0.0, th["shot_cut"], reason)
