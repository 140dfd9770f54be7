"""The style guide: what a model's captions look like, as data the rewriters read.

Each model ships one beside its model.json (ModelCard.style_guide). It is plain JSON:

    {"format": "libragen-style-guide", "version": 1, "name": ..., "closed": bool,
     "subjects":   {"determiners", "pronouns", "nouns", "adjectives": {category: [words]},
                    "wildcard_nouns", "ref_template", "binding_template", "unlabeled"},
     "motions":    {name: {"canonical": phrase, "phrases": [surface forms], "interaction": kind|null}},
     "verb_classes": {name: {"verbs": [lemmas], "motion": "move_{direction}" | "circle_{turn}" | name}},
     "directions": {name: [surface forms]},   "turns": {"cw": [...], "ccw": [...]},
     "backgrounds": {canonical: [surface forms]}, "props": [...], "default_background": phrase|null,
     "camera": {canonical: [surface forms]}, "light": {...}, "occluders": {...},
     "default_motion": name|null, "default_direction": name, "default_turn": "cw",
     "strip_prefixes": [...], "clause_join": [first, rest], "video_order": [...],
     "examples": [{"labels", "prompt", "rewrite"}]}

A "closed" guide (SpriteWorld) means the model only knows its caption grammar: every motion is
mapped to its canonical phrase and the rewrite must parse with caption_facts. An open guide (the
generic one, for real Wan models) keeps the user's verbs and scene words and only adds bindings,
moves camera terms to the end, and turns requests ("make the dog run") into statements.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from ..errors import ConfigError
from ..io.atomic import atomic_path
from ..spriteworld.captions import UNLABELED_REF

FORMAT = "libragen-style-guide"
VERSION = 1

DETERMINERS = ["the", "a", "an", "this", "that", "my", "our", "your", "his", "her", "its", "their"]
PRONOUNS = ["it", "he", "she", "him", "her", "itself", "himself", "herself"]
STRIP_PREFIXES = [
    "can you make it so that", "can you make it so", "could you make it so", "make it so that", "make it so",
    "i would like", "i'd like", "i want to see", "i want", "please have", "please make", "please show", "please let",
    "please", "a video where", "a video of", "a video in which", "a clip of", "a clip where", "video of",
    "create a video where", "generate a video where", "show me", "show", "make", "let", "have", "animate",
]
CAMERA_TERMS_GENERIC = {
    "the camera pans left": ["camera pans left", "camera panning left", "pan left", "panning left", "pans to the left"],
    "the camera pans right": ["camera pans right", "camera panning right", "pan right", "panning right",
                              "pans to the right"],
    "the camera tilts up": ["camera tilts up", "tilt up", "tilting up"],
    "the camera tilts down": ["camera tilts down", "tilt down", "tilting down"],
    "the camera zooms in": ["zoom in", "zooms in", "zooming in", "camera zooms in", "push in", "dolly in"],
    "the camera zooms out": ["zoom out", "zooms out", "zooming out", "camera zooms out", "pull back", "dolly out"],
    "the camera follows the subject": ["tracking shot", "camera follows", "camera tracking", "follow cam"],
    "the camera orbits the subject": ["orbit shot", "camera orbits", "orbiting camera", "360 shot"],
    "a static camera": ["static camera", "static shot", "locked-off shot", "tripod shot"],
    "a handheld camera": ["handheld", "hand-held", "shaky cam"],
    "a close-up shot": ["close-up", "closeup", "close up shot"],
    "a wide shot": ["wide shot", "wide angle", "establishing shot"],
    "an aerial shot": ["aerial shot", "aerial view", "drone shot", "bird's-eye view"],
    "slow motion": ["slow motion", "slow-motion", "slowmo"],
}
GENERIC_NOUNS = [
    "person", "man", "woman", "boy", "girl", "child", "kid", "baby", "lady", "guy", "dancer", "runner", "chef",
    "player", "people", "dog", "puppy", "cat", "kitten", "bird", "horse", "cow", "sheep", "rabbit", "bear", "fox",
    "lion", "tiger", "elephant", "monkey", "fish", "duck", "parrot", "car", "bike", "bicycle", "robot", "toy",
    "bottle", "cup", "mug", "shoe", "sneaker", "bag", "handbag", "watch", "phone", "laptop", "lamp", "chair",
    "ball", "hat", "dress", "jacket", "product", "box", "can", "perfume", "doll", "teddy", "character",
]


@dataclass(frozen=True)
class StyleGuide:
    data: dict
    source: str = "(built in)"

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def closed(self) -> bool:
        return bool(self.data.get("closed"))

    @cached_property
    def hash(self) -> str:
        """Content hash: part of every cache key, so editing a guide invalidates its rewrites."""
        canon = json.dumps(self.data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(self.data, indent=1, ensure_ascii=False) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict, source: str = "(dict)") -> StyleGuide:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"{source} is not a LibraGen style guide (its 'format' must be {FORMAT!r})")
        if int(data.get("version", 0)) > VERSION:
            raise ConfigError(f"{source} is style guide version {data.get('version')}; this LibraGen reads up to "
                              f"{VERSION}. Update LibraGen.")
        missing = [k for k in ("name", "subjects", "motions") if k not in data]
        if missing:
            raise ConfigError(f"style guide {source} lacks {', '.join(missing)}")
        return cls(data, source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> StyleGuide:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"style guide file not found: {path}") from e
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read the style guide {path}: {e}") from e
        return cls.from_dict(data, str(path))


def _base(name: str, closed: bool) -> dict:
    return {"format": FORMAT, "version": VERSION, "name": name, "closed": closed, "strip_prefixes": STRIP_PREFIXES,
            "clause_join": [" while ", " and "]}


@lru_cache(maxsize=1)
def spriteworld_style_guide() -> StyleGuide:
    """The embedded model's guide, built from the SpriteWorld caption module (its closed grammar)."""
    from ..spriteworld.captions import (
        BACKGROUND_PHRASES,
        CAMERA_PHRASES,
        LIGHT_PHRASES,
        OCCLUDER_PHRASES,
        caption_vocabulary,
        conjugate,
    )
    from ..spriteworld.motions import DIRECTION_SYNONYMS, MOTIONS

    vocab = caption_vocabulary()
    motions = {}
    for name, info in MOTIONS.items():
        phrases = set()
        for base in (info.base, *info.synonyms):
            third, ing = conjugate(base)
            phrases.update((base, third, ing))
        phrases.update((info.third, info.ing))
        interaction = name if info.interaction else None
        canonical = info.third
        motions[name] = {"canonical": canonical, "phrases": sorted(phrases), "interaction": interaction}
    directions = {d: sorted({p, *DIRECTION_SYNONYMS[d]}) for d, p in vocab["directions"].items()}
    for d in ("up_left", "up_right", "down_left", "down_right"):
        a, b = d.split("_")
        corner = {"up": "upper", "down": "lower"}[a]
        directions[d] += [f"{a}-{b}", f"{a} {b}", f"to the {corner} {b}", f"to the {corner}-{b}"]
    directions["left"] += ["leftwards", "to the left side"]
    directions["right"] += ["rightwards", "to the right side"]
    directions["up"] += ["upwards", "up"]
    directions["down"] += ["downwards", "down"]
    backgrounds = {}
    for kind, template in BACKGROUND_PHRASES.items():
        for color in vocab["background_colors"]:
            canon = template.format(color=color)
            forms = {canon, canon.replace("a ", "the ", 1), f"{color} {kind} background"}
            if kind == "plain":
                forms.update({f"a {color} background", f"{color} background"})
            backgrounds[canon] = sorted(forms)
    camera = {}
    for pan, canon in CAMERA_PHRASES.items():
        camera[canon] = [canon, f"camera panning {pan}", f"camera pans {pan}", f"the camera panning {pan}",
                         f"pan the camera {pan}", f"panning {pan}"]
    light = {LIGHT_PHRASES["dims"]: [LIGHT_PHRASES["dims"], "light dims", "light dimming", "the light dimming",
                                     "it gets darker", "getting darker", "lights dim"],
             LIGHT_PHRASES["brightens"]: [LIGHT_PHRASES["brightens"], "light brightens", "light brightening",
                                          "the light brightening", "it gets brighter", "getting brighter"]}
    occluders = {p: [p, p.replace(" stands in front", " in front"), p.replace(" stands in front", " in the way")]
                 for p in OCCLUDER_PHRASES.values()}
    shapes = list(vocab["shapes"])
    verb_classes = {
        "move": {"verbs": ["move", "go", "head", "slide", "drift", "walk", "run", "fly", "travel", "glide", "roll",
                           "float", "dash", "scoot", "shift", "wander", "zoom", "race"], "motion": "move_{direction}"},
        "circle": {"verbs": ["circle", "orbit", "loop", "revolve"], "motion": "circle_{turn}"},
        "spin": {"verbs": ["spin", "rotate", "turn", "twirl", "twist", "pivot"], "motion": "spin_{turn}"},
        "zigzag": {"verbs": ["zigzag", "zig-zag", "weave", "snake", "wiggle"], "motion": "zigzag_{direction}"},
        "bounce": {"verbs": ["bounce", "hop", "jump", "leap", "bob"], "motion": "bounce"},
        "grow": {"verbs": ["grow", "expand", "enlarge", "swell", "inflate"], "motion": "grow"},
        "shrink": {"verbs": ["shrink", "contract", "deflate", "dwindle"], "motion": "shrink"},
        "stay": {"verbs": ["stay", "remain", "rest", "sit", "wait", "hold", "keep", "stand"], "motion": "stay"},
    }
    data = _base("spriteworld", True) | {
        "subjects": {
            "determiners": DETERMINERS, "pronouns": PRONOUNS, "nouns": shapes, "wildcard_nouns": ["one", "shape",
                                                                                                  "sprite"],
            "adjectives": {"color": list(vocab["colors"]), "pattern": list(vocab["patterns"]) + ["stripy", "spotty"],
                           "size": list(vocab["sizes"])},
            "ref_template": "{label}",
            "binding_template": "the {color} {noun}",
            "unlabeled": UNLABELED_REF,
        },
        "motions": motions,
        "verb_classes": verb_classes,
        "directions": directions,
        "direction_canonical": dict(vocab["directions"]),
        "turns": {"cw": ["clockwise"], "ccw": ["counterclockwise", "counter-clockwise", "anticlockwise",
                                                "anti-clockwise"]},
        "backgrounds": backgrounds,
        "props": list(vocab["props"]),
        "default_background": BACKGROUND_PHRASES["plain"].format(color="light grey"),
        "camera": camera,
        "light": light,
        "occluders": occluders,
        "default_motion": "stay",
        "default_direction": "right",
        "default_turn": "cw",
        "video_order": ["clauses", "background", "occluder", "camera", "light"],
        "examples": [
            {"labels": ["the blue star", "the red circle"],
             "prompt": "I want the star to weave to the right and the red one to rotate clockwise on a sunny yellow "
                       "gradient, camera panning left",
             "rewrite": "Ref 1: a blue star.\nRef 2: a red circle.\nVideo: Ref 1[the blue star] zig-zags to the "
                        "right while Ref 2[the red circle] spins clockwise on a sunny yellow gradient; the camera "
                        "pans left."},
        ],
    }
    return StyleGuide(data, "spriteworld (built in)")


