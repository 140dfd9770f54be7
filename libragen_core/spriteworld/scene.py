"""The scene description: everything needed to render one clip, as JSON-serialisable dataclasses.

A Scene fully determines its clip: render_scene(scene) is a pure function of it (`seed` only
drives background texture noise). Conventions (shared with metrics and curation):

- size = (height, width) in pixels; n_frames = 4k+1 (17 by default); fps is for writing video.
- SubjectSpec.start = (x, y) of the sprite centre at frame 0, as fractions of (width, height),
  in world coordinates (= screen coordinates at frame 0; the camera starts at offset 0).
- SubjectSpec.scale = sprite diameter as a fraction of the frame's short side; angle in degrees,
  positive = clockwise on screen. Motion params use short-side units (see motions.py).
- Subjects are drawn in list order (later ones in front); "Ref k" in captions is subjects[k-1].
- interaction: {kind, subjects=(a, b)}: chase = b chases a (a has a move_* motion, b "chase");
  swap / meet = both subjects have that motion.
- camera.pan in {None, left, right, up, down}: the view moves that way by camera.distance
  (short-side units) over the clip, so the world (background, props, occluder, subjects) moves
  the opposite way on screen. light.change in {None, dims, brightens}: brightness goes
  1 -> 1-amount, or 1-amount -> 1. occluder: an object drawn in front of every subject.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import InputError
from .identity import SIZES, Identity, sample_identity
from .motions import (
    DIRECTIONS,
    INTERACTIONS,
    MOTIONS,
    SINGLE_MOTIONS,
    check_motion,
    interaction_track,
    single_track,
)

# Pastel and dark background colours (named for captions); subjects use the saturated palette.
BG_COLORS: dict[str, tuple[int, int, int]] = {
    "sky blue": (165, 205, 240),
    "sunny yellow": (250, 232, 150),
    "mint green": (185, 232, 195),
    "peach": (250, 205, 170),
    "lavender": (215, 200, 240),
    "light grey": (212, 212, 212),
    "sand": (222, 200, 150),
    "night blue": (30, 40, 80),
    "forest green": (35, 80, 50),
    "plum": (80, 45, 85),
}
BACKGROUND_KINDS = ("plain", "gradient", "checkered", "striped", "speckled")
PROPS = ("tree", "rock", "house", "sun", "cloud")
OCCLUDERS = ("pillar", "bush")
CAMERA_PANS = ("left", "right", "up", "down")
LIGHT_CHANGES = ("dims", "brightens")
# the camera moves this way, so the world moves the opposite way on screen
PAN_VECTORS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


@dataclass
class Prop:
    kind: str
    x: float  # centre, fraction of width
    y: float  # centre, fraction of height
    size: float  # fraction of short side


@dataclass
class Background:
    kind: str = "plain"
    color: str = "sky blue"
    props: list[Prop] = field(default_factory=list)


@dataclass
class Occluder:
    kind: str  # pillar: full-height bar; bush: mound rising from the bottom edge
    x: float  # centre, fraction of width
    width: float  # fraction of width


@dataclass
class Camera:
    pan: str | None = None
    distance: float = 0.0  # short-side units over the whole clip


@dataclass
class Light:
    change: str | None = None
    amount: float = 0.0


@dataclass
class Interaction:
    kind: str
    subjects: tuple[int, int]


@dataclass
class SubjectSpec:
    identity: Identity
    motion: str
    params: dict = field(default_factory=dict)
    start: tuple[float, float] = (0.5, 0.5)
    scale: float = 0.38
    angle: float = 0.0


@dataclass
class Scene:
    seed: int
    subjects: list[SubjectSpec]
    size: tuple[int, int] = (64, 64)
    n_frames: int = 17
    background: Background = field(default_factory=Background)
    camera: Camera = field(default_factory=Camera)
    light: Light = field(default_factory=Light)
    occluder: Occluder | None = None
    interaction: Interaction | None = None
    fps: float = 16.0

    def __post_init__(self):
        h, w = self.size
        if h < 16 or w < 16:
            raise InputError(f"scene size must be at least 16x16 pixels; got {h}x{w}")
        if self.n_frames < 1 or (self.n_frames - 1) % 4:
            raise InputError(f"n_frames must be 4k+1 (1, 5, 9, 13, 17, ...) for the Wan VAE; got {self.n_frames}")
        if not 1 <= len(self.subjects) <= 4:
            raise InputError(f"a scene holds 1 to 4 subjects; got {len(self.subjects)}")
        for k, s in enumerate(self.subjects):
            check_motion(s.motion)
            if not (0.0 < s.scale <= 4.0) or not all(np.isfinite(s.start)):
                raise InputError(f"subject {k}: scale must be in (0, 4] and start finite; got scale {s.scale}, start {s.start}")
        if self.background.kind not in BACKGROUND_KINDS or self.background.color not in BG_COLORS:
            raise InputError(f"unknown background {self.background.kind!r}/{self.background.color!r}")

    @property
    def short(self) -> int:
        return min(self.size)

    def to_dict(self) -> dict:
        d = asdict(self)
        for sd, s in zip(d["subjects"], self.subjects):
            sd["identity"] = s.identity.key
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        try:
            subjects = [
                SubjectSpec(
                    identity=Identity.from_key(s["identity"]) if isinstance(s["identity"], str) else Identity(**s["identity"]),
                    motion=s["motion"],
                    params=dict(s.get("params", {})),
                    start=tuple(s["start"]),
                    scale=float(s["scale"]),
                    angle=float(s.get("angle", 0.0)),
                )
                for s in d["subjects"]
            ]
            bg = d.get("background", {})
            inter = d.get("interaction")
            occ = d.get("occluder")
            return cls(
                seed=int(d["seed"]),
                subjects=subjects,
                size=tuple(d.get("size", (64, 64))),
                n_frames=int(d.get("n_frames", 17)),
                background=Background(bg.get("kind", "plain"), bg.get("color", "sky blue"), [Prop(**p) for p in bg.get("props", [])]),
                camera=Camera(**d.get("camera", {})),
                light=Light(**d.get("light", {})),
                occluder=Occluder(**occ) if occ else None,
                interaction=Interaction(inter["kind"], tuple(inter["subjects"])) if inter else None,
                fps=float(d.get("fps", 16.0)),
            )
        except (KeyError, TypeError) as e:
            raise InputError(f"not a valid SpriteWorld scene description: {e!r}") from e

    @classmethod
    def from_json(cls, text: str) -> Scene:
        return cls.from_dict(json.loads(text))


def frame_times(n_frames: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n_frames) if n_frames > 1 else np.zeros(1)


def camera_offsets(scene: Scene) -> np.ndarray:
    """Integer camera offset per frame [T, 2] (px): screen = world - offset."""
    t = frame_times(scene.n_frames)
    if not scene.camera.pan:
        return np.zeros((scene.n_frames, 2), dtype=np.int64)
    v = np.asarray(PAN_VECTORS[scene.camera.pan]) * scene.camera.distance * scene.short
    return np.rint(t[:, None] * v).astype(np.int64)


def world_tracks(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact subject trajectories in world pixels: centres [K, T, 2], scales [K, T], angles [K, T]."""
    h, w = scene.size
    t = frame_times(scene.n_frames)
    K = len(scene.subjects)
    centres = np.zeros((K, len(t), 2))
    scales = np.zeros((K, len(t)))
    angles = np.zeros((K, len(t)))
    starts = [np.array([s.start[0] * w, s.start[1] * h]) for s in scene.subjects]
    pending = []
    for k, s in enumerate(scene.subjects):
        if MOTIONS[s.motion].interaction:
            pending.append(k)
            scales[k] = s.scale
            angles[k] = s.angle
        else:
            centres[k], scales[k], angles[k] = single_track(s.motion, s.params, starts[k], s.scale, s.angle, scene.short, t)
    for k in pending:
        s = scene.subjects[k]
        other = s.params.get("target", s.params.get("partner"))
        if other is None or not 0 <= other < K or other == k:
            raise InputError(f"subject {k} does {s.motion!r} but names no valid partner (params.target / params.partner)")
        centres[k] = interaction_track(s.motion, s.params, starts[k], starts[other], centres[other], scene.short, t)
    return centres, scales, angles


