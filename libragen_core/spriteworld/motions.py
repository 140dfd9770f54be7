"""Motions: their names, canonical caption phrases, and exact trajectories.

Units: positions are pixels (x right, y down); lengths in motion params (distance, radius,
height, amplitude, gap) are in units of the frame's short side; scale is the sprite's diameter in
the same unit; angles are degrees, positive = clockwise on screen. Time t runs 0..1 over the clip.

Params a SubjectSpec leaves out take DEFAULT_PARAMS. Single-subject motions (each a class for
motion metrics):
  move_<dir>     straight line, constant speed; params: distance.  <dir> in DIRECTIONS.
  circle_cw/ccw  one full turn on a circle through the start; params: radius, phase (deg), turns.
  bounce         hops in place, start = ground; params: height, bounces.
  zigzag_<dir>   moves left/right with a triangle wave up and down; params: distance, amplitude, zigs.
  grow / shrink  scale multiplied / divided by params.factor (geometric in t).
  spin_cw/ccw    rotates by 360 * params.turns degrees.
  stay           nothing moves.
Interaction motions (only with Scene.interaction; the partner is another subject index):
  chase          follows params.target's straight move and closes in: ends params.end_gap behind it.
  swap           moves to params.partner's start along an arc (params.arc, same sign for both).
  meet           both move towards the midpoint and stop params.gap apart.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up_left": (-0.7071, -0.7071),
    "up_right": (0.7071, -0.7071),
    "down_left": (-0.7071, 0.7071),
    "down_right": (0.7071, 0.7071),
}
# caption phrase of a direction ("moves up and to the right") and user-style variants
DIRECTION_PHRASES = {
    "left": "to the left",
    "right": "to the right",
    "up": "up",
    "down": "down",
    "up_left": "up and to the left",
    "up_right": "up and to the right",
    "down_left": "down and to the left",
    "down_right": "down and to the right",
}
DIRECTION_SYNONYMS = {
    "left": ("left", "leftward", "towards the left"),
    "right": ("right", "rightward", "towards the right"),
    "up": ("upward", "towards the top", "up the screen"),
    "down": ("downward", "towards the bottom", "down the screen"),
    "up_left": ("diagonally up-left", "towards the top left"),
    "up_right": ("diagonally up-right", "towards the top right"),
    "down_left": ("diagonally down-left", "towards the bottom left"),
    "down_right": ("diagonally down-right", "towards the bottom right"),
}


@dataclass(frozen=True)
class MotionInfo:
    name: str
    base: str  # "move to the left"   (imperative / infinitive)
    third: str  # "moves to the left"  (canonical caption phrase)
    ing: str  # "moving to the left"
    synonyms: tuple[str, ...]  # user-style base forms: "go left", "slide leftward"
    interaction: bool = False


def _forms(verb: str, third: str, ing: str, rest: str) -> tuple[str, str, str]:
    tail = f" {rest}" if rest else ""
    return verb + tail, third + tail, ing + tail


def _build() -> dict[str, MotionInfo]:
    table: dict[str, MotionInfo] = {}
    for d, phrase in DIRECTION_PHRASES.items():
        syn = tuple(f"{v} {w}" for v in ("go", "head", "slide", "drift") for w in DIRECTION_SYNONYMS[d])
        table[f"move_{d}"] = MotionInfo(f"move_{d}", *_forms("move", "moves", "moving", phrase), syn)
    for d, word in (("cw", "clockwise"), ("ccw", "counterclockwise")):
        syn = (f"go around in a {word} circle", f"loop {word}", f"orbit {word}", f"run in circles {word}")
        table[f"circle_{d}"] = MotionInfo(f"circle_{d}", *_forms("circle", "circles", "circling", word), syn)
        syn = (f"rotate {word}", f"turn {word}", f"twirl {word}", f"rotate {word} on the spot")
        table[f"spin_{d}"] = MotionInfo(f"spin_{d}", *_forms("spin", "spins", "spinning", word), syn)
    table["bounce"] = MotionInfo(
        "bounce", *_forms("bounce", "bounces", "bouncing", "up and down"), ("hop up and down", "bounce", "jump up and down", "hop in place")
    )
    for d in ("left", "right"):
        syn = (f"zigzag {DIRECTION_SYNONYMS[d][1]}", f"weave {DIRECTION_PHRASES[d]}", f"zig-zag {d}", f"snake {d}")
        table[f"zigzag_{d}"] = MotionInfo(f"zigzag_{d}", *_forms("zig-zag", "zig-zags", "zig-zagging", DIRECTION_PHRASES[d]), syn)
    table["grow"] = MotionInfo("grow", *_forms("grow", "grows", "growing", ""), ("get bigger", "grow larger", "expand", "scale up"))
    table["shrink"] = MotionInfo("shrink", *_forms("shrink", "shrinks", "shrinking", ""), ("get smaller", "shrink down", "contract", "scale down"))
    table["stay"] = MotionInfo("stay", *_forms("stay", "stays", "staying", "still"), ("stay put", "hold still", "keep still", "remain in place"))
    # interaction motions: their caption phrase needs the partner, so captions.py builds it
    table["chase"] = MotionInfo("chase", "chase", "chases", "chasing", ("run after", "go after", "pursue", "follow"), True)
    table["swap"] = MotionInfo("swap", "swap places", "swap places", "swapping places", ("trade places", "switch places", "change places", "swap spots"), True)
    table["meet"] = MotionInfo("meet", "meet in the middle", "meet in the middle", "meeting in the middle", ("come together", "meet up in the centre", "move towards each other", "meet halfway"), True)
    return table


MOTIONS: dict[str, MotionInfo] = _build()
SINGLE_MOTIONS = tuple(n for n, m in MOTIONS.items() if not m.interaction)
INTERACTIONS = ("chase", "swap", "meet")
MOVE_MOTIONS = tuple(n for n in SINGLE_MOTIONS if n.startswith("move_"))


# Used for any param a SubjectSpec leaves out (mid-range values of what sample_scene draws).
DEFAULT_PARAMS = {
    "move": {"distance": 0.35},
    "circle": {"radius": 0.17, "phase": 0.0, "turns": 1.0},
    "bounce": {"height": 0.25, "bounces": 2},
    "zigzag": {"distance": 0.36, "amplitude": 0.1, "zigs": 2},
    "grow": {"factor": 1.6},
    "shrink": {"factor": 1.6},
    "spin": {"turns": 1.0},
    "stay": {},
    "chase": {"end_gap": 0.4},
    "swap": {"arc": 0.1},
    "meet": {"gap": 0.4},
}


def motion_params(motion: str, params: dict) -> dict:
    """params completed with the defaults of the motion's family."""
    return {**DEFAULT_PARAMS[motion.split("_")[0]], **params}