@lru_cache(maxsize=1)
def generic_style_guide() -> StyleGuide:
    """Fallback for real Wan models: subjects from labels, motion verbs kept, camera terms canonical."""
    data = _base("generic", False) | {
        "subjects": {
            "determiners": DETERMINERS, "pronouns": PRONOUNS + ["they", "them"], "nouns": GENERIC_NOUNS,
            "wildcard_nouns": ["one"], "adjectives": {},
            "ref_template": "{label}",
            "binding_template": "{label_the}",
            "unlabeled": UNLABELED_REF,
        },
        "motions": {},
        "verb_classes": {},
        "directions": {},
        "turns": {},
        "backgrounds": {},
        "props": [],
        "default_background": None,
        "camera": CAMERA_TERMS_GENERIC,
        "light": {},
        "occluders": {},
        "default_motion": None,
        "video_order": ["clauses", "camera"],
        "examples": [
            {"labels": ["a woman in a yellow raincoat", "a small white dog"],
             "prompt": "make the woman walk along a pier while the dog runs ahead of her, tracking shot",
             "rewrite": "Ref 1: a woman in a yellow raincoat.\nRef 2: a small white dog.\nVideo: Ref 1[the woman in "
                        "a yellow raincoat] walks along a pier while Ref 2[the small white dog] runs ahead of her; "
                        "the camera follows the subject."},
        ],
    }
    return StyleGuide(data, "generic (built in)")


BUILT_IN = {"spriteworld": spriteworld_style_guide, "generic": generic_style_guide}


def resolve_style_guide(value=None, bundle=None) -> StyleGuide:
    """A StyleGuide, a built-in name, a JSON path, a model bundle's own guide, or the generic one."""
    if isinstance(value, StyleGuide):
        return value
    if isinstance(value, str) and value in BUILT_IN:
        return BUILT_IN[value]()
    if value:
        return StyleGuide.load(value)
    if bundle is not None:
        path = bundle.style_guide_path()
        if path is not None:
            return StyleGuide.load(path)
        name = getattr(bundle.card, "name", "")
        if name.startswith("libragen-sprite"):
            return spriteworld_style_guide()
    return generic_style_guide()