# ----------------------------------------------------------------------------------------------
# sampling


def _motion_params(rng: np.random.Generator, motion: str, shrink: float) -> dict:
    u = rng.uniform
    if motion.startswith("move_"):
        return {"distance": round(u(0.3, 0.45) * shrink, 4)}
    if motion.startswith("circle_"):
        return {"radius": round(u(0.14, 0.2) * shrink, 4), "phase": round(u(0, 360), 2), "turns": 1.0}
    if motion == "bounce":
        return {"height": round(u(0.2, 0.3) * shrink, 4), "bounces": 2}
    if motion.startswith("zigzag_"):
        return {"distance": round(u(0.3, 0.42) * shrink, 4), "amplitude": round(u(0.08, 0.12) * shrink, 4), "zigs": 2}
    if motion in ("grow", "shrink"):
        return {"factor": round(u(1.5, 1.8), 4)}
    if motion.startswith("spin_"):
        return {"turns": 1.0}
    return {}


def _box(rel: np.ndarray, radius: np.ndarray, cam: np.ndarray, w: int, h: int):
    """Feasible start (x, y) range so that start + rel - cam keeps the sprite inside the frame."""
    lo = np.max(radius[:, None] - rel + cam, axis=0)
    hi = np.min(np.array([w, h])[None] - radius[:, None] - rel + cam, axis=0)
    return lo, hi


