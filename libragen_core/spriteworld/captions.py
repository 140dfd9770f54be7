"""Captions for SpriteWorld scenes: LibraGen's training format, user-style phrasings, vocabulary.

Training caption (one "Ref k:" line per subject, subjects[k-1], then one "Video:" line):

    Ref 1: a large blue star with orange stripes and a white dot.
    Ref 2: a medium red circle with a yellow outline and two eyes.
    Video: Ref 1[the blue star] zig-zags to the right while Ref 2[the red circle] spins clockwise on a sunny yellow gradient with a tree; the camera pans left; the light dims.

Grammar of the Video line:  CLAUSE (" while " CLAUSE (" and " CLAUSE)*)? " on " BACKGROUND
(" with " PROP (" and " PROP)?)? ("; " OCCLUDER)? ("; " CAMERA)? ("; " LIGHT)? "."
where a CLAUSE is a bound subject followed by its motion's canonical phrase, or an interaction
("Ref 2[..] chases Ref 1[..] to the right", "Ref 1[..] and Ref 2[..] swap places").

User-style phrasings come from TEMPLATES; the ones marked held out are never used for
training (the prompt rewriter must bridge them). caption_vocabulary() exports all of it as data;
text_vocabulary() is the small text encoder's token list for it (plus the rewriter's outputs).
"""
from __future__ import annotations

import re

import numpy as np

from ..conditioning.captions import (  # noqa: F401  (the format lives in conditioning; re-exported)
    UNLABELED_BINDING,
    UNLABELED_REF,
    ParsedCaption,
    anonymous_caption,
    parse_caption,
)
from ..errors import InputError
from .identity import COLORS, MARKINGS, PATTERN_NOUNS, PATTERNS, SHAPES, SIZES
from .motions import DIRECTION_PHRASES, INTERACTIONS, MOTIONS, SINGLE_MOTIONS
from .scene import BACKGROUND_KINDS, BG_COLORS, CAMERA_PANS, LIGHT_CHANGES, OCCLUDERS, PROPS, Scene

BACKGROUND_PHRASES = {
    "plain": "a plain {color} background",
    "gradient": "a {color} gradient",
    "checkered": "a {color} checkered floor",
    "striped": "a {color} striped wall",
    "speckled": "a speckled {color} background",
}
OCCLUDER_PHRASES = {"pillar": "a stone pillar stands in front", "bush": "a bush stands in front"}
CAMERA_PHRASES = {p: f"the camera pans {p}" for p in CAMERA_PANS}
LIGHT_PHRASES = {"dims": "the light dims", "brightens": "the light brightens"}

# (template, held_out). Fields: imp "the star zig-zag left", should, third, ing, to, tail.
TEMPLATES: tuple[tuple[str, bool], ...] = (
    ("make {imp}", False),
    ("{should}", False),
    ("a video where {third}", False),
    ("show {ing}", False),
    ("{third}", False),
    ("{third}{tail}", False),
    ("animate {ing}{tail}", False),
    ("let {imp}", False),
    ("{ing}{tail}", False),
    ("I want {to}{tail}", True),
    ("can you make it so {third}?", True),
    ("please have {imp}", True),
)
TRAIN_TEMPLATES = tuple(t for t, held in TEMPLATES if not held)
HELDOUT_TEMPLATES = tuple(t for t, held in TEMPLATES if held)


def bind(scene: Scene, k: int) -> str:
    return f"Ref {k + 1}[{scene.subjects[k].identity.ref_name}]"


def background_phrase(scene: Scene) -> str:
    bg = scene.background
    text = BACKGROUND_PHRASES[bg.kind].format(color=bg.color)
    if bg.props:
        text += " with " + " and ".join(f"a {p.kind}" for p in bg.props)
    return text


def _groups(scene: Scene) -> list[tuple[str, tuple[int, ...]]]:
    """Motion groups in caption order: the interaction first, then every other subject."""
    groups = []
    taken: set[int] = set()
    if scene.interaction is not None:
        groups.append((scene.interaction.kind, tuple(scene.interaction.subjects)))
        taken.update(scene.interaction.subjects)
    groups += [(s.motion, (k,)) for k, s in enumerate(scene.subjects) if k not in taken]
    return groups


def _chase_direction(scene: Scene, leader: int) -> str:
    motion = scene.subjects[leader].motion
    return DIRECTION_PHRASES[motion[5:]] if motion.startswith("move_") else ""


def _join(parts: list[str], first: str = " while ") -> str:
    if len(parts) == 1:
        return parts[0]
    return parts[0] + first + " and ".join(parts[1:])


