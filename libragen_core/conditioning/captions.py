"""LibraGen's caption format, which training captions and rewritten prompts share:

    Ref 1: <what subject 1 looks like>.
    Ref 2: <what subject 2 looks like>.
    Video: Ref 1[<short name>] <does something> while Ref 2[<short name>] <...> <scene>.

One "Ref k:" line per reference image (k = 1, 2, ... in the order of the references), then one
"Video:" line in which every subject appears bound as "Ref k[name]". A caption written on one
line ("Ref 1: a dog. Video: Ref 1[the dog] runs.") reads the same: `caption_lines` puts each
part on its own line (the umT5 prompt cleaning collapses the difference anyway).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InputError


@dataclass
class ParsedCaption:
    refs: dict[int, str]  # k -> description (without the final period)
    video: str  # the Video line's text after "Video: "
    bindings: list[tuple[int, str]]  # (k, bound phrase) in order of appearance


_REF_LINE = re.compile(r"^Ref (\d+): (.+?)\.?$")
_BINDING = re.compile(r"Ref (\d+)\[([^\[\]]+)\]")
_PART_START = re.compile(r"\s+(?=Ref \d+: |Video: )")


def caption_lines(text: str) -> str:
    """The caption with every 'Ref k:' part and the 'Video:' part on a line of its own."""
    return "\n".join(ln.strip() for ln in _PART_START.sub("\n", text.strip()).splitlines() if ln.strip())


def parse_caption(text: str) -> ParsedCaption:
    """Parse a LibraGen caption; raises InputError naming what is malformed."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines or not lines[-1].startswith("Video: "):
        raise InputError("a caption must end with a 'Video: ...' line")
    refs: dict[int, str] = {}
    for ln in lines[:-1]:
        m = _REF_LINE.match(ln)
        if not m:
            raise InputError(f"caption line {ln!r} is neither 'Ref k: ...' nor the Video line")
        refs[int(m.group(1))] = m.group(2)
    if sorted(refs) != list(range(1, len(refs) + 1)):
        raise InputError(f"Ref lines must be numbered 1..{len(refs)}; got {sorted(refs)}")
    video = lines[-1][len("Video: "):]
    bindings = [(int(k), phrase) for k, phrase in _BINDING.findall(video)]
    for k, _ in bindings:
        if k not in refs:
            raise InputError(f"the Video line binds Ref {k}, which has no 'Ref {k}:' line")
    unbound = set(refs) - {k for k, _ in bindings}
    if unbound:
        raise InputError(f"Ref {sorted(unbound)} never appear as Ref k[...] in the Video line")
    return ParsedCaption(refs, video, bindings)


UNLABELED_REF = "the subject in reference image {k}"  # what the rewriter writes for a reference it cannot describe
UNLABELED_BINDING = "the subject"


def anonymous_caption(text: str) -> str:
    """The caption with every subject's looks taken out, as the rewriter writes unlabelled references.

    'Ref k: <description>.' becomes 'Ref k: the subject in reference image k.' and 'Ref k[<name>]'
    becomes 'Ref k[the subject]'; motion, scene, camera and light stay. Only the reference images
    then say what the subjects look like.
    """
    parsed = parse_caption(text)
    lines = [f"Ref {k}: {UNLABELED_REF.format(k=k)}." for k in sorted(parsed.refs)]
    video = _BINDING.sub(lambda m: f"Ref {m.group(1)}[{UNLABELED_BINDING}]", parsed.video)
    return "\n".join(lines + [f"Video: {video}"])