def sample_scene(
    rng: np.random.Generator | int,
    n_subjects: int | None = None,
    split: str = "train",
    *,
    size: tuple[int, int] = (64, 64),
    n_frames: int = 17,
    motions=None,
    interactions=INTERACTIONS,
    identities=None,
    identity_filter: dict | None = None,
    background_kinds=BACKGROUND_KINDS,
    p_interaction: float = 0.35,
    p_camera: float = 0.25,
    p_light: float = 0.2,
    p_occluder: float = 0.15,
    p_props: float = 0.4,
    scale_jitter: float = 0.1,
) -> Scene:
    """Draw a random scene whose subjects stay inside the frame for the whole clip.

    split: "train" draws only non-held-out identities, "heldout" only held-out ones.
    motions: allowed single-subject motions (default all); interactions: allowed kinds (() = none).
    identities: an explicit pool to draw from (filtered by split); identity_filter: keyword
    restrictions for sample_identity (shapes=, colors= (body), colors2= (pattern + outline), patterns=,
    markings=, sizes=), for curricula.
    Subjects in one scene never share colour+shape, so "the blue star" binds to exactly one.
    """
    if isinstance(rng, (int, np.integer)):
        rng = np.random.default_rng(int(rng))
    motions = tuple(motions) if motions is not None else SINGLE_MOTIONS
    for m in motions:
        if MOTIONS[check_motion(m).name].interaction:
            raise InputError(f"{m!r} is an interaction; pass it in interactions=, not motions=")
    if n_subjects is None:
        n_subjects = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
    if not 1 <= n_subjects <= 3:
        raise InputError(f"n_subjects must be 1, 2 or 3; got {n_subjects}")
    h, w = size
    short = min(size)
    seed = int(rng.integers(2**31 - 1))

    pool = None
    if identities is not None:
        pool = [i for i in identities if split == "any" or i.is_heldout == (split == "heldout")]
        if not pool:
            raise InputError(f"the identity pool holds no {split!r} identity")
    idents: list[Identity] = []
    for _ in range(200):
        ident = pool[rng.integers(len(pool))] if pool else sample_identity(rng, split, **(identity_filter or {}))
        if all((ident.color, ident.shape) != (o.color, o.shape) for o in idents):
            idents.append(ident)
        if len(idents) == n_subjects:
            break
    else:
        raise InputError(f"could not draw {n_subjects} identities with distinct colour+shape from the pool")
    scales = [SIZES[i.size] * float(rng.uniform(1 - scale_jitter, 1 + scale_jitter)) for i in idents]

    bg = Background(
        kind=str(rng.choice(list(background_kinds))),
        color=str(rng.choice(list(BG_COLORS))),
        props=[],
    )
    if rng.random() < p_props:
        for kind in rng.choice(PROPS, size=int(rng.integers(1, 3)), replace=False):
            y = float(rng.uniform(0.1, 0.3)) if kind in ("sun", "cloud") else float(rng.uniform(0.65, 0.85))
            bg.props.append(Prop(str(kind), round(float(rng.uniform(0.15, 0.85)), 4), round(y, 4), round(float(rng.uniform(0.25, 0.4)), 4)))
    camera = Camera()
    if rng.random() < p_camera:
        camera = Camera(str(rng.choice(CAMERA_PANS)), round(float(rng.uniform(0.12, 0.2)), 4))
    light = Light()
    if rng.random() < p_light:
        light = Light(str(rng.choice(LIGHT_CHANGES)), round(float(rng.uniform(0.3, 0.45)), 4))
    occluder = None
    if rng.random() < p_occluder:
        kind = str(rng.choice(OCCLUDERS))
        occluder = Occluder(kind, round(float(rng.uniform(0.25, 0.75)), 4), round(float(rng.uniform(0.1, 0.16) if kind == "pillar" else rng.uniform(0.3, 0.45)), 4))
    interaction = None
    if n_subjects >= 2 and interactions and rng.random() < p_interaction:
        interaction = Interaction(str(rng.choice(list(interactions))), (0, 1))

    scene = Scene(seed, [SubjectSpec(i, "stay", {}, (0.5, 0.5), s) for i, s in zip(idents, scales)], size, n_frames, bg, camera, light, occluder, interaction)
    t = frame_times(n_frames)
    cam = camera_offsets(scene).astype(np.float64)
    for attempt in range(80):
        shrink = 0.85 ** (attempt // 10)
        fallback = attempt >= 60  # "stay" only: fits whenever the sprites themselves fit
        if attempt == 30:  # an interaction that does not fit these sprites: let them act alone
            scene.interaction = None
        if attempt >= 70:  # crowded even standing still: make everyone a little smaller
            for s in scene.subjects:
                s.scale *= 0.95
        if _place(rng, scene, motions, shrink, fallback, t, cam, short, w, h):
            return scene
    raise InputError("could not place the subjects inside the frame; use fewer or smaller subjects")


def _apart(p: np.ndarray, k: int, starts: dict, subs, short: float) -> bool:
    """Sprites start apart (centres >= 0.9 x the sum of radii), so every reference starts unoccluded."""
    return all(np.hypot(*(p - q)) >= 0.45 * (subs[k].scale + subs[j].scale) * short for j, q in starts.items())


def _place(rng, scene: Scene, motions, shrink, fallback, t, cam, short, w, h) -> bool:
    subs = scene.subjects
    inter = scene.interaction
    starts: dict[int, np.ndarray] = {}
    if inter is not None and not fallback:
        a, b = inter.subjects
        sa, sb = subs[a].scale, subs[b].scale
        touch = 0.5 * (sa + sb)
        if inter.kind == "chase":
            lead = str(rng.choice([m for m in DIRECTIONS if m not in ("up", "down")]))
            subs[a].motion, subs[a].params = f"move_{lead}", {"distance": round(float(rng.uniform(0.3, 0.42)) * shrink, 4)}
            subs[b].motion, subs[b].params = "chase", {"target": a, "end_gap": round(1.1 * touch, 4)}
            gap0 = touch + float(rng.uniform(0.12, 0.2)) * shrink
            rel_b = -np.asarray(DIRECTIONS[lead]) * gap0 * short
        else:
            extra = float(rng.uniform(0.12, 0.3) if inter.kind == "swap" else rng.uniform(0.2, 0.35)) * shrink
            phi = float(rng.uniform(-0.6, 0.6)) + (np.pi if rng.random() < 0.5 else 0.0)
            # both sprites must fit at the full separation: |offset| + 2 radii <= frame, per axis
            room_x = (w / short - touch) / max(abs(np.cos(phi)), 1e-6)
            room_y = (h / short - touch) / max(abs(np.sin(phi)), 1e-6)
            length = min(touch + extra, room_x - 0.02, room_y - 0.02)
            if length < touch + 0.06:
                return False
            rel_b = np.array([np.cos(phi), np.sin(phi)]) * length * short
            subs[a].motion = subs[b].motion = inter.kind
            if inter.kind == "swap":
                arc = round(float(rng.uniform(0.08, 0.14)) * (1 if rng.random() < 0.5 else -1), 4)
                subs[a].params, subs[b].params = {"partner": b, "arc": arc}, {"partner": a, "arc": arc}
            else:
                gap = round(1.1 * touch, 4)
                subs[a].params, subs[b].params = {"partner": b, "gap": gap}, {"partner": a, "gap": gap}
        if inter.kind == "chase":
            ta = single_track(subs[a].motion, subs[a].params, (0.0, 0.0), sa, 0.0, short, t)[0]
        else:
            ta = interaction_track(subs[a].motion, subs[a].params, (0.0, 0.0), rel_b, None, short, t)
        tb = interaction_track(subs[b].motion, subs[b].params, rel_b, (0.0, 0.0), ta, short, t)
        lo_a, hi_a = _box(ta, np.full(len(t), sa * short / 2), cam, w, h)
        lo_b, hi_b = _box(tb, np.full(len(t), sb * short / 2), cam, w, h)
        lo, hi = np.maximum(lo_a, lo_b), np.minimum(hi_a, hi_b)
        if np.any(lo > hi):
            return False
        p = rng.uniform(lo, hi)
        starts[a], starts[b] = p, p + rel_b
    elif inter is not None:
        scene.interaction = None
    allowed_all = list(motions)
    for k, s in enumerate(subs):
        if k in starts:
            continue
        allowed = [m for m in allowed_all if s.identity.rotation_visible or not m.startswith("spin_")] or allowed_all
        placed = False
        for attempt in range(8):
            if fallback:
                s.motion, s.params = "stay", {}
            else:
                s.motion = str(rng.choice(allowed))
                s.params = _motion_params(rng, s.motion, shrink * 0.85 ** (attempt // 2))
            rel, sc, _ = single_track(s.motion, s.params, (0.0, 0.0), s.scale, 0.0, short, t)
            lo, hi = _box(rel, sc * short / 2, cam, w, h)
            if np.any(lo > hi):
                continue
            for _ in range(6):
                p = rng.uniform(lo, hi)
                if _apart(p, k, starts, subs, short):
                    starts[k], placed = p, True
                    break
            if placed:
                break
        if not placed:
            return False
    for k, s in enumerate(subs):
        s.start = (round(float(starts[k][0] / w), 5), round(float(starts[k][1] / h), 5))
    return True
