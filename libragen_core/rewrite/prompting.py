"""What the LLM backends send: our system prompt (the format + the style guide) and the user turn,
and how their answer is read back (the first "Video:" line, validated)."""
from __future__ import annotations

from collections.abc import Sequence

from ..errors import InputError
from .base import BackendError, Rewrite, assemble
from .style_guide import StyleGuide

MAX_LIST = 40


def _listing(values, limit: int = MAX_LIST) -> str:
    values = list(values)
    more = f" (and {len(values) - limit} more)" if len(values) > limit else ""
    return "; ".join(values[:limit]) + more


def system_prompt(guide: StyleGuide) -> str:
    d = guide.data
    lines = [
        "You rewrite a user's video request into the caption style a subject-to-video model was trained on.",
        "The references are already described as 'Ref k:' lines. Answer with exactly ONE line that starts with "
        "'Video: ' and nothing else: no explanations, no quotes, no Ref lines.",
        "In the Video line, name every reference at least once as Ref k[short name], e.g. Ref 1[the dog]; use "
        "square brackets only for that.",
        "Say what each subject does (motion), where (scene) and how the camera moves, in plain present tense.",
    ]
    if guide.closed:
        lines.append("The model only knows the phrases below: use them verbatim, one motion per subject.")
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
    else:
        lines.append("Keep the user's own verbs, places and details; do not invent subjects.")
    for key, title in (("camera", "Camera phrases"), ("light", "Light phrases")):
        if d.get(key):
            lines.append(f"{title}: " + _listing(d[key]))
    for ex in d.get("examples", [])[:2]:
        lines.append(f"Example. References: {ex['labels']}. Request: {ex['prompt']!r}. Answer: "
                     f"{ex['rewrite'].splitlines()[-1]}")
    return "\n".join(lines)


def user_message(labels: Sequence[str], ref_lines: Sequence[str], prompt: str) -> str:
    refs = "\n".join(f"{line} (label: {lb or 'none'})" for line, lb in zip(ref_lines, labels)) or "(no references)"
    return f"References:\n{refs}\nRequest: {prompt}\nAnswer with the Video line only."


def read_answer(text: str, ref_lines: Sequence[str], guide: StyleGuide, backend: str,
                warnings: Sequence[str] = ()) -> Rewrite:
    """The first 'Video:' line of a model's answer, checked against the format (and a closed grammar)."""
    if not isinstance(text, str) or not text.strip():
        raise BackendError(f"the {backend} backend answered with empty text")
    video = next((ln.strip().strip("`\"'") for ln in text.splitlines() if ln.strip().strip("`\"'").startswith(
        "Video: ")), None)
    if video is None:
        raise BackendError(f"the {backend} backend's answer has no 'Video: ' line (starts {text.strip()[:60]!r})")
    try:
        result = assemble(ref_lines, video, backend, warnings)
        if guide.closed and guide.name == "spriteworld":
            from ..spriteworld.captions import caption_facts

            caption_facts(result.prompt)
    except InputError as e:
        raise BackendError(f"the {backend} backend's answer is not a valid LibraGen prompt: {e}") from e
    return result