def check_motion(name: str) -> MotionInfo:
    if name not in MOTIONS:
        raise InputError(f"unknown motion {name!r}; choose one of {', '.join(MOTIONS)}")
    return MOTIONS[name]


def single_track(motion: str, params: dict, start_px, scale: float, angle: float, short: float, t: np.ndarray):
    """Trajectory of one subject doing a single-subject motion.

    start_px: (x, y) at t=0 in pixels; short: the frame's short side in pixels; t: [T] in [0, 1].
    Returns centres [T, 2] (px), scales [T], angles [T] (deg), all float64.
    """
    check_motion(motion)
    params = motion_params(motion, params)
    T = len(t)
    c = np.tile(np.asarray(start_px, dtype=np.float64), (T, 1))
    s = np.full(T, float(scale))
    a = np.full(T, float(angle))
    if motion.startswith("move_"):
        d = np.asarray(DIRECTIONS[motion[5:]]) * params["distance"] * short
        c += t[:, None] * d
    elif motion.startswith("circle_"):
        r = params["radius"] * short
        sign = 1.0 if motion.endswith("_cw") else -1.0
        ph0 = np.deg2rad(params.get("phase", 0.0))
        ph = ph0 + sign * 2 * np.pi * params.get("turns", 1.0) * t
        centre = c[0] - r * np.array([np.cos(ph0), np.sin(ph0)])
        c = centre + r * np.stack([np.cos(ph), np.sin(ph)], axis=1)
    elif motion == "bounce":
        h = params["height"] * short
        c[:, 1] -= h * np.abs(np.sin(np.pi * params.get("bounces", 2) * t))
    elif motion.startswith("zigzag_"):
        sign = -1.0 if motion.endswith("left") else 1.0
        c[:, 0] += sign * params["distance"] * short * t
        tri = (2 / np.pi) * np.arcsin(np.sin(2 * np.pi * params.get("zigs", 2) * t))
        c[:, 1] -= params["amplitude"] * short * tri
    elif motion == "grow":
        s = scale * params["factor"] ** t
    elif motion == "shrink":
        s = scale / params["factor"] ** t
    elif motion.startswith("spin_"):
        sign = 1.0 if motion.endswith("_cw") else -1.0
        a = angle + sign * 360.0 * params.get("turns", 1.0) * t
    elif motion == "stay":
        pass
    else:
        raise InputError(f"motion {motion!r} needs an interaction partner; set Scene.interaction")
    return c, s, a


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.hypot(*v))
    return v / n if n > 1e-9 else np.array([1.0, 0.0])


def interaction_track(motion: str, params: dict, start_px, partner_start_px, partner_track, short: float, t: np.ndarray):
    """Centre track [T, 2] of a subject in an interaction (scale and angle stay constant)."""
    check_motion(motion)
    params = motion_params(motion, params)
    p = np.asarray(start_px, dtype=np.float64)
    q = np.asarray(partner_start_px, dtype=np.float64)
    tt = t[:, None]
    if motion == "chase":
        lead = partner_track
        direction = _unit(lead[-1] - lead[0])
        end = lead[-1] - params["end_gap"] * short * direction
        return p + tt * (end - p)
    if motion == "swap":
        d = q - p
        n = _unit(np.array([-d[1], d[0]]))
        return p + tt * d + np.sin(np.pi * tt) * params["arc"] * short * n
    if motion == "meet":
        u = _unit(q - p)
        end = (p + q) / 2 - 0.5 * params["gap"] * short * u
        return p + tt * (end - p)
    raise InputError(f"{motion!r} is not an interaction motion; use one of {', '.join(INTERACTIONS)}")
