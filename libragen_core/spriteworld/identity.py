"""Subject identities of SpriteWorld: what a subject looks like, its names, and the held-out rule.

An identity is the tuple (shape, color, color2, pattern, marking, size). `color` fills the body,
`color2` draws the pattern and the outline (so the second colour is visible even when the
pattern is plain), the marking (a dot, or two eyes) sits on top, and the size class sets the
default on-screen diameter. The space holds 10 x 10 x 9 x 6 x 3 x 3 = 48,600 identities.

Held-out rule: an identity is held out when the SHA-256 of its appearance key (the key without
the size class), read as an integer, is divisible by 10: about 10% of the space. Size is left
out so that a held-out look is never seen in training at another size. The rule depends on
nothing but the tuple, so every tool (renderer, dataset writer, metrics) agrees on it without
sharing a list.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

from ..errors import InputError

SHAPES = ("circle", "square", "triangle", "star", "diamond", "heart", "hexagon", "cross", "moon", "flower")

# Saturated subject colours; backgrounds use a separate pastel/dark palette so subjects stand out.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 135, 20),
    "yellow": (245, 210, 30),
    "green": (40, 165, 60),
    "teal": (20, 165, 165),
    "blue": (40, 85, 220),
    "purple": (135, 55, 200),
    "pink": (240, 105, 180),
    "white": (248, 248, 248),
    "black": (30, 30, 30),
}

PATTERNS = ("plain", "striped", "spotted", "checkered", "two-tone", "ringed")
# How a description names the pattern drawn in color2: "a blue star with orange stripes".
PATTERN_NOUNS = {
    "plain": "outline",
    "striped": "stripes",
    "spotted": "spots",
    "checkered": "checks",
    "two-tone": "top",
    "ringed": "rings",
}
MARKINGS = ("none", "dot", "eyes")
SIZES: dict[str, float] = {"small": 0.30, "medium": 0.38, "large": 0.46}  # diameter / short side

HELDOUT_MODULUS = 10


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class Identity:
    shape: str
    color: str
    color2: str
    pattern: str
    marking: str
    size: str

    def __post_init__(self):
        for field, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("color", self.color, COLORS),
            ("color2", self.color2, COLORS),
            ("pattern", self.pattern, PATTERNS),
            ("marking", self.marking, MARKINGS),
            ("size", self.size, SIZES),
        ):
            if value not in allowed:
                raise InputError(f"unknown identity {field} {value!r}; choose one of {', '.join(allowed)}")
        if self.color == self.color2:
            raise InputError(f"an identity needs two different colours; got {self.color!r} twice")

    @property
    def key(self) -> str:
        """Stable string id, e.g. 'star|blue|orange|striped|dot|large'."""
        return "|".join((self.shape, self.color, self.color2, self.pattern, self.marking, self.size))

    @classmethod
    def from_key(cls, key: str) -> Identity:
        parts = key.split("|")
        if len(parts) != 6:
            raise InputError(f"identity key {key!r} must have 6 '|'-separated fields (shape|color|color2|pattern|marking|size)")
        return cls(*parts)

    @property
    def appearance_key(self) -> str:
        """The key without the size class: 'star|blue|orange|striped|dot'."""
        return self.key.rsplit("|", 1)[0]

    @cached_property
    def is_heldout(self) -> bool:
        digest = hashlib.sha256(self.appearance_key.encode()).hexdigest()
        return int(digest, 16) % HELDOUT_MODULUS == 0

    @property
    def name(self) -> str:
        """Short name: 'a blue striped star' ('a blue star' when plain)."""
        words = [self.color] + ([] if self.pattern == "plain" else [self.pattern]) + [self.shape]
        return f"{_article(words[0])} {' '.join(words)}"

    @property
    def ref_name(self) -> str:
        """Binding used inside the Video line: 'the blue star'."""
        return f"the {self.color} {self.shape}"

    @property
    def marking_color(self) -> str:
        # a dot must contrast with the body it sits on
        return "black" if self.color in ("white", "yellow") else "white"

    @property
    def marking_phrase(self) -> str:
        if self.marking == "dot":
            return f"a {self.marking_color} dot"
        if self.marking == "eyes":
            return "two eyes"
        return ""

    @property
    def description(self) -> str:
        """Full description for a 'Ref k:' line: 'a large blue star with orange stripes and a white dot'."""
        noun = PATTERN_NOUNS[self.pattern]
        art = f"{_article(self.color2)} " if noun in ("outline", "top") else ""
        text = f"{_article(self.size)} {self.size} {self.color} {self.shape} with {art}{self.color2} {noun}"
        if self.marking != "none":
            text += f" and {self.marking_phrase}"
        return text

    @property
    def rotation_visible(self) -> bool:
        """False for sprites that look the same at every angle (a spin of them would be invisible)."""
        return not (self.shape == "circle" and self.pattern in ("plain", "ringed") and self.marking != "eyes")

    @property
    def default_scale(self) -> float:
        return SIZES[self.size]

    def to_dict(self) -> dict:
        return asdict(self)


_AXES = (SHAPES, tuple(COLORS), tuple(COLORS), PATTERNS, MARKINGS, tuple(SIZES))
_N_COLOR = len(COLORS)


def identity_count() -> int:
    """Number of distinct identities (colour pairs exclude equal colours)."""
    return len(SHAPES) * _N_COLOR * (_N_COLOR - 1) * len(PATTERNS) * len(MARKINGS) * len(SIZES)


def identity_from_index(index: int) -> Identity:
    """The index-th identity of a fixed enumeration of the whole space (0 <= index < identity_count())."""
    if not 0 <= index < identity_count():
        raise InputError(f"identity index {index} out of range [0, {identity_count()})")
    index, size = divmod(index, len(SIZES))
    index, marking = divmod(index, len(MARKINGS))
    index, pattern = divmod(index, len(PATTERNS))
    index, c2 = divmod(index, _N_COLOR - 1)
    shape, c1 = divmod(index, _N_COLOR)
    colors = tuple(COLORS)
    color2 = [c for c in colors if c != colors[c1]][c2]
    return Identity(SHAPES[shape], colors[c1], color2, PATTERNS[pattern], MARKINGS[marking], tuple(SIZES)[size])


def all_identities() -> list[Identity]:
    return [identity_from_index(i) for i in range(identity_count())]


def sample_identity(
    rng: np.random.Generator,
    split: str = "train",
    *,
    shapes=None,
    colors=None,
    colors2=None,
    patterns=None,
    markings=None,
    sizes=None,
    max_tries: int = 1000,
) -> Identity:
    """Draw an identity uniformly from the (optionally restricted) space, on the given split.

    split: "train" never returns a held-out identity, "heldout" returns only held-out ones,
    "any" returns either. The restrictions (e.g. shapes=("circle", "star")) allow curricula.
    colors= restricts the body colour; the second colour (pattern and outline) is drawn from
    colors2= (default: every colour), since an identity needs two different colours and a
    single body colour (colors=["red"]) must still draw.
    """
    if split not in ("train", "heldout", "any"):
        raise InputError(f"split must be 'train', 'heldout' or 'any'; got {split!r}")
    restrict = (shapes, colors, colors2, patterns, markings, sizes)
    for name, values, allowed in zip(("shapes", "colors", "colors2", "patterns", "markings", "sizes"), restrict, _AXES):
        unknown = [v for v in (values or ()) if v not in allowed]
        if unknown or (values is not None and not len(values)):
            raise InputError(f"{name}={list(values)!r}: give one or more of {', '.join(allowed)}")
    axes = [tuple(a) if a is not None else d for a, d in zip(restrict, _AXES)]
    if len(axes[1]) == 1 and axes[2] == axes[1]:
        raise InputError(f"colors={list(axes[1])} and colors2={list(axes[2])} leave no pair of different colours; "
                         "widen colors2 (or leave it out)")
    for _ in range(max_tries):
        pick = [a[rng.integers(len(a))] for a in axes]
        if pick[1] == pick[2]:
            continue
        ident = Identity(*pick)
        if split == "any" or ident.is_heldout == (split == "heldout"):
            return ident
    raise InputError(
        f"found no {split} identity in {max_tries} draws from the restricted space; widen the restriction"
    )
