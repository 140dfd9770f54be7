"""What the LLM backends send: our system prompt (the chosen family's style guide) and the user turn,
and how their answer is read back and checked.

The system prompt is the guide's own instructions, then (closed guides) its canonical phrases,
its camera phrases and an example. The answer must be in the guide's format: one "Video:" line
binding every reference (Ref styles; SpriteWorld's must also parse as its caption grammar), or one
paragraph of plain prose that names every subject (phantom). Anything else raises BackendError,
and rewrite() falls back to the offline rewrite with a warning.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import InputError
from .base import BackendError, Rewrite, assemble, assemble_prose
from .style_guide import StyleGuide

MAX_LIST = 40


def _listing(values, limit: int = MAX_LIST) -> str:
    values = list(values)
    more = f" (and {len(values) - limit} more)" if len(values) > limit else ""
    return "; ".join(values[:limit]) + more


def system_prompt(guide: StyleGuide) -> str:
    d = guide.data
    if guide.output == "prose":
        lines = ["You rewrite a user's video request into the prompt style a subject-to-video model was trained "
                 "on: plain, detailed prose."]
    else:
        lines = ["You rewrite a user's video request into the caption style a subject-to-video model was trained "
                 "on."]
    lines += list(d.get("instructions") or [])
    if guide.closed:
        motions = []
        for name, info in d.get("motions", {}).items():
            if info.get("interaction") == "chase":
                motions.append(f"{name}: 'Ref 2[..] {info['canonical']} Ref 1[..] <Ref 1's direction, e.g. to the "
                               "left>'")
            elif info.get("interaction"):
                motions.append(f"{name}: 'Ref 1[..] and Ref 2[..] {info['canonical']}'")
            else:
                motions.append(f"{name}: '{info['canonical']}'")
        lines.append("Motions: " + _listing(motions))
        if d.get("backgrounds"):
            lines.append("Backgrounds (after ' on '): " + _listing(d["backgrounds"], 100))
        if d.get("props"):
            lines.append("Props (after the background, ' with a tree and a rock'): " + ", ".join(d["props"]))
        first, rest = d.get("clause_join", [" while ", " and "])
        lines.append(f"Order: clauses joined by '{first.strip()}' then '{rest.strip()}', then ' on <background>', "
                     "then '; <occluder>', '; <camera>', '; <light>', and a final period.")
    for key, title in (("camera", "Camera phrases"), ("light", "Light phrases")):
        if d.get(key):
            lines.append(f"{title}: " + _listing(d[key]))
    for ex in d.get("examples", [])[:2]:
        answer = ex["rewrite"] if guide.output == "prose" else ex["rewrite"].splitlines()[-1]
        lines.append(f"Example. References: {ex['labels']}. Request: {ex['prompt']!r}. Answer: {answer}")
    return "\n".join(lines)


def user_message(labels: Sequence[str], ref_lines: Sequence[str], prompt: str) -> str:
    refs = "\n".join(f"{line} (label: {lb or 'none'})" for line, lb in zip(ref_lines, labels)) or "(no references)"
    return f"References:\n{refs}\nRequest: {prompt}\nAnswer with the rewritten prompt only, in the format above."


def _prose_of(text: str) -> str:
    """The answer's first paragraph (models sometimes add notes after a blank line), unquoted."""
    lines = [ln.strip().strip("`\"'") for ln in text.strip().splitlines() if not ln.strip().startswith("```")]
    first = []
    for ln in lines:
        if not ln and first:
            break
        if ln:
            first.append(ln)
    body = " ".join(first)
    return re.sub(r"^(?:prompt|answer|rewritten prompt|output)\s*:\s*", "", body, flags=re.IGNORECASE).strip()


def read_answer(text: str, ref_lines: Sequence[str], guide: StyleGuide, backend: str,
                warnings: Sequence[str] = ()) -> Rewrite:
    """The model's answer checked against the guide's format (module doc)."""
    if not isinstance(text, str) or not text.strip():
        raise BackendError(f"the {backend} backend answered with empty text")
    if guide.output == "prose":
        try:
            return assemble_prose(_prose_of(text), ref_lines, backend, warnings, style=guide.name)
        except InputError as e:
            raise BackendError(f"the {backend} backend's answer is not valid {guide.name} prose: {e}") from e
    video = next((ln.strip().strip("`\"'") for ln in text.splitlines() if ln.strip().strip("`\"'").startswith(
        "Video: ")), None)
    if video is None:
        raise BackendError(f"the {backend} backend's answer has no 'Video: ' line (starts {text.strip()[:60]!r})")
    try:
        result = assemble(ref_lines, video, backend, warnings, style=guide.name)
        if guide.closed and guide.name == "spriteworld":
            from ..spriteworld.captions import caption_facts

            caption_facts(result.prompt)
    except InputError as e:
        raise BackendError(f"the {backend} backend's answer is not a valid LibraGen prompt: {e}") from e
    return result
