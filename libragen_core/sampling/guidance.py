"""Time-dependent classifier-free guidance over three conditions (docs/method.md section 5).

    v = v_null + s_img * (v_ref - v_null) + s_txt * (v_full - v_ref)
      = c_null * v_null + c_ref * v_ref + c_full * v_full,
    c_null = 1 - s_img,  c_ref = s_img - s_txt,  c_full = s_txt

full = (refs, text), ref-only = (refs, negative text), null = (zeroed refs, negative text).
s_img and s_txt are schedules: small frozen values, functions of (progress, sigma), that
serialize to JSON with a "type" field so they can travel inside workflow files. A pass whose
coefficient is 0 is never run (see `GuidanceWeights.passes`).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

_ZERO = 1e-12
_AXES = ("progress", "sigma")


# ---------------------------------------------------------------- validation helpers

def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number (got {value!r}).")
    return float(value)


def _unit(value: Any, where: str) -> float:
    value = _number(value, where)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where} must lie in [0, 1] (got {value!r}).")
    return value


def _axis(value: Any, where: str) -> str:
    if value not in _AXES:
        raise ConfigError(f"{where} must be 'progress' or 'sigma' (got {value!r}).")
    return value


def _position(over: str, progress: float, sigma: float) -> float:
    # Both axes run from 0 at the first (noisiest) step towards 1 at the end, so a ramp's
    # `start` is always the early value whichever axis it follows.
    return progress if over == "progress" else 1.0 - sigma


# ---------------------------------------------------------------- schedules

@dataclass(frozen=True)
class Constant:
    """The same weight at every step."""

    value: float
    type = "constant"

    def __post_init__(self):
        object.__setattr__(self, "value", _number(self.value, "value"))

    def __call__(self, progress: float, sigma: float) -> float:
        return self.value

    def to_dict(self) -> dict:
        return {"type": self.type, "value": self.value}


@dataclass(frozen=True)
class LinearRamp:
    """`start` until position `begin`, then linear to `end` at position `finish`, `end` after.

    The position is the progress (step / steps) when over="progress", or 1 - sigma when
    over="sigma"; both start at 0 on the noisiest step.
    """

    start: float
    end: float
    begin: float = 0.0
    finish: float = 1.0
    over: str = "progress"
    type = "linear_ramp"

    def __post_init__(self):
        _check_ramp(self)

    def _shape(self, u: float) -> float:
        return u

    def __call__(self, progress: float, sigma: float) -> float:
        x = _position(self.over, progress, sigma)
        if x <= self.begin:
            return self.start
        if x >= self.finish:
            return self.end
        u = (x - self.begin) / (self.finish - self.begin)
        return self.start + (self.end - self.start) * self._shape(u)

    def to_dict(self) -> dict:
        return {"type": self.type, "start": self.start, "end": self.end, "begin": self.begin,
                "finish": self.finish, "over": self.over}


@dataclass(frozen=True)
class CosineRamp(LinearRamp):
    """Like LinearRamp with a half-cosine ease: flat at both ends, steepest in the middle."""

    type = "cosine_ramp"

    def _shape(self, u: float) -> float:
        return 0.5 - 0.5 * math.cos(math.pi * u)


def _check_ramp(ramp: LinearRamp) -> None:
    object.__setattr__(ramp, "start", _number(ramp.start, "start"))
    object.__setattr__(ramp, "end", _number(ramp.end, "end"))
    object.__setattr__(ramp, "begin", _unit(ramp.begin, "begin"))
    object.__setattr__(ramp, "finish", _unit(ramp.finish, "finish"))
    _axis(ramp.over, "over")
    if ramp.finish <= ramp.begin:
        raise ConfigError(f"finish ({ramp.finish}) must be greater than begin ({ramp.begin}).")


@dataclass(frozen=True)
class Switch:
    """`before` early, `after` late; the switch happens at `at` on the chosen axis.

    over="sigma":    before while sigma > at (HuMo switches at sigma 0.98, i.e. t = 980);
    over="progress": before while progress < at (CustomCrafter: the first 10% of the steps).
    `before` and `after` are numbers or schedules.
    """

    before: Schedule
    after: Schedule
    at: float
    over: str = "progress"
    type = "switch"

    def __post_init__(self):
        object.__setattr__(self, "before", _as_schedule(self.before, "before"))
        object.__setattr__(self, "after", _as_schedule(self.after, "after"))
        object.__setattr__(self, "at", _unit(self.at, "at"))
        _axis(self.over, "over")

    def __call__(self, progress: float, sigma: float) -> float:
        early = sigma > self.at if self.over == "sigma" else progress < self.at
        return (self.before if early else self.after)(progress, sigma)

    def to_dict(self) -> dict:
        return {"type": self.type, "before": self.before.to_dict(), "after": self.after.to_dict(),
                "at": self.at, "over": self.over}


@dataclass(frozen=True)
class PerStep:
    """One weight per step, picked by progress: value k covers progress [k/n, (k+1)/n).

    With n == steps (progress = i / steps) value i is used on step i exactly; another n
    stretches the list piecewise-constant over the run.
    """

    values: tuple
    type = "per_step"

    def __post_init__(self):
        if isinstance(self.values, (str, bytes)) or not hasattr(self.values, "__iter__"):
            raise ConfigError(f"values must be a list of numbers (got {self.values!r}).")
        values = tuple(_number(v, f"values[{i}]") for i, v in enumerate(self.values))
        if not values:
            raise ConfigError("values must hold at least one number (got an empty list).")
        object.__setattr__(self, "values", values)

    def __call__(self, progress: float, sigma: float) -> float:
        n = len(self.values)
        k = min(n - 1, max(0, math.floor(progress * n + 1e-9)))
        return self.values[k]

    def to_dict(self) -> dict:
        return {"type": self.type, "values": list(self.values)}


Schedule = Constant | LinearRamp | CosineRamp | Switch | PerStep
SCHEDULE_TYPES: dict[str, type] = {
    cls.type: cls for cls in (Constant, LinearRamp, CosineRamp, Switch, PerStep)
}
_FIELDS = {
    "constant": {"value"},
    "linear_ramp": {"start", "end", "begin", "finish", "over"},
    "cosine_ramp": {"start", "end", "begin", "finish", "over"},
    "switch": {"before", "after", "at", "over"},
    "per_step": {"values"},
}
_REQUIRED = {
    "constant": {"value"},
    "linear_ramp": {"start", "end"},
    "cosine_ramp": {"start", "end"},
    "switch": {"before", "after", "at"},
    "per_step": {"values"},
}


def _as_schedule(value: Any, where: str) -> Schedule:
    if isinstance(value, tuple(SCHEDULE_TYPES.values())):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Constant(_number(value, where))
    if isinstance(value, Mapping):
        return schedule_from_dict(value, where)
    raise ConfigError(f"{where} must be a number or a schedule object with a 'type' field (got {value!r}).")


def schedule_from_dict(data: Any, where: str = "schedule") -> Schedule:
    """Build a schedule from its dict; a bare number means Constant. Errors name the field."""
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return Constant(_number(data, where))
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a number or an object with a 'type' field (got {data!r}).")
    kind = data.get("type")
    if kind not in SCHEDULE_TYPES:
        raise ConfigError(
            f"{where}.type {kind!r} is not a known schedule type; use one of {sorted(SCHEDULE_TYPES)}."
        )
    unknown = set(data) - _FIELDS[kind] - {"type"}
    if unknown:
        raise ConfigError(f"{where} ({kind}) has unknown field(s) {sorted(unknown)}; allowed: {sorted(_FIELDS[kind])}.")
    missing = _REQUIRED[kind] - set(data)
    if missing:
        raise ConfigError(f"{where} ({kind}) is missing field(s) {sorted(missing)}.")
    kwargs = {k: v for k, v in data.items() if k != "type"}
    if kind == "switch":
        kwargs["before"] = _as_schedule(kwargs["before"], f"{where}.before")
        kwargs["after"] = _as_schedule(kwargs["after"], f"{where}.after")
    try:
        return SCHEDULE_TYPES[kind](**kwargs)
    except ConfigError as err:
        # The value objects name their own field; prefix where it sits in the document.
        raise ConfigError(f"{where}.{err}") from None


# ---------------------------------------------------------------- the three-condition CFG

PASSES = ("full", "ref", "null")


@dataclass(frozen=True)
class GuidanceWeights:
    """The mixing coefficients of one step (they sum to 1)."""

    c_null: float
    c_ref: float
    c_full: float

    def passes(self, has_refs: bool) -> dict[str, float]:
        """The model passes this step needs, with their coefficients, in batch order.

        Without references ref-only and null are the same condition (negative text, nothing
        to inject), so their coefficients merge into one "null" pass.
        """
        weights = {"full": self.c_full, "ref": self.c_ref, "null": self.c_null}
        if not has_refs:
            weights = {"full": self.c_full, "null": self.c_ref + self.c_null}
        return {name: c for name, c in weights.items() if abs(c) > _ZERO}


@dataclass(frozen=True)
class CFGSchedule:
    """Image (subject) and text guidance weights as functions of (progress, sigma)."""

    s_img: Schedule
    s_txt: Schedule

    def __post_init__(self):
        object.__setattr__(self, "s_img", _as_schedule(self.s_img, "s_img"))
        object.__setattr__(self, "s_txt", _as_schedule(self.s_txt, "s_txt"))

    def scales(self, progress: float, sigma: float) -> tuple[float, float]:
        return float(self.s_img(progress, sigma)), float(self.s_txt(progress, sigma))

    def weights(self, progress: float, sigma: float) -> GuidanceWeights:
        s_img, s_txt = self.scales(progress, sigma)
        return GuidanceWeights(c_null=1.0 - s_img, c_ref=s_img - s_txt, c_full=s_txt)

    def to_dict(self) -> dict:
        return {"type": "cfg_schedule", "s_img": self.s_img.to_dict(), "s_txt": self.s_txt.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> CFGSchedule:
        if not isinstance(data, Mapping):
            raise ConfigError(f"a CFG schedule must be a JSON object (got {type(data).__name__}).")
        if data.get("type", "cfg_schedule") != "cfg_schedule":
            raise ConfigError(f"type {data.get('type')!r} is not 'cfg_schedule'.")
        unknown = set(data) - {"type", "s_img", "s_txt"}
        if unknown:
            raise ConfigError(f"CFG schedule has unknown field(s) {sorted(unknown)}; allowed: s_img, s_txt.")
        for key in ("s_img", "s_txt"):
            if key not in data:
                raise ConfigError(f"CFG schedule is missing field {key!r} (a number or a schedule object).")
        return cls(schedule_from_dict(data["s_img"], "s_img"), schedule_from_dict(data["s_txt"], "s_txt"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CFGSchedule:
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"CFG schedule is not valid JSON: {err}.") from None
        return cls.from_dict(data)


@dataclass(frozen=True)
class PairForm:
    """A step's mix written as one two-condition CFG plus, with three passes, a text term:

        v = cfg(order[0], order[1], scale) + text_scale * (v_full - v_ref),
        cfg(a, b, s) = v_b + s * (v_a - v_b)

    Hosts whose guidance hooks only know a (cond, uncond, scale) pair, as ComfyUI's
    cfg_function does, run that pair through them. Three passes: the pair is (ref, null) at
    s_img and the text term is added after, the order of ComfyUI's DualCFGGuider ("regular"
    style, cfg1 = s_txt, cfg2 = s_img). Two passes: (higher, lower) at the higher pass's
    coefficient, the two coefficients summing to 1. One pass: (it, it) at 1.
    """

    order: tuple[str, ...]
    scale: float
    text_scale: float = 0.0


def pair_form(weights: GuidanceWeights, has_refs: bool, every_pass: bool = False) -> PairForm:
    """The passes a step runs, in the order `PairForm` mixes them.

    every_pass: run the passes with zero weight too (ComfyUI's disable_cfg1_optimization, which
    hooks set when they need the unconditional prediction at every step).
    """
    names = ("full", "ref", "null") if has_refs else ("full", "null")
    passes = dict.fromkeys(names, 0.0) if every_pass else {}
    passes.update(weights.passes(has_refs))
    if len(passes) == 3:
        return PairForm(("ref", "null", "full"), 1.0 - weights.c_null, weights.c_full)
    present = [n for n in names if n in passes]
    if len(present) == 2:
        return PairForm(tuple(present), passes[present[0]])
    return PairForm((present[0], present[0]), 1.0)


def combine(weights: GuidanceWeights, outputs: Mapping[str, Any], has_refs: bool):
    """Mix the velocities of the passes that ran (keys as returned by `weights.passes`)."""
    total = None
    for name, c in weights.passes(has_refs).items():
        term = outputs[name] * c
        total = term if total is None else total + term
    return total


# ---------------------------------------------------------------- presets

PRESETS: dict[str, CFGSchedule] = {
    # One pass: the conditional velocity as it is.
    "none": CFGSchedule(Constant(1.0), Constant(1.0)),
    # Phantom-Wan's published static weights (with shift 5.0).
    "phantom": CFGSchedule(Constant(5.0), Constant(7.5)),
    # STIV JIT-CFG: s_img == s_txt drops the ref-only pass, v = v_null + 7.5 (v_full - v_null).
    "stiv-jit": CFGSchedule(Constant(7.5), Constant(7.5)),
    # STIV SIT-CFG at its best published setting.
    "stiv-sit": CFGSchedule(Constant(1.5), Constant(7.5)),
    # HuMo's time-adaptive rule mapped onto our three conditions. For t > 980 (sigma > 0.98)
    # HuMo's negative keeps the image (our ref-only pass) and text guidance runs on top of
    # it: s_img = 1, s_txt = 7.5. After, the negative drops the image (our null pass) and one
    # joint weight 2.0 lower is used: s_img = s_txt = 5.5 (two passes).
    "humo": CFGSchedule(
        Switch(before=1.0, after=5.5, at=0.98, over="sigma"),
        Switch(before=7.5, after=5.5, at=0.98, over="sigma"),
    ),
    # CustomCrafter scales its subject module by 0.4 for the first 10% of the steps (motion
    # forms) and 0.8 after; we scale Phantom's image weight 5.0 by that factor.
    "customcrafter": CFGSchedule(
        Switch(before=0.4 * 5.0, after=0.8 * 5.0, at=0.1, over="progress"),
        Constant(7.5),
    ),
    # Our default: text guidance strong while sigma is high (layout and motion form), easing
    # off as it falls; subject guidance low early (so references do not freeze the layout
    # into a copy of the reference) and rising late, when identity details form.
    "libragen": CFGSchedule(
        CosineRamp(start=2.0, end=5.0, over="sigma"),
        CosineRamp(start=9.0, end=6.0, over="sigma"),
    ),
}


def get_preset(name: str) -> CFGSchedule:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown CFG preset {name!r}; choose one of {sorted(PRESETS)}.") from None