def video_line(scene: Scene) -> str:
    clauses = []
    for kind, ks in _groups(scene):
        if kind == "chase":
            a, b = ks
            tail = _chase_direction(scene, a)
            clauses.append(f"{bind(scene, b)} chases {bind(scene, a)}" + (f" {tail}" if tail else ""))
        elif kind in INTERACTIONS:
            clauses.append(f"{bind(scene, ks[0])} and {bind(scene, ks[1])} {MOTIONS[kind].third}")
        else:
            clauses.append(f"{bind(scene, ks[0])} {MOTIONS[kind].third}")
    text = f"Video: {_join(clauses)} on {background_phrase(scene)}"
    if scene.occluder is not None:
        text += f"; {OCCLUDER_PHRASES[scene.occluder.kind]}"
    if scene.camera.pan:
        text += f"; {CAMERA_PHRASES[scene.camera.pan]}"
    if scene.light.change:
        text += f"; {LIGHT_PHRASES[scene.light.change]}"
    return text + "."


def ref_lines(scene: Scene) -> list[str]:
    return [f"Ref {k + 1}: {s.identity.description}." for k, s in enumerate(scene.subjects)]


def scene_caption(scene: Scene) -> str:
    """The training caption: 'Ref k:' lines then the 'Video:' line, joined by newlines."""
    return "\n".join(ref_lines(scene) + [video_line(scene)])


def _facts_patterns():
    bind = r"Ref (\d+)\[[^\[\]]+\]"
    singles = sorted(((MOTIONS[m].third, m) for m in SINGLE_MOTIONS), key=lambda p: -len(p[0]))
    dirs = sorted(DIRECTION_PHRASES.items(), key=lambda p: -len(p[1]))
    pair = re.compile(rf"{bind} and {bind} (swap places|meet in the middle)")
    chase = re.compile(rf"{bind} chases {bind}(?: ({'|'.join(re.escape(p) for _, p in dirs)}))?(?= while | and |$)")
    single = re.compile(rf"{bind} ({'|'.join(re.escape(p) for p, _ in singles)})(?= while | and |$)")
    return pair, chase, single, {p: m for p, m in singles}, {p: d for d, p in dirs}


_PAIR, _CHASE, _SINGLE, _PHRASE_TO_MOTION, _PHRASE_TO_DIRECTION = _facts_patterns()
_BACKGROUNDS = {BACKGROUND_PHRASES[k].format(color=c): (k, c) for k in BACKGROUND_KINDS for c in BG_COLORS}


def caption_facts(caption: str) -> dict:
    """What a caption says, as data: the inverse of scene_caption for its closed grammar.

    Returns {"motions": {k: motion name}, "interaction": {"kind", "subjects": [a, b]} or None,
    "background": {"kind", "color", "props"}, "occluder", "camera", "light"} (k is the Ref
    number minus 1, i.e. the subject index; chase gives the leader its move_* motion and the
    chaser "chase"). Raises InputError for text outside the grammar, so a rewriter's output can
    be checked against it.
    """
    parsed = parse_caption(caption)
    text = parsed.video.rstrip(".")
    head, *extras = text.split("; ")
    if " on " not in head:
        raise InputError(f"the Video line has no ' on <background>' part: {parsed.video!r}")
    clauses, bg_text = head.split(" on ", 1)
    facts: dict = {"motions": {}, "interaction": None, "occluder": None, "camera": None, "light": None}
    pos = 0
    while pos < len(clauses):
        if m := _PAIR.match(clauses, pos):
            a, b = int(m.group(1)) - 1, int(m.group(2)) - 1
            kind = "swap" if m.group(3) == "swap places" else "meet"
            facts["motions"][a] = facts["motions"][b] = kind
            facts["interaction"] = {"kind": kind, "subjects": [a, b]}
        elif m := _CHASE.match(clauses, pos):
            chaser, leader = int(m.group(1)) - 1, int(m.group(2)) - 1
            facts["motions"][chaser] = "chase"
            if m.group(3):
                facts["motions"][leader] = "move_" + _PHRASE_TO_DIRECTION[m.group(3)]
            facts["interaction"] = {"kind": "chase", "subjects": [leader, chaser]}
        elif m := _SINGLE.match(clauses, pos):
            facts["motions"][int(m.group(1)) - 1] = _PHRASE_TO_MOTION[m.group(2)]
        else:
            raise InputError(f"cannot read the clause at {clauses[pos:]!r}; it is outside the caption grammar")
        pos = m.end()
        for sep in (" while ", " and "):
            if clauses.startswith(sep, pos):
                pos += len(sep)
                break
    bg_phrase, _, props = bg_text.partition(" with ")
    if bg_phrase not in _BACKGROUNDS:
        raise InputError(f"unknown background {bg_phrase!r}")
    kind, color = _BACKGROUNDS[bg_phrase]
    facts["background"] = {"kind": kind, "color": color, "props": [p.removeprefix("a ") for p in props.split(" and ")] if props else []}
    lookups = {"occluder": OCCLUDER_PHRASES, "camera": CAMERA_PHRASES, "light": LIGHT_PHRASES}
    for extra in extras:
        for key, table in lookups.items():
            hit = [k for k, phrase in table.items() if phrase == extra]
            if hit:
                facts[key] = hit[0]
                break
        else:
            raise InputError(f"unknown Video-line part {extra!r}")
    return facts


