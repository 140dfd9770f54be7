"""The style guide: what a model family's prompts look like, as data the rewriters read.

Three families are built in; pick the one the model was trained on:

- phantom: plain, detailed prose that names every subject with its reference described ("A woman
  in a yellow raincoat walks her small white dog along the pier at sunset. The camera follows
  them."), as Phantom-Wan and Wan2.1 were trained on. The default for real Wan-layout models.
- libragen: LibraGen's "Ref k: ..." lines and a "Video:" line with Ref k[...] bindings, for models
  post-trained with training/ on such captions. "generic" (the old name) is an alias.
- spriteworld: the embedded libragen-sprite model's closed caption grammar.

A model may ship its own beside its model.json (ModelCard.style_guide). It is plain JSON:

    {"format": "libragen-style-guide", "version": 1, "name": ..., "closed": bool,
     "output": "ref" | "prose",
     "subjects":   {"determiners", "pronouns", "nouns", "adjectives": {category: [words]},
                    "wildcard_nouns", "ref_template", "binding_template", "unlabeled"},
     "motions":    {name: {"canonical": phrase, "phrases": [surface forms], "interaction": kind|null}},
     "direction_canonical": {name: phrase}, "backgrounds": {canonical: [surface forms]}, "props": [...],
     "default_background": phrase|null, "camera": {canonical: [surface forms]}, "light": {...},
     "occluders": {...}, "default_turn": "cw", "strip_prefixes": [...], "clause_join": [first, rest],
     "video_order": [...], "instructions": [lines for LLM backends], "examples": [{"labels", "prompt",
     "rewrite"}]}

A "closed" guide (SpriteWorld) means the model only knows its caption grammar: every motion is
mapped to its canonical phrase and the rewrite must parse with caption_facts. Open guides keep
the user's verbs and scene words and only bind subjects, turn requests into statements and move
camera clauses to the end. How the user's English is read (motion verbs, directions, pronouns) is
the analysis module's job, the same for every guide.
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

    @property
    def output(self) -> str:
        """ "ref" (Ref lines + Video line) or "prose" (one plain paragraph)."""
        return self.data.get("output", "ref")

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


def _base(name: str, closed: bool, output: str = "ref") -> dict:
    return {"format": FORMAT, "version": VERSION, "name": name, "closed": closed, "output": output,
            "strip_prefixes": STRIP_PREFIXES, "clause_join": [" while ", " and "]}


_REF_RULES = [
    "The references are already described as 'Ref k:' lines. Answer with exactly ONE line that starts with "
    "'Video: ' and nothing else: no explanations, no quotes, no Ref lines.",
    "In the Video line, name every reference at least once as Ref k[short name], e.g. Ref 1[the dog]; use square "
    "brackets only for that.",
    "Say what each subject does (motion), where (scene) and how the camera moves, in plain present tense.",
]


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
    from ..spriteworld.motions import MOTIONS

    vocab = caption_vocabulary()
    motions = {}
    for name, info in MOTIONS.items():
        phrases = set()
        for base in (info.base, *info.synonyms):
            third, ing = conjugate(base)
            phrases.update((base, third, ing))
        phrases.update((info.third, info.ing))
        interaction = name if info.interaction else None
        motions[name] = {"canonical": info.third, "phrases": sorted(phrases), "interaction": interaction}
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
    data = _base("spriteworld", True) | {
        "subjects": {
            "determiners": DETERMINERS, "pronouns": PRONOUNS, "nouns": list(vocab["shapes"]),
            "wildcard_nouns": ["one", "shape", "sprite"],
            "adjectives": {"color": list(vocab["colors"]), "pattern": list(vocab["patterns"]) + ["stripy", "spotty"],
                           "size": list(vocab["sizes"])},
            "ref_template": "{label}",
            "binding_template": "the {color} {noun}",
            "unlabeled": UNLABELED_REF,
        },
        "motions": motions,
        "direction_canonical": dict(vocab["directions"]),
        "backgrounds": backgrounds,
        "props": list(vocab["props"]),
        "default_background": BACKGROUND_PHRASES["plain"].format(color="light grey"),
        "camera": camera,
        "light": light,
        "occluders": occluders,
        "default_turn": "cw",
        "video_order": ["clauses", "background", "occluder", "camera", "light"],
        "instructions": [*_REF_RULES,
                         "The model only knows the phrases below: use them verbatim, one motion per subject."],
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


def _open_subjects() -> dict:
    return {"determiners": DETERMINERS, "pronouns": PRONOUNS + ["they", "them"], "nouns": GENERIC_NOUNS,
            "wildcard_nouns": ["one"], "adjectives": {}, "ref_template": "{label}", "binding_template": "{label_the}",
            "unlabeled": UNLABELED_REF}


@lru_cache(maxsize=1)
def libragen_style_guide() -> StyleGuide:
    """LibraGen's Ref-line captions for real Wan-layout models post-trained with training/."""
    data = _base("libragen", False) | {
        "subjects": _open_subjects(),
        "motions": {},
        "camera": CAMERA_TERMS_GENERIC,
        "instructions": [*_REF_RULES, "Keep the user's own verbs, places and details; do not invent subjects or "
                                      "motions. Put camera moves last, after '; '."],
        "examples": [
            {"labels": ["a woman in a yellow raincoat", "a small white dog"],
             "prompt": "make the woman walk along a pier while the dog runs ahead of her, tracking shot",
             "rewrite": "Ref 1: a woman in a yellow raincoat.\nRef 2: a small white dog.\nVideo: Ref 1[the woman] "
                        "walks along a pier while Ref 2[the dog] runs ahead of her; the camera follows the subject."},
        ],
    }
    return StyleGuide(data, "libragen (built in)")


