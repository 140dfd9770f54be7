"""CFG Schedule: a preset, or a custom (s_img, s_txt) schedule, as a LIBRAGEN_CFG value.

The value is a CFGSchedule (libragen_core.sampling.guidance); in a saved workflow it exists only
as this node's widget values, so it travels with the workflow JSON and rebuilds identically.
"""
from __future__ import annotations

from libragen_core.sampling.guidance import PRESETS, CFGSchedule, Constant, CosineRamp, LinearRamp, Switch

from .types import CFG
from .validation import check_ranges, first_error

CUSTOM = "custom"
SHAPES = ("constant", "linear", "cosine", "switch")
AXES = ("sigma", "progress")


def build_schedule(shape: str, start: float, end: float, switch_at: float, over: str):
    if shape == "constant":
        return Constant(start)
    if shape == "linear":
        return LinearRamp(start=start, end=end, over=over)
    if shape == "cosine":
        return CosineRamp(start=start, end=end, over=over)
    # sigma falls from 1 to 0 while progress rises: "switch_at" is where the late value takes over
    return Switch(before=start, after=end, at=switch_at, over=over)


class LibraGenCFGSchedule:
    DESCRIPTION = ("Builds a time-dependent guidance schedule: image (subject) weight s_img and text weight s_txt "
                   "over the sampling run. v = v_null + s_img (v_ref - v_null) + s_txt (v_full - v_ref).")
    CATEGORY = "LibraGen/sampling"
    RETURN_TYPES = (CFG, "STRING")
    RETURN_NAMES = ("cfg", "json")
    OUTPUT_TOOLTIPS = ("The schedule, for the sampler's cfg input (it overrides the sampler's preset).",
                       "The schedule as JSON (the same text `libragen generate --cfg` reads).")
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        weight = {"min": -20.0, "max": 50.0, "step": 0.1, "round": 0.01}
        return {"required": {
            "preset": ([CUSTOM, *PRESETS], {
                "default": "libragen",
                "tooltip": "A published schedule (phantom, stiv-jit, stiv-sit, humo, customcrafter), our default "
                           "(libragen), none (no guidance), or custom to use the values below."}),
            "s_img_start": ("FLOAT", {"default": 2.0, **weight,
                                      "tooltip": "custom: subject (image) guidance at the first, noisiest step."}),
            "s_img_end": ("FLOAT", {"default": 5.0, **weight,
                                    "tooltip": "custom: subject guidance at the end (ignored by constant)."}),
            "s_txt_start": ("FLOAT", {"default": 9.0, **weight,
                                      "tooltip": "custom: text guidance at the first step."}),
            "s_txt_end": ("FLOAT", {"default": 6.0, **weight,
                                    "tooltip": "custom: text guidance at the end (ignored by constant)."}),
            "shape": (list(SHAPES), {
                "default": "cosine",
                "tooltip": "custom: constant (start values throughout), linear or cosine ramp from start to end, "
                           "or switch from start to end at switch_at."}),
            "switch_at": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 1.0, "step": 0.01,
                                    "tooltip": "custom + switch: where the end values take over, on the axis below "
                                               "(sigma: while sigma > switch_at the start values hold; progress: "
                                               "the fraction of steps done)."}),
            "axis": (list(AXES), {
                "default": "sigma",
                "tooltip": "custom: what the ramp or switch follows: the noise level sigma (1 -> 0) or the "
                           "fraction of steps done (0 -> 1)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, preset=None, shape=None, switch_at=None, axis=None):
        problems = [check_ranges(cls, preset=preset, shape=shape, switch_at=switch_at, axis=axis)]
        if preset == CUSTOM and shape == "switch" and axis == "progress" and switch_at in (0.0, 1.0):
            problems.append(f"switch_at {switch_at} on the progress axis never switches (or switches at once); "
                            "use a value strictly between 0 and 1, or the constant shape.")
        return first_error(problems)

    def build(self, preset, s_img_start, s_img_end, s_txt_start, s_txt_end, shape, switch_at, axis):
        if preset != CUSTOM:
            schedule = PRESETS[preset]
        else:
            schedule = CFGSchedule(build_schedule(shape, s_img_start, s_img_end, switch_at, axis),
                                   build_schedule(shape, s_txt_start, s_txt_end, switch_at, axis))
        return (schedule, schedule.to_json())
