"""The offline rewriter: deterministic, no model. Reads the prompt (analysis.py), writes the guide's style.

Stage 1 (every guide): one description per reference, from its label, else from the first noun
phrase bound to it ("a dog"), else "the subject in reference image k".

Stage 2 depends on the guide's output:
- "ref" + closed (SpriteWorld): the scene parts the guide knows (background and props, occluder,
  camera pan, light) are taken out with their canonical phrases; every subject gets one motion
  from what the analysis read (interaction first, then subjects in Ref order), written in the
  caption grammar. Where the prompt states no motion, or states one the analysis cannot place
  (a verb without a direction it can find), the subject "stays still" and a warning quotes the
  user's words: nothing is invented.
- "ref" + open (libragen): the user's sentence is kept (case and script), requests become
  statements, the first mention of each subject (a name, a pronoun, "her dog") becomes
  `Ref k[...]`, and camera clauses move, in the user's words, to the end.
- "prose" (phantom): the same sentence with the first mention of each subject replaced by its
  reference description ("a woman in a yellow raincoat", "her small white dog"); no Ref lines,
  no brackets; camera clauses become their own sentence.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..spriteworld.captions import UNLABELED_BINDING, UNLABELED_REF
from .analysis import Evidence, Mention, Reader, Reading, direction_name, unit
from .base import Rewrite, assemble, assemble_prose
from .lexicon import label_words, lemma, lower_keep_length, understood
from .style_guide import StyleGuide

NAME = "offline"
_SHAPE_KINDS = ("grow", "shrink", "spin", "circle", "bounce")


def _alternation(forms) -> re.Pattern | None:
    forms = sorted({f.lower() for f in forms if f}, key=len, reverse=True)
    if not forms:
        return None
    return re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(f) for f in forms) + r")(?![\w-])")


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _sanitize_label(label: str) -> str:
    return label.replace("[", "(").replace("]", ")").strip().rstrip(".")


def _blank(text: str, start: int, end: int) -> str:
    return text[:start] + " " * (end - start) + text[end:]


def _drop_article(text: str) -> str:
    first, _, rest = text.partition(" ")
    return rest if first.lower() in ("a", "an", "the") and rest else text


def _capitalize(text: str) -> str:
    return text[0].upper() + text[1:] if text and text[0].isalpha() and text[0].isascii() else text


@dataclass
class Decision:
    kind: str  # stay move zigzag bounce circle spin grow shrink chase swap meet
    direction: str | None = None  # a DIRECTIONS name
    turn: str | None = None
    partner: int | None = None
    text: str = ""
    notes: list[str] = field(default_factory=list)


class OfflineBackend:
    name = NAME
    model = "rules"

    def rewrite(self, labels: Sequence[str], user_prompt: str, style_guide: StyleGuide,
                ref_lines: Sequence[str] | None = None) -> Rewrite:
        return rewriter_for(style_guide).rewrite(labels, user_prompt, ref_lines)


_REWRITERS: dict[str, OfflineRewriter] = {}


def rewriter_for(guide: StyleGuide) -> OfflineRewriter:
    """One compiled rewriter per guide content (building the SpriteWorld patterns takes ~10 ms)."""
    if guide.hash not in _REWRITERS:
        if len(_REWRITERS) > 8:
            _REWRITERS.clear()
        _REWRITERS[guide.hash] = OfflineRewriter(guide)
    return _REWRITERS[guide.hash]


def decide(reading: Reading, n: int) -> list[Decision]:
    """One motion per subject from the evidence the analysis found (module doc of analysis.py)."""
    evidence = {k: list(v) for k, v in reading.evidence.items() if k >= 0}
    for ev in reading.evidence.get(-1, []):  # a clause without any subject: the first subject without a motion
        k = next((j for j in range(n) if j not in evidence), None)
        if k is not None:
            evidence[k] = [ev]
    out: list[Decision] = []
    for k in range(n):
        evs = evidence.get(k, [])
        strong = [e for e in evs if not e.weak]
        d = _pick(strong, reading, k) or _pick([e for e in evs if e.weak], reading, k)
        if d is None:
            unsure = next((e for e in evs if e.kind in ("unsure", "apart")), None)
            if unsure is not None:
                d = Decision("stay", text=unsure.text, notes=[
                    f"could not tell which way Ref {k + 1} goes in {unsure.text!r}; kept it still rather than "
                    "guess (say left, right, up, down, or where it starts and ends)"])
            else:
                d = Decision("stay", notes=[f"no motion stated for Ref {k + 1}; it stays still"])
        out.append(d)
    for k, d in enumerate(out):  # "walks with him": the partner's motion
        if d.kind == "copy":
            src = out[d.partner] if d.partner is not None else None
            if src is not None and src.kind in ("move", "zigzag", "bounce", "spin", "circle", "grow", "shrink"):
                out[k] = Decision(src.kind, src.direction, src.turn, text=d.text)
            else:
                out[k] = Decision("stay", notes=[f"Ref {k + 1} moves with Ref {(d.partner or 0) + 1}, which has no "
                                                 "motion; it stays still"])
    return out


def _pick(evs: list[Evidence], reading: Reading, k: int) -> Decision | None:
    if not evs:
        return None
    notes: list[str] = []
    shape = next((e for e in evs if e.kind in _SHAPE_KINDS), None)
    if shape is not None:
        d = Decision(shape.kind, turn=shape.turn, text=shape.text)
        if shape.kind == "bounce" and shape.dirs:
            d.direction = direction_name(shape.dirs[0])
        return d
    for kind in ("chase", "swap", "meet"):
        e = next((e for e in evs if e.kind == kind), None)
        if e is not None:
            return Decision(kind, partner=e.partner, text=e.text)
    moves = [e for e in evs if e.kind in ("move", "zigzag") and e.dirs]
    if moves:
        vecs = [unit(e.dirs[0]) for e in moves]
        total = (sum(v[0] for v in vecs), sum(v[1] for v in vecs))
        if abs(total[0]) < 1e-6 and abs(total[1]) < 1e-6:
            total = vecs[0]
            notes.append(f"Ref {k + 1} is told to go opposite ways; kept the first ({moves[0].text!r})")
        kind = "zigzag" if any(e.kind == "zigzag" for e in moves) else "move"
        return Decision(kind, direction_name(total), text=moves[0].text, notes=notes)
    apart = next((e for e in evs if e.kind == "apart"), None)
    if apart is not None and apart.partner is not None and k in reading.positions and \
            apart.partner in reading.positions:
        a, b = reading.positions[k], reading.positions[apart.partner]
        vec = (a[0] - b[0], a[1] - b[1])
        if vec != (0.0, 0.0):
            return Decision("move", direction_name(vec), text=apart.text)
    copy = next((e for e in evs if e.kind == "copy"), None)
    if copy is not None:
        return Decision("copy", partner=copy.partner, text=copy.text)
    if any(e.kind == "stay" for e in evs):
        return Decision("stay")
    return None


class OfflineRewriter:
    def __init__(self, guide: StyleGuide):
        self.guide = guide
        d = guide.data
        sub = d["subjects"]
        self.reader = Reader(sub)
        self.determiners = set(sub.get("determiners", ()))
        self.prefixes = sorted(d.get("strip_prefixes", ()), key=len, reverse=True)
        self.tables = {}
        for key in ("light", "occluders", "backgrounds"):
            table = d.get(key) or {}
            forms = {f.lower(): canon for canon, fs in table.items() for f in [canon, *fs]}
            self.tables[key] = (_alternation(forms), forms)
        self.camera_forms = {f.lower(): canon for canon, fs in (d.get("camera") or {}).items() for f in [canon, *fs]}
        self.camera_re = _alternation(self.camera_forms)
        self.props = _alternation(d.get("props", ()))

    @property
    def prose(self) -> bool:
        return self.guide.output == "prose"

    # ------------------------------------------------------------------ stage 1: Ref lines + bindings

    def _label_words(self, label: str) -> list[str]:
        return [w for w in label_words(label) if w not in self.determiners]

    def ref_line(self, k: int, label: str, mention: Mention | None) -> str:
        return f"Ref {k + 1}: {self.description(k, label, mention)}."

    def description(self, k: int, label: str, mention: Mention | None) -> str:
        d = self.guide.data["subjects"]
        if label:
            body = _sanitize_label(label)
            first, _, rest = body.partition(" ")
            if first.lower() in ("the", "this", "that") and rest:
                body = f"{_article(rest)} {rest}"
            return d.get("ref_template", "{label}").format(label=body)
        if mention is not None and mention.kind == "name":
            words = [w for w in mention.words if w not in self.reader.wildcards]
            if words and any(w in self.reader.nouns for w in words):
                return f"{_article(words[0])} {' '.join(words)}"
        return d.get("unlabeled", UNLABELED_REF).format(k=k + 1)

    def binding(self, label: str, mention: Mention | None, prompt: str) -> str:
        words = self._label_words(label) if label else (list(mention.words) if mention and mention.kind == "name"
                                                        else [])
        if self.guide.closed and words:
            color = next((w for w in words if self.reader.categories.get(w) == "color"), None)
            noun = next((w for w in reversed(words) if w in self.reader.nouns), None)
            template = self.guide.data["subjects"].get("binding_template", "the {color} {noun}")
            if color and noun and "{label" not in template:
                return template.format(color=color, noun=noun)
        if not self.guide.closed and mention is not None and mention.kind == "name":
            text = _sanitize_label(prompt[mention.start:mention.end])
            if mention.possessive:
                text = re.sub(r"['’]s$", "", text)
            first, _, rest = text.partition(" ")
            if first.lower() in ("a", "an") and rest:
                return "the " + rest
            if first.lower() in self.determiners | {"the"}:
                return text
            if not label and not text.isascii():
                return text
        if label:
            body = _sanitize_label(label)
            first, _, rest = body.partition(" ")
            if first.lower() in ("a", "an") and rest:
                return "the " + rest
            return body if first.lower() in self.determiners else ("the " + body if body.islower() else body)
        if words:
            has_noun = any(w not in self.reader.wildcards and w not in self.reader.categories or w in self.reader.nouns
                           for w in words)
            return "the " + " ".join(w for w in words if not has_noun or w not in self.reader.wildcards)
        return UNLABELED_BINDING

    # ------------------------------------------------------------------ reading

    def _strip_prefixes(self, low: str) -> str:
        changed = True
        while changed:
            changed = False
            head = len(low) - len(low.lstrip(" ,"))
            for p in self.prefixes:
                if low.startswith(p, head) and (len(low) == head + len(p) or not low[head + len(p)].isalnum()):
                    low = " " * (head + len(p)) + low[head + len(p):]
                    changed = True
                    break
        return low

    def _take_extras(self, low: str, extras: dict[str, list[str]]) -> str:
        """Backgrounds (+ props), occluders and light the guide names, out of the text."""
        for key in ("light", "occluders", "backgrounds"):
            regex, forms = self.tables[key]
            if regex is None:
                continue
            for m in list(regex.finditer(low)):
                canon = forms[m.group(0)]
                start, end = m.start(), m.end()
                if key == "backgrounds":
                    before = re.search(r"(?:\b(?:on|in front of|against|over|in|with)\s+)$", low[:start])
                    if before:
                        start = before.start()
                    if self.props is not None:
                        tail = re.match(r"\s*,?\s*with\s+((?:(?:a|an|the|some)\s+)?[\w-]+(?:\s*(?:,|and)\s*"
                                        r"(?:(?:a|an|the|some)\s+)?[\w-]+)*)", low[end:])
                        if tail:
                            found = list(self.props.finditer(tail.group(1)))
                            if found:
                                canon += " with " + " and ".join(f"a {p.group(0)}" for p in found)
                                end += tail.start(1) + found[-1].end()  # not past the last prop (", camera ...")
                extras.setdefault(key, []).append(canon)
                low = _blank(low, start, end)
        return low

    def read(self, labels: Sequence[str], prompt: str) -> tuple[Reading, str, dict]:
        low = lower_keep_length(prompt)
        stripped = self._strip_prefixes(low)
        extras: dict[str, list[str]] = {}
        if self.guide.closed:
            stripped = self._take_extras(stripped, extras)
        reading = self.reader.read(prompt, labels, blanked=stripped)
        return reading, stripped, extras

    def stage1(self, labels: Sequence[str], prompt: str) -> list[str]:
        reading, _, _ = self.read(labels, prompt)
        return self._ref_lines(labels, reading)

    def _first_named(self, reading: Reading) -> dict[int, Mention]:
        first: dict[int, Mention] = {}
        for m in reading.mentions:
            if m.kind == "name" and len(m.subjects) == 1:
                first.setdefault(m.subjects[0], m)
        return first

    def _ref_lines(self, labels: Sequence[str], reading: Reading) -> list[str]:
        first = self._first_named(reading)
        return [self.ref_line(k, labels[k], first.get(k)) for k in range(len(labels))]

    # ------------------------------------------------------------------ entry point

    def rewrite(self, labels: Sequence[str], prompt: str, ref_lines: Sequence[str] | None = None) -> Rewrite:
        labels = list(labels)
        prompt = prompt.strip()
        reading, stripped, extras = self.read(labels, prompt)
        lines = list(ref_lines) if ref_lines else self._ref_lines(labels, reading)
        if self.guide.closed:
            video, warnings = self._closed_video(labels, prompt, reading, extras)
            return assemble(lines, video, NAME, reading.warnings + warnings, style=self.guide.name)
        body, warnings = self._open_text(labels, prompt, stripped, reading, lines)
        if self.prose:
            return assemble_prose(body, lines, NAME, reading.warnings + warnings, style=self.guide.name)
        return assemble(lines, body, NAME, reading.warnings + warnings, style=self.guide.name)

    # ------------------------------------------------------------------ closed grammar

    def _motion_name(self, k: int, d: Decision, warnings: list[str]) -> str:
        motions = self.guide.data["motions"]
        default_turn = self.guide.data.get("default_turn", "cw")
        name = "stay"
        if d.kind == "move" and d.direction:
            name = f"move_{d.direction}"
        elif d.kind == "zigzag" and d.direction:
            horizontal = "left" if "left" in d.direction else "right" if "right" in d.direction else None
            if horizontal and f"zigzag_{horizontal}" in motions:
                name = f"zigzag_{horizontal}"
                if horizontal != d.direction:
                    warnings.append(f"{self.guide.name} zig-zags only left or right; wrote Ref {k + 1} zig-zagging "
                                    f"{horizontal} for {d.text!r}")
            else:
                name = f"move_{d.direction}"
                warnings.append(f"{self.guide.name} zig-zags only left or right; wrote Ref {k + 1} "
                                f"{motions.get(name, {}).get('canonical', name)} for {d.text!r}")
        elif d.kind in ("circle", "spin"):
            turn = d.turn or default_turn
            if d.turn is None:
                warnings.append(f"no turning direction for Ref {k + 1} in {d.text!r}; assumed "
                                f"{'clockwise' if turn == 'cw' else 'counterclockwise'}")
            name = f"{d.kind}_{turn}"
        elif d.kind == "bounce":
            name = "bounce"
            if d.direction:
                warnings.append(f"{self.guide.name} bounces in place; left out the direction of Ref {k + 1} in "
                                f"{d.text!r}")
        elif d.kind in ("grow", "shrink", "stay"):
            name = d.kind
        if name not in motions:
            warnings.append(f"{self.guide.name} has no motion for {d.text!r}; Ref {k + 1} stays still")
            name = "stay"
        return name

    def _closed_video(self, labels: list[str], prompt: str, reading: Reading, extras: dict) -> tuple[str, list[str]]:
        d = self.guide.data
        n = len(labels)
        warnings: list[str] = []
        decisions = decide(reading, n)
        first = self._first_named(reading)
        binds = [f"Ref {k + 1}[{self.binding(labels[k], first.get(k), prompt)}]" for k in range(n)]
        motions: dict[int, str] = {}
        interaction = None
        for k, dec in enumerate(decisions):
            warnings += dec.notes
            if dec.kind in ("chase", "swap", "meet") and dec.partner is not None and dec.partner != k:
                if interaction is None:
                    if dec.kind == "chase":
                        interaction = ("chase", dec.partner, k)
                    else:
                        interaction = (dec.kind, min(k, dec.partner), max(k, dec.partner))
                    continue
                if interaction[0] == dec.kind and k in interaction[1:]:
                    continue
                lead = decisions[dec.partner]
                if dec.kind == "chase" and lead.kind == "move":
                    motions[k] = f"move_{lead.direction}"
                    warnings.append(f"{d['name']} shows one interaction per video; Ref {k + 1} moves "
                                    f"{lead.direction.replace('_', ' and ')} instead of chasing")
                    continue
                motions[k] = "stay"
                warnings.append(f"{d['name']} shows one interaction per video; Ref {k + 1} stays still")
                continue
            motions[k] = self._motion_name(k, dec, warnings)
        clauses = []
        taken: set[int] = set()
        if interaction is not None:
            kind, a, b = interaction
            if kind == "chase":
                text = f"{binds[b]} chases {binds[a]}"
                lead = motions.get(a, "")
                if lead.startswith("move_"):
                    text += " " + d["direction_canonical"][lead[5:]]
                clauses.append(text)
                taken = {b} | ({a} if lead.startswith("move_") else set())
                if a not in taken:
                    motions.setdefault(a, "stay")
            else:
                clauses.append(f"{binds[a]} and {binds[b]} {d['motions'][kind]['canonical']}")
                taken = {a, b}
        clauses += [f"{binds[k]} {d['motions'][motions[k]]['canonical']}" for k in range(n) if k not in taken]
        first_join, rest = d.get("clause_join", [" while ", " and "])
        text = clauses[0] + (first_join + rest.join(clauses[1:]) if len(clauses) > 1 else "") if clauses else ""
        backgrounds = extras.get("backgrounds") or []
        background = backgrounds[0] if backgrounds else d.get("default_background")
        if not backgrounds and background:
            warnings.append(f"no background named; used {background!r}")
        if background:
            text += f" on {background}"
        camera = self._closed_camera(reading, warnings)
        parts = {"occluder": (extras.get("occluders") or [])[:1], "camera": camera[:1],
                 "light": (extras.get("light") or [])[:1]}
        for key in d.get("video_order") or ["clauses", "background", "occluder", "camera", "light"]:
            for canon in parts.get(key, []):
                text += f"; {canon}"
        left = self._leftover(reading)
        if left:
            warnings.append(f"not in {self.guide.name}'s vocabulary, left out: {' '.join(left[:12])}")
        return f"Video: {text.strip()}.", warnings

    def _closed_camera(self, reading: Reading, warnings: list[str]) -> list[str]:
        out = []
        for cam in reading.camera:
            canon = None
            if cam.kind in ("pan", "tilt") and cam.direction:
                canon = self.camera_forms.get(f"camera pans {cam.direction}") or \
                    self.camera_forms.get(f"the camera pans {cam.direction}")
            if canon is None:
                warnings.append(f"{self.guide.name} has no camera move for {cam.text!r}; left it out (its captions "
                                "know pans left, right, up and down)")
                continue
            out.append(canon)
        return out

    def _leftover(self, reading: Reading) -> list[str]:
        out = []
        for w in reading.words:
            if w.mention is not None or w.punct or understood(w.text):
                continue
            if w.text.isascii() and len(w.text) <= 2:
                continue
            if any(w.start >= c.start and w.end <= c.end for c in reading.camera):
                continue
            out.append(w.text)
        return list(dict.fromkeys(out))

    # ------------------------------------------------------------------ open grammar

    def _statement(self, text: str, mention_ends: list[int], imperative: bool, progressive: bool) -> str:
        """'X should run' / 'X to run' / (make) 'X run ... and then wave' -> 'X runs ... and then waves';
        (show) 'X running' -> 'X is running'."""
        from ..spriteworld.captions import conjugate

        out, pos = [], 0
        for end in mention_ends:
            m = re.match(r"(\s+)(should|to|must|would|could)?(\s*)([a-z]+(?:-[a-z]+)*)\b", text[end:])
            if not m or end < pos:
                continue
            verb = m.group(4)
            modal = m.group(2) is not None
            if modal or (imperative and not verb.endswith(("s", "ed", "ing"))):
                if verb in ("and", "or", "the", "a", "an", "with", "in", "on", "at"):
                    continue
                new = " " + conjugate(verb)[0]
                tail_end = end + m.end()
                # "... and then wave" belongs to the same request
                nxt = re.search(r"\b(and then|then)\s+([a-z]+(?:-[a-z]+)*)\b", text[tail_end:tail_end + 80])
                out.append(text[pos:end] + new)
                pos = tail_end
                if nxt and not nxt.group(2).endswith(("s", "ed", "ing")) and nxt.group(2) not in ("the", "a", "it"):
                    out.append(text[pos:pos + nxt.start(2)] + conjugate(nxt.group(2))[0])
                    pos += nxt.end(2)
                continue
            if verb.endswith("ing") and (imperative or progressive):
                out.append(text[pos:end] + " is " + verb)
                pos = end + m.end()
        out.append(text[pos:])
        return "".join(out)

    def _camera_phrase(self, words: str) -> str:
        """A camera clause as it goes to the end: the guide's canonical phrase for a known term ("tracking
        shot"), else the user's words as a statement ("zoom in on the cat" -> the camera zooms in on the cat)."""
        from ..spriteworld.captions import conjugate

        key = re.sub(r"\s+", " ", lower_keep_length(words).strip(" ,.;")).removeprefix("the ")
        phrase = self.camera_forms.get(key) or self.camera_forms.get("the " + key)
        if phrase is not None:
            return phrase
        phrase = re.sub(r"^(?:and|while|whilst|as|then)\s+", "", words.strip(" ,.;"), flags=re.IGNORECASE)
        verbs = {"pan", "tilt", "zoom", "dolly", "track", "push", "pull", "orbit", "follow", "circle", "crane"}
        m = re.match(r"(?i)((?:slowly|quickly|gently|then)\s+)?([a-z]+)\b(.*)", phrase)
        if m and lemma(m.group(2).lower(), verbs) in verbs:
            return f"the camera {m.group(1) or ''}{conjugate(lemma(m.group(2).lower(), verbs))[0]}{m.group(3)}"
        return "the " + phrase if re.match(r"(?i)camera\b", phrase) else phrase

    def _camera_spans(self, reading: Reading, text: str) -> list[tuple[int, int, str]]:
        """(start, end, phrase) of each camera clause: the span to cut, with the word or comma that
        joined it to the sentence, and what goes to the end (_camera_phrase)."""
        spans = []
        for cam in reading.camera:
            start, end = cam.start, cam.end
            phrase = self._camera_phrase(text[start:end])
            before = re.search(r"(?:^|[,;]\s*|\s+)(?:(?:and|while|whilst|as|but|then)\s+)?(?:[,;]\s*)?$",
                               text[:start], flags=re.IGNORECASE)
            if before and before.group(0).strip():
                start = before.start()
            if not text[:start].strip():  # it opened the sentence: cut the joint after it too
                after = re.match(r"\s*(?:[,;]\s*(?:and\s+|while\s+|as\s+)?|(?:and|while|as)\s+)", text[end:])
                if after:
                    end += after.end()
            spans.append((start, end, phrase))
        return spans

    def _open_text(self, labels: list[str], prompt: str, stripped: str, reading: Reading,
                   lines: list[str]) -> tuple[str, list[str]]:
        warnings: list[str] = []
        n = len(labels)
        low = lower_keep_length(prompt)
        progressive = bool(re.match(r"\s*(?:please\s+)?(?:show|animate)\b", low))
        imperative = stripped != low and not progressive and \
            not re.match(r"\s*(?:can you|could you)?\s*make it so", low) and \
            not re.match(r"\s*(?:a video|a clip|video|create|generate)", low)
        # the original characters (case, any script) minus the request words
        text = "".join(" " if lc == " " and not c.isspace() else c for c, lc in zip(prompt, stripped))
        cams = self._camera_spans(reading, text)
        descriptions = [re.sub(r"^Ref \d+:\s*", "", ln).rstrip(".") for ln in lines]
        first = self._first_named(reading)
        binds = [self.binding(labels[k], first.get(k), prompt) for k in range(n)]
        in_camera = lambda m: any(s <= m.start < e for s, e, _ in cams)  # noqa: E731
        replace: dict[int, tuple[int, str]] = {}
        bound: set[int] = set()
        order = sorted(reading.mentions, key=lambda m: m.start)
        for m in order:
            if in_camera(m) or not m.subjects:
                continue
            fresh = [k for k in m.subjects if k not in bound]
            several = m.kind == "group" or m.pron == "p"
            if not fresh or (not several and len(m.subjects) != 1) or (several and len(fresh) != len(m.subjects)):
                continue
            word = lower_keep_length(prompt[m.start:m.end])
            if m.kind == "pronoun" and word in ("his", "its", "their", "theirs", "hers"):
                continue  # a possessive names its owner only in passing
            replace[m.start] = (m.end, self._mention_text(m, fresh, prompt, binds, descriptions))
            bound.update(fresh)
        # the text with the camera clauses cut and the bindings in
        cuts = sorted([(s, e, None) for s, e, _ in cams] + [(s, e, new) for s, (e, new) in replace.items()])
        pieces, pos, ends = [], 0, []
        for s, e, new in cuts:
            if s < pos:
                continue
            pieces.append(text[pos:s])
            if new is not None:
                pieces.append(new)
                ends.append(sum(len(p) for p in pieces))
            pos = e
        pieces.append(text[pos:])
        body = "".join(pieces)
        body = self._statement(body, ends, imperative, progressive)
        body = _tidy(body)
        missing = [k for k in range(n) if k not in bound]
        camera_phrases = [p for _, _, p in cams]
        if missing:
            if self.prose:
                names = _and([descriptions[k] for k in missing])
            else:
                names = _and([f"Ref {k + 1}[{binds[k]}]" for k in missing])
            verb = "appear" if len(missing) > 1 else "appears"
            if not bound:
                body = f"{names} {verb}" + (("; " if not self.prose else ". ") + body if body else "")
            else:
                extra = f"{names} {'are' if len(missing) > 1 else 'is'} also in the scene"
                body = body + (". " + _capitalize(extra) if self.prose else "; " + extra)
            them = "them" if len(missing) > 1 else "it"
            warnings.append(f"the prompt does not name Ref {', '.join(str(k + 1) for k in missing)}; "
                            + (f"described {them} in a sentence of its own" if self.prose else
                               f"bound {them} with a generic phrase"))
        if self.prose:
            sentences = [_capitalize(body)] + [_capitalize(p) for p in camera_phrases]
            return " ".join(s.rstrip(".") + "." for s in sentences if s), warnings
        for p in camera_phrases:
            body += f"; {p}"
        body = _capitalize(body) if not body.startswith("Ref ") else body
        return f"Video: {body}.", warnings

    def _mention_text(self, m: Mention, fresh: list[int], prompt: str, binds: list[str],
                      descriptions: list[str]) -> str:
        original = prompt[m.start:m.end]
        owner = re.search(r"['’]s$", original) if m.possessive else None
        suffix = owner.group(0) if owner else ""
        if m.kind == "group" or m.pron == "p" or len(fresh) > 1:
            parts = [descriptions[k] if self.prose else f"Ref {k + 1}[{binds[k]}]" for k in fresh]
            return _and(parts) + suffix
        k = fresh[0]
        if not self.prose:
            return f"Ref {k + 1}[{binds[k]}]" + suffix
        desc = descriptions[k]
        det = (m.det or "").lower()
        if det in ("his", "her", "its", "their", "my", "your", "our"):
            return original.split()[0] + " " + _drop_article(desc) + suffix
        if m.kind == "name" and not m.det and original[:1].isupper() and desc.lower() == original.lower():
            return original + ("" if suffix else "")
        return desc + suffix


def _and(parts: list[str]) -> str:
    if len(parts) <= 2:
        return " and ".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _tidy(body: str) -> str:
    body = re.sub(r"\s+", " ", body)
    body = re.sub(r"\s+([,.;:!?])", r"\1", body)
    body = re.sub(r"([,;])(?:\s*[,;])+", r"\1", body)
    body = body.strip(" ,;.!?")
    body = re.sub(r"(?:[,;]\s*)?\b(?:and|while|as|but|then|with)$", "", body).strip(" ,;")
    return body
