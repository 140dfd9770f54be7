"""The automatic filters: one per reason a clip is unfit for training, run as a cascade.

Every filter looks only at the decoded frames and the caption (never at dataset labels or scene
descriptions) and returns a FilterResult: a score, the threshold it was compared with, pass/fail
and a human-readable reason. Thresholds were set on the clean and defective clips of calibration
seed 101 (see docs/curation.md) and can be overridden per run.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from .analysis import Clip


@dataclass
class FilterResult:
    name: str
    passed: bool
    score: float
    threshold: float
    reason: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["score"] = round(float(self.score), 4)
        d["threshold"] = round(float(self.threshold), 4)
        return d


# name -> default threshold; the direction of each comparison lives in the filter itself
THRESHOLDS: dict[str, float] = {
    "shot_cut": 2.2,  # largest frame change / second largest (HSV content score), with an absolute floor
    "shot_cut_floor": 18.0,  # the content score a cut must also reach
    "frozen": 6.0,  # still frame pairs at the end of a clip whose caption says something moves
    "motion_extreme": 11.0,  # median flow speed of moving pixels, px per frame at 64 px (clean max 7.3)
    "noise": 7.0,  # least median change between consecutive frames (levels)
    "blur": 0.16,  # high-frequency / mid-frequency energy
    "text_overlay": 50.0,  # static thin achromatic high-contrast pixels in the densest band
    "too_small": 0.155,  # biggest subject's diameter / short side (upper quartile over frames)
    "leaves_frame": 0.45,  # fraction of a subject lost at the frame edge (with the template track lost there)
    "caption": 1.0,  # claims of the caption that the frames contradict
    "caption_appearance": 40.0,  # 40th-percentile colour difference of the best match of a described subject
}


@dataclass(frozen=True)
class FilterSpec:
    name: str  # also the defect kind it is responsible for, where one exists
    family: str  # module that implements it
    run: Callable[[Clip, dict], FilterResult]


def filter_specs() -> list[FilterSpec]:
    """The cascade, cheapest and most decisive first; a clip is rejected by the first failure."""
    from . import caption_check, cuts, motion, quality, subject

    return [
        FilterSpec("shot_cut", "cuts", cuts.check_shot_cut),
        FilterSpec("frozen", "motion", motion.check_frozen),
        FilterSpec("noise", "quality", quality.check_noise),
        FilterSpec("blur", "quality", quality.check_blur),
        FilterSpec("motion_extreme", "motion", motion.check_motion_extreme),
        FilterSpec("text_overlay", "quality", quality.check_text_overlay),
        FilterSpec("too_small", "subject", subject.check_too_small),
        FilterSpec("leaves_frame", "subject", subject.check_leaves_frame),
        FilterSpec("caption", "caption_check", caption_check.check_caption),
    ]


# which defect kind (dataset label) each filter is meant to catch; motion_extreme has none in
# SpriteWorld's defect set, so it only counts towards false rejects
FILTER_KIND = {
    "shot_cut": "shot_cut",
    "frozen": "frozen",
    "noise": "noise",
    "blur": "blur",
    "text_overlay": "text_overlay",
    "too_small": "too_small",
    "leaves_frame": "leaves_frame",
    "caption": "wrong_caption",
}


def run_filters(clip: Clip, thresholds: dict | None = None, cascade: bool = True) -> list[FilterResult]:
    """Run the filters in order; with cascade=True stop after the first failure."""
    th = {**THRESHOLDS, **(thresholds or {})}
    results = []
    for spec in filter_specs():
        res = spec.run(clip, th)
        results.append(res)
        if cascade and not res.passed:
            break
    return results
