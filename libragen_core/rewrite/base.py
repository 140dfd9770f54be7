"""The prompt rewriter's interface (docs/method.md section 2): labels + user prompt -> LibraGen prompt.

Stage 1 writes one "Ref k:" line per reference (from its label, or from a captioning backend);
stage 2 rewrites the user's prompt into the training caption style with explicit `Ref k[...]`
bindings. Every backend returns a `Rewrite`; a backend that fails or answers outside the format
hands over to the offline backend and says so in `warnings` (never silently).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import InputError
from ..spriteworld.captions import parse_caption

MAX_SUBJECTS = 4
MAX_PROMPT_CHARS = 4000


@dataclass(frozen=True)
class Rewrite:
    prompt: str  # "Ref 1: ...\nRef 2: ...\nVideo: ..." (Ref styles) or one paragraph of prose (phantom)
    ref_lines: tuple[str, ...]  # empty for prose
    video_line: str  # the Video line (Ref styles) or the prose itself
    backend_used: str
    warnings: tuple[str, ...] = field(default_factory=tuple)
    style: str = ""  # the style guide written: phantom (plain prose), libragen or spriteworld (Ref lines)

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "ref_lines": list(self.ref_lines), "video_line": self.video_line,
                "backend_used": self.backend_used, "warnings": list(self.warnings), "style": self.style}

    @classmethod
    def from_dict(cls, data: dict) -> Rewrite:
        return cls(str(data["prompt"]), tuple(data["ref_lines"]), str(data["video_line"]), str(data["backend_used"]),
                   tuple(data.get("warnings", ())), str(data.get("style", "")))


class Backend(Protocol):
    """Stage 2 (and optionally stage 1). `name` and `model` identify it in caches and reports."""

    name: str
    model: str

    def rewrite(self, labels: Sequence[str], user_prompt: str, style_guide, ref_lines: Sequence[str]) -> Rewrite:
        ...


class Captioner(Protocol):
    """Stage 1 from pixels: one short description per reference image (uint8 [H, W, 3])."""

    name: str

    def describe(self, image, k: int, label: str) -> str:
        ...


class BackendError(InputError):
    """A rewriting backend could not produce a valid answer (unreachable, timed out, malformed)."""


def check_inputs(subject_labels, user_prompt, n_references: int | None = None) -> tuple[list[str], str]:
    """Labels as stripped strings (empty = unlabelled) and the prompt; InputError names what is wrong.

    Empty prompt: an error, because any default would invent a motion the user never asked for.
    """
    if isinstance(subject_labels, str):
        subject_labels = [subject_labels]
    labels = ["" if lb is None else lb for lb in (subject_labels or [])]
    bad = [i for i, lb in enumerate(labels) if not isinstance(lb, str)]
    if bad:
        raise InputError(f"subject label {bad[0] + 1} is a {type(labels[bad[0]]).__name__}, not text")
    labels = [" ".join(lb.split()) for lb in labels]
    if n_references is not None:
        if len(labels) > n_references:
            raise InputError(f"{len(labels)} labels were given for {n_references} reference images; give at most "
                             "one label per reference, in the same order (or add the missing references).")
        labels += [""] * (n_references - len(labels))
    if len(labels) > MAX_SUBJECTS:
        raise InputError(f"{len(labels)} subjects were given; LibraGen takes at most {MAX_SUBJECTS} references.")
    if not isinstance(user_prompt, str):
        raise InputError(f"the prompt must be text; got {type(user_prompt).__name__}")
    prompt = " ".join(user_prompt.split())
    if not prompt:
        raise InputError("the prompt is empty; describe what the subjects should do (e.g. 'the dog runs to the "
                         "left'), or pass a ready LibraGen prompt without rewriting.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(f"the prompt has {len(prompt)} characters; the rewriter takes at most {MAX_PROMPT_CHARS}.")
    return labels, prompt


def validate_prompt(text: str, n_subjects: int) -> tuple[tuple[str, ...], str]:
    """(ref lines, video line) of a LibraGen prompt with exactly one Ref line per subject, each bound."""
    parsed = parse_caption(text)  # raises InputError naming the defect
    if len(parsed.refs) != n_subjects:
        raise InputError(f"the prompt has {len(parsed.refs)} Ref lines for {n_subjects} subjects")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return tuple(lines[:-1]), lines[-1]


def assemble(ref_lines: Sequence[str], video_line: str, backend: str, warnings: Sequence[str] = (),
             style: str = "") -> Rewrite:
    prompt = "\n".join([*ref_lines, video_line])
    validate_prompt(prompt, len(ref_lines))
    return Rewrite(prompt, tuple(ref_lines), video_line, backend, tuple(warnings), style)


_REF_TOKEN = re.compile(r"\bRef\s*\d+\b|\[|\]|^\s*Video\s*:", re.IGNORECASE | re.MULTILINE)


def subject_heads(ref_lines: Sequence[str]) -> list[str]:
    """The head noun of each reference description ('dog' in 'a small white dog with a red collar')."""
    from .lexicon import label_head, label_words

    return [label_head(label_words(re.sub(r"^Ref \d+:\s*", "", line).rstrip("."))) for line in ref_lines]


def validate_prose(text: str, ref_lines: Sequence[str]) -> str:
    """One paragraph of plain prose that names every subject: no Ref lines, no brackets, no 'Video:'.
    A subject counts as named when its description's head noun (or its plural) is in the text."""
    from .lexicon import singular, words_of

    text = " ".join(text.split())
    if not text:
        raise InputError("the prose prompt is empty")
    if _REF_TOKEN.search(text):
        raise InputError("the prose prompt has Ref tags, brackets or a 'Video:' label; this style is plain prose")
    present: dict[str, int] = {}
    for w in words_of(text):
        present[w.text] = present.get(w.text, 0) + 1
        for form in singular(w.text):  # "two dogs" names every dog
            present[form] = len(ref_lines) + 1
    heads = subject_heads(ref_lines)
    missing = [k + 1 for k, h in enumerate(heads) if h and h.isascii() and present.get(h, 0) < heads.count(h)]
    if missing:
        raise InputError(f"the prose prompt never names subject(s) {missing} "
                         f"({', '.join(heads[k - 1] for k in missing)})")
    return text


def assemble_prose(text: str, ref_lines: Sequence[str], backend: str, warnings: Sequence[str] = (),
                   style: str = "phantom") -> Rewrite:
    prose = validate_prose(text, ref_lines)
    return Rewrite(prose, (), prose, backend, tuple(warnings), style)