# the phantom guide's camera terms: whole clauses, each its own sentence in the prose
CAMERA_TERMS_PROSE = {
    "the camera pans left": CAMERA_TERMS_GENERIC["the camera pans left"],
    "the camera pans right": CAMERA_TERMS_GENERIC["the camera pans right"],
    "the camera tilts up": CAMERA_TERMS_GENERIC["the camera tilts up"],
    "the camera tilts down": CAMERA_TERMS_GENERIC["the camera tilts down"],
    "the camera zooms in": CAMERA_TERMS_GENERIC["the camera zooms in"],
    "the camera zooms out": CAMERA_TERMS_GENERIC["the camera zooms out"],
    "the camera follows the subject": CAMERA_TERMS_GENERIC["the camera follows the subject"],
    "the camera circles around the subject": CAMERA_TERMS_GENERIC["the camera orbits the subject"],
    "the camera holds still": CAMERA_TERMS_GENERIC["a static camera"],
    "the camera is handheld and moves slightly": CAMERA_TERMS_GENERIC["a handheld camera"],
    "the shot is a close-up": CAMERA_TERMS_GENERIC["a close-up shot"],
    "the scene is shown in a wide shot": CAMERA_TERMS_GENERIC["a wide shot"],
    "the scene is seen from above": CAMERA_TERMS_GENERIC["an aerial shot"],
    "everything moves in slow motion": CAMERA_TERMS_GENERIC["slow motion"],
}


@lru_cache(maxsize=1)
def phantom_style_guide() -> StyleGuide:
    """Plain detailed prose for Phantom-Wan (and Wan2.1), which were trained on descriptive captions."""
    data = _base("phantom", False, "prose") | {
        "subjects": _open_subjects(),
        "motions": {},
        "camera": CAMERA_TERMS_PROSE,
        "instructions": [
            "Answer with ONE paragraph of plain English prose and nothing else: no 'Ref' tags, no square "
            "brackets, no labels such as 'Video:' or 'Prompt:', no lists, no quotes.",
            "Name every reference subject in the prose, the first time with its description as given (its kind, "
            "colours, clothing, distinctive marks), later as 'the dog', 'she', and so on. Invent no other "
            "subjects.",
            "Say in present tense what each subject does (keep the user's motions and directions exactly), where "
            "it happens (scene, light, time of day) and how the camera moves, each camera move in a sentence of "
            "its own. Two to four sentences.",
        ],
        "examples": [
            {"labels": ["a woman in a yellow raincoat", "a small white dog"],
             "prompt": "she walks her dog along the pier at sunset, camera follows them",
             "rewrite": "A woman in a yellow raincoat walks her small white dog along the pier at sunset. The "
                        "camera follows them."},
        ],
    }
    return StyleGuide(data, "phantom (built in)")