# ----------------------------------------------------------------------------------------------
# user-style phrasings

_THIRD = {"go": "goes", "do": "does"}
_ING = {"run": "running", "hop": "hopping", "get": "getting", "zigzag": "zigzagging", "zig-zag": "zig-zagging",
        "swap": "swapping", "spin": "spinning", "snake": "snaking", "come": "coming"}


def conjugate(phrase: str) -> tuple[str, str]:
    """(third person singular, -ing form) of a verb phrase whose first word is the verb."""
    verb, _, rest = phrase.partition(" ")
    if verb in _THIRD:
        third = _THIRD[verb]
    elif verb.endswith(("s", "sh", "ch", "x")):
        third = verb + "es"
    else:
        third = verb + "s"
    if verb in _ING:
        ing = _ING[verb]
    elif verb.endswith("e") and not verb.endswith("ee"):
        ing = verb[:-1] + "ing"
    else:
        ing = verb + "ing"
    tail = f" {rest}" if rest else ""
    return third + tail, ing + tail


def _subject_names(scene: Scene, k: int) -> list[str]:
    ident = scene.subjects[k].identity
    others = [s.identity for j, s in enumerate(scene.subjects) if j != k]
    names = [ident.ref_name, "the " + ident.name.split(" ", 1)[1]]
    if all(o.shape != ident.shape for o in others):
        names.append(f"the {ident.shape}")
    if all(o.color != ident.color for o in others):
        names.append(f"the {ident.color} one")
    return names


def _group_forms(scene: Scene, kind: str, ks, rng: np.random.Generator) -> dict[str, str]:
    name = [str(rng.choice(_subject_names(scene, k))) for k in ks]
    info = MOTIONS[kind]
    canonical = rng.random() < 0.4
    if kind == "chase":
        a, b = name
        verb = "chase" if canonical else str(rng.choice(info.synonyms))
        tail = _chase_direction(scene, ks[0])
        obj = f" {a}" + (f" {tail}" if tail else "")
        third, ing = conjugate(verb)
        return {"imp": f"{b} {verb}{obj}", "should": f"{b} should {verb}{obj}", "third": f"{b} {third}{obj}",
                "ing": f"{b} {ing}{obj}", "to": f"{b} to {verb}{obj}"}
    if kind in INTERACTIONS:
        both = f"{name[0]} and {name[1]}"
        verb = info.base if canonical else str(rng.choice(info.synonyms))
        _, ing = conjugate(verb)
        return {"imp": f"{both} {verb}", "should": f"{both} should {verb}", "third": f"{both} {verb}",
                "ing": f"{both} {ing}", "to": f"{both} to {verb}"}
    verb = info.base if canonical else str(rng.choice(info.synonyms))
    third, ing = conjugate(verb)
    (n,) = name
    return {"imp": f"{n} {verb}", "should": f"{n} should {verb}", "third": f"{n} {third}", "ing": f"{n} {ing}",
            "to": f"{n} to {verb}"}


def _user_tail(scene: Scene, rng: np.random.Generator) -> str:
    options = ["", f" on {background_phrase(scene)}", f" in front of {BACKGROUND_PHRASES[scene.background.kind].format(color=scene.background.color)}"]
    tail = str(rng.choice(options))
    if scene.camera.pan:
        tail += f", camera panning {scene.camera.pan}"
    if scene.light.change:
        tail += f", {LIGHT_PHRASES[scene.light.change]}"
    return tail


def user_prompts(scene: Scene, split: str = "train") -> list[str]:
    """One user-style phrasing per template of the split ("train" or "heldout"); deterministic per scene."""
    if split not in ("train", "heldout"):
        raise InputError(f"split must be 'train' or 'heldout'; got {split!r}")
    templates = TRAIN_TEMPLATES if split == "train" else HELDOUT_TEMPLATES
    out = []
    for i, template in enumerate(templates):
        rng = np.random.default_rng([scene.seed, i, split == "heldout"])
        forms = [_group_forms(scene, kind, ks, rng) for kind, ks in _groups(scene)]
        fields = {f: " and ".join(g[f] for g in forms) for f in ("imp", "should", "third", "ing", "to")}
        fields["tail"] = _user_tail(scene, rng)
        out.append(template.format(**fields))
    return out


# ----------------------------------------------------------------------------------------------
# vocabulary