def generic_style_guide() -> StyleGuide:
    """The old name of libragen_style_guide (workflows saved with style_guide "generic" keep working)."""
    return libragen_style_guide()


BUILT_IN = {"phantom": phantom_style_guide, "libragen": libragen_style_guide, "spriteworld": spriteworld_style_guide}
ALIASES = {"generic": "libragen"}  # the libragen guide's name before phantom existed
STYLE_METADATA_KEY = "libragen.style_guide"  # safetensors metadata of a DiT or LoRA: a built-in guide name
AUTO = "auto"


def _family_of_metadata(meta: dict) -> tuple[str, str] | None:
    """(guide name, why) from a DiT's or LoRA's safetensors metadata, or None when it says nothing."""
    if not meta:
        return None
    named = str(meta.get(STYLE_METADATA_KEY, "")).strip().lower()
    if named:
        named = ALIASES.get(named, named)
        if named in BUILT_IN:
            return named, f"its metadata names the {named} guide"
    base = str(meta.get("base_model", "")).lower()
    if base.startswith("libragen-sprite"):
        return "spriteworld", "it was trained on the embedded libragen-sprite model"
    method = str(meta.get("method", "")).lower()
    if method.startswith(("sft-", "dpo-", "dpo_")):
        return "libragen", f"it was post-trained with LibraGen's recipe ({method}) on Ref-line captions"
    return None


def choose_style_guide(value=None, bundle=None, *, loras=(), dit_file=None) -> tuple[StyleGuide, str]:
    """The guide to write and why: a StyleGuide, a built-in name (or "generic"), a JSON path, or
    auto (None / "auto"). Auto looks, in order, at the LoRAs applied (their metadata: a
    libragen-sprite base or our post-training recipe), the bundle's own guide file, the embedded
    model's name, the DiT file's metadata (STYLE_METADATA_KEY) and name ("phantom" in it), and
    otherwise picks phantom: real Wan-layout models were trained on plain prose."""
    if isinstance(value, StyleGuide):
        return value, "given"
    if isinstance(value, str) and value.strip().lower() in (*BUILT_IN, *ALIASES):
        name = value.strip().lower()
        if name in ALIASES:
            return BUILT_IN[ALIASES[name]](), f"chosen ({name!r} is the old name of {ALIASES[name]!r})"
        return BUILT_IN[name](), "chosen"
    if value and value != AUTO:
        return StyleGuide.load(value), f"loaded from {value}"
    for meta in reversed([m for m in loras if m]):
        found = _family_of_metadata(meta)
        if found:
            return BUILT_IN[found[0]](), f"auto: a LoRA applied to the model says so ({found[1]})"
    card = getattr(bundle, "card", None)
    if bundle is not None:
        path = bundle.style_guide_path()
        if path is not None:
            return StyleGuide.load(path), f"auto: the model ships {path.name}"
        if getattr(card, "name", "").startswith("libragen-sprite"):
            return spriteworld_style_guide(), "auto: the embedded libragen-sprite model"
        if dit_file is None and card is not None and card.dit:
            candidate = Path(card.dit) if bundle.folder is None else Path(bundle.folder) / card.dit
            dit_file = candidate if candidate.is_file() else None
    if dit_file is not None:
        from ..errors import CheckpointError
        from ..io.safetensors_file import read_header

        try:
            _, meta = read_header(dit_file)
        except (CheckpointError, OSError, ValueError):  # a file we cannot read says nothing about the family
            meta = {}
        found = _family_of_metadata(meta)
        if found:
            return BUILT_IN[found[0]](), f"auto: the diffusion model file says so ({found[1]})"
    name = Path(str(dit_file or getattr(card, "dit", "") or "")).name.lower()
    if "phantom" in name:
        return phantom_style_guide(), "auto: a Phantom-Wan model (plain prose)"
    return phantom_style_guide(), ("auto: no sign of LibraGen post-training in the model; plain prose, "
                                   "as Phantom-Wan and Wan2.1 were trained on")


def resolve_style_guide(value=None, bundle=None, *, loras=(), dit_file=None) -> StyleGuide:
    """choose_style_guide without the reason."""
    return choose_style_guide(value, bundle, loras=loras, dit_file=dit_file)[0]