def caption_vocabulary() -> dict:
    """Everything the caption language uses, as plain data (for the text encoder and rewriter)."""
    vocab = {
        "shapes": list(SHAPES),
        "colors": list(COLORS),
        "patterns": list(PATTERNS),
        "pattern_nouns": dict(PATTERN_NOUNS),
        "markings": list(MARKINGS),
        "marking_phrases": {"dot": ["a white dot", "a black dot"], "eyes": ["two eyes"]},
        "sizes": list(SIZES),
        "motions": {m: MOTIONS[m].third for m in SINGLE_MOTIONS},
        "motion_forms": {m: {"base": i.base, "third": i.third, "ing": i.ing, "synonyms": list(i.synonyms)} for m, i in MOTIONS.items()},
        "motion_verbs": sorted({f.split(" ")[0] for i in MOTIONS.values() for f in (i.base, *i.synonyms)}),
        "interactions": {k: MOTIONS[k].third for k in INTERACTIONS},
        "directions": dict(DIRECTION_PHRASES),
        "background_colors": list(BG_COLORS),
        "background_kinds": {k: BACKGROUND_PHRASES[k] for k in BACKGROUND_KINDS},
        "props": list(PROPS),
        "occluders": {k: OCCLUDER_PHRASES[k] for k in OCCLUDERS},
        "camera": {k: CAMERA_PHRASES[k] for k in CAMERA_PANS},
        "light": {k: LIGHT_PHRASES[k] for k in LIGHT_CHANGES},
        "templates": {"train": list(TRAIN_TEMPLATES), "heldout": list(HELDOUT_TEMPLATES)},
    }
    words: set[str] = {"ref", "video", "with", "and", "a", "an", "the", "on", "while", "in", "one", "should",
                       "make", "show", "let", "animate", "where", "of", "front", "panning", "camera", "it", "so",
                       "i", "want", "can", "you", "please", "have", "to"}

    def collect(x):
        if isinstance(x, dict):
            for v in x.values():
                collect(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                collect(v)
        elif isinstance(x, str) and x != "none":
            words.update(re.findall(r"[a-z][a-z-]*", re.sub(r"\{\w+\}", " ", x).lower()))

    collect({k: v for k, v in vocab.items() if k != "templates"})
    for _, ing in (conjugate(s) for i in MOTIONS.values() for s in i.synonyms):
        words.update(re.findall(r"[a-z][a-z-]*", ing))
    for third, _ in (conjugate(s) for i in MOTIONS.values() for s in i.synonyms):
        words.update(re.findall(r"[a-z][a-z-]*", third))
    vocab["words"] = sorted(words)
    return vocab


# Characters the caption language and the rewriter write between words: the Ref lines' ':' and
# '.', the bindings' brackets, the user phrasings' ',' and '?', hyphenated words ("zig-zags" is
# zig - zags to the tokenizer), and the parentheses the rewriter puts for brackets in a label.
PUNCTUATION = tuple(".,:;[]?!-'()\"")
# The Ref numbers (MAX_SUBJECTS is 4) and "reference image k" need the digits; \w+ keeps a
# number whole, so 0-9 cover every k below 10.
DIGITS = tuple("0123456789")
_REWRITER_SECTIONS = ("subjects", "motions", "directions", "direction_canonical", "turns", "backgrounds", "props",
                      "default_background", "camera", "light", "occluders", "examples")


def text_vocabulary() -> list[str]:
    """Every token of every caption the project writes, as the small text encoder splits them.

    The tokens of caption_vocabulary() (every phrase of the grammar, the user templates' fixed
    words, the anonymous form), the SpriteWorld style guide's phrases (what the prompt rewriter
    writes and the user words it accepts), digits and punctuation. A model trained with the
    older word list (the shipped libragen-sprite: no digits, punctuation or hyphen pieces) keeps
    its own list in its text.vocab.json; this one is for new trainings.
    """
    from ..models.text_small import WordTokenizer
    from ..rewrite.style_guide import spriteworld_style_guide

    tokens: set[str] = set(PUNCTUATION) | set(DIGITS)

    def collect(x):
        if isinstance(x, dict):  # keys are names (move_left) or repeat a phrase listed in their value
            for v in x.values():
                collect(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                collect(v)
        elif isinstance(x, str):
            tokens.update(WordTokenizer.split(re.sub(r"\{\w+\}", " ", x)))

    vocab = caption_vocabulary()
    collect(vocab)
    collect([UNLABELED_REF, UNLABELED_BINDING, "Ref", "Video"])
    collect([conjugate(s) for i in MOTIONS.values() for s in (i.base, *i.synonyms)])
    guide = spriteworld_style_guide().data
    collect({k: guide[k] for k in _REWRITER_SECTIONS if k in guide})
    return sorted(tokens)
