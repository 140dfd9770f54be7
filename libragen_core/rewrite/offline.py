"""The offline rewriter: deterministic, no model. Parses the user's prompt with the style guide.

1. Strip request wording ("I want", "can you make it so", "please have", ...).
2. Take out the scene parts the guide knows (camera, light, occluder, background + props) and
   keep their canonical phrases.
3. Find subject mentions: an exact label, or a (determiner) + known words + head-noun run
   ("the blue one", "the striped star"), or a pronoun (resolved to the last subject named).
   A mention binds to the label it agrees with (same colour/shape/... where both say one; most
   shared words wins); mentions that match no label bind to the remaining references in order.
4. Closed guides (SpriteWorld): find motion phrases (every surface form the guide lists, longest
   first; then a verb-class + direction fallback for phrasings it does not list), attach each to
   the subjects named before it in its clause (chase: subject before, target after; swap/meet:
   the two before), and write the Video line in the guide's canonical grammar and order.
   Open guides (real Wan models): keep the user's sentence, bind the first mention of each
   subject as Ref k[...], turn requests into statements, and move camera terms to the end.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..spriteworld.captions import UNLABELED_BINDING, UNLABELED_REF
from .base import Rewrite, assemble
from .style_guide import StyleGuide

NAME = "offline"
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_STOP = {"and", "while", "then", "to", "the", "a", "an", "on", "in", "of", "with", "at", "so", "that", "it", "is",
         "are", "should", "be", "also", "as", "both", "each", "other", "same", "time", "video", "clip", "scene",
         "front", "please", "want", "i", "can", "you", "make", "let", "have", "show", "animate", "where", "around"}
_PLAIN_PREPS = {"in", "with", "of", "wearing", "holding", "on", "at", "and", "from", "for"}


def _lower(text: str) -> str:
    # keeps every character's index (str.lower can lengthen a few characters, e.g. 'İ')
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _blank(text: str, start: int, end: int) -> str:
    return text[:start] + " " * (end - start) + text[end:]


def _alternation(forms) -> re.Pattern | None:
    forms = sorted({f.lower() for f in forms if f}, key=len, reverse=True)
    if not forms:
        return None
    return re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(f) for f in forms) + r")(?![\w-])")


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _sanitize_label(label: str) -> str:
    return label.replace("[", "(").replace("]", ")").strip().rstrip(".")


@dataclass
class _Mention:
    start: int
    end: int
    text: str
    words: tuple[str, ...]
    pronoun: bool = False
    subject: int | None = None


@dataclass
class _Verb:
    start: int
    end: int
    motion: str  # a motion name of the guide
    direction: str | None = None


@dataclass
class _Parse:
    mentions: list[_Mention] = field(default_factory=list)
    extras: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


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


class OfflineRewriter:
    def __init__(self, guide: StyleGuide):
        self.guide = guide
        d = guide.data
        sub = d["subjects"]
        self.determiners = set(sub.get("determiners", ()))
        self.pronouns = set(sub.get("pronouns", ()))
        self.nouns = set(sub.get("nouns", ()))
        self.wildcards = set(sub.get("wildcard_nouns", ()))
        self.categories = {w: cat for cat, words in sub.get("adjectives", {}).items() for w in words}
        for n in self.nouns:
            self.categories[n] = "noun"
        self.prefixes = sorted(d.get("strip_prefixes", ()), key=len, reverse=True)
        self.tables = {}
        for key in ("camera", "light", "occluders", "backgrounds"):
            table = d.get(key) or {}
            forms = {f.lower(): canon for canon, fs in table.items() for f in [canon, *fs]}
            self.tables[key] = (_alternation(forms), forms)
        self.props = _alternation(d.get("props", ()))
        self.phrases = {f.lower(): m for m, info in d.get("motions", {}).items() for f in info.get("phrases", ())}
        self.phrase_re = _alternation(self.phrases)
        self.class_verbs = {v: (cls, info["motion"]) for cls, info in d.get("verb_classes", {}).items()
                            for v in info["verbs"]}
        self.directions = {f.lower(): name for name, fs in d.get("directions", {}).items() for f in fs}
        self.direction_re = _alternation(self.directions)
        self.turns = {f.lower(): name for name, fs in d.get("turns", {}).items() for f in fs}
        self.turn_re = _alternation(self.turns)

    # ------------------------------------------------------------------ stage 1: Ref lines + bindings

    def _label_words(self, label: str) -> list[str]:
        return [w for w in _WORD.findall(_lower(label)) if w not in self.determiners]

    def ref_line(self, k: int, label: str, mention: _Mention | None) -> str:
        d = self.guide.data["subjects"]
        if label:
            body = _sanitize_label(label)
            first, _, rest = body.partition(" ")
            if first.lower() in ("the", "this", "that") and rest:
                body = f"{_article(rest)} {rest}"
            return f"Ref {k + 1}: " + d.get("ref_template", "{label}").format(label=body) + "."
        if mention is not None and not mention.pronoun:
            words = [w for w in mention.words if w not in self.wildcards]
            if words and any(w in self.nouns for w in words):
                return f"Ref {k + 1}: {_article(words[0])} {' '.join(words)}."
        return f"Ref {k + 1}: " + d.get("unlabeled", UNLABELED_REF).format(k=k + 1) + "."

    def binding(self, label: str, mention: _Mention | None) -> str:
        words = self._label_words(label) if label else (list(mention.words) if mention and not mention.pronoun else [])
        if self.guide.closed and words:
            color = next((w for w in words if self.categories.get(w) == "color"), None)
            noun = next((w for w in reversed(words) if w in self.nouns), None)
            template = self.guide.data["subjects"].get("binding_template", "the {color} {noun}")
            if color and noun and "{label" not in template:
                return template.format(color=color, noun=noun)
        if not self.guide.closed and mention is not None and not mention.pronoun:
            text = _sanitize_label(mention.text)
            first, _, rest = text.partition(" ")
            if first.lower() in ("a", "an") and rest:
                return "the " + rest
            if first.lower() in self.determiners:
                return text
        if label:
            body = _sanitize_label(label)
            first, _, rest = body.partition(" ")
            if first.lower() in ("a", "an") and rest:
                return "the " + rest
            return body if first.lower() in self.determiners else ("the " + body if body.islower() else body)
        if words:
            has_noun = any(w not in self.wildcards and w not in self.categories or w in self.nouns for w in words)
            return "the " + " ".join(w for w in words if not has_noun or w not in self.wildcards)
        return UNLABELED_BINDING

    # ------------------------------------------------------------------ parsing

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

    def _take_extras(self, low: str, parse: _Parse) -> str:
        for key in ("camera", "light", "occluders", "backgrounds"):
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
                            props = [p.group(0) for p in self.props.finditer(tail.group(1))]
                            if props:
                                canon += " with " + " and ".join(f"a {p}" for p in props)
                                end += tail.end()
                parse.extras.setdefault(key, []).append(canon)
                low = _blank(low, start, end)
        return low

    def _find_mentions(self, low: str, labels: Sequence[str], parse: _Parse) -> str:
        label_words = [set(self._label_words(lb)) for lb in labels]
        # exact labels first (multi-word labels with prepositions, scripts without spaces)
        for lb in labels:
            body = " ".join(self._label_words(lb))
            if not body:
                continue
            ascii_ = body.isascii()
            pat = (r"(?<![\w-])" if ascii_ else "") + r"(?:(?:" + "|".join(map(re.escape, sorted(self.determiners))) + \
                r")\s+)?" + re.escape(body) + (r"(?![\w-])" if ascii_ else "")
            for m in re.finditer(pat, low):
                parse.mentions.append(_Mention(m.start(), m.end(), m.group(0), tuple(self._label_words(m.group(0)))))
                low = _blank(low, m.start(), m.end())
        vocab = set(self.categories) | self.wildcards | set().union(*label_words) if label_words else \
            set(self.categories) | self.wildcards
        vocab -= _PLAIN_PREPS
        heads = self.nouns | self.wildcards | {w for ws in label_words for w in ws if w not in _PLAIN_PREPS}
        toks = list(_WORD.finditer(low))
        i = 0
        while i < len(toks):
            word = toks[i].group(0)
            if word in self.pronouns:
                parse.mentions.append(_Mention(toks[i].start(), toks[i].end(), word, (word,), pronoun=True))
                i += 1
                continue
            j = i + 1 if word in self.determiners else i
            k, end = j, None
            while k < len(toks) and toks[k].group(0) in vocab:
                if end is not None and self._lemma(toks[k].group(0)):
                    break  # "the flower circle(s)": a verb after the head noun
                if toks[k].group(0) in heads:
                    end = k
                k += 1
            if end is None:
                i += 1
                continue
            words = tuple(t.group(0) for t in toks[j:end + 1])
            if all(w in self.wildcards for w in words):
                i = end + 1  # "one" alone names nobody
                continue
            parse.mentions.append(_Mention(toks[i].start(), toks[end].end(), low[toks[i].start():toks[end].end()],
                                           words))
            i = end + 1
        for m in parse.mentions:
            low = _blank(low, m.start, m.end)
        parse.mentions.sort(key=lambda m: m.start)
        return low

    def _score(self, words: Sequence[str], label: str) -> int | None:
        """Shared words, those of the label's head ("a large orange diamond") counting twice those of
        its tail ("with yellow stripes"); None when a word contradicts the head (another colour)."""
        lw = self._label_words(label)
        if not lw:
            return None
        cut = next((i for i, w in enumerate(lw) if w in _PLAIN_PREPS), len(lw))
        head, tail = lw[:cut], lw[cut:]
        mine: dict[str, set[str]] = {}
        for w in head:
            if w in self.categories:
                mine.setdefault(self.categories[w], set()).add(w)
        for w in words:
            cat = self.categories.get(w)
            if cat and cat in mine and w not in mine[cat]:
                return None
        score = sum(2 * (w in head) + (w in tail) for w in words)
        return score or None

    def _resolve(self, labels: Sequence[str], parse: _Parse) -> None:
        n = len(labels)
        named = [m for m in parse.mentions if not m.pronoun]
        for m in named:
            scores = [(self._score(m.words, lb), k) for k, lb in enumerate(labels)]
            scores = [(s, k) for s, k in scores if s is not None]
            if scores:
                best = max(s for s, _ in scores)
                tied = [k for s, k in scores if s == best]
                if len(tied) > 1:
                    parse.warnings.append(f"{m.text!r} fits the labels of Ref {', '.join(str(k + 1) for k in tied)}; "
                                          f"bound it to Ref {tied[0] + 1} (use a more specific name)")
                m.subject = tied[0]
        bound = {m.subject for m in named if m.subject is not None}
        free = [k for k in range(n) if k not in bound and not labels[k]] + \
               [k for k in range(n) if k not in bound and labels[k]]
        keys: dict[tuple, int] = {}
        for m in named:
            if m.subject is not None:
                continue
            key = tuple(w for w in m.words if w not in self.wildcards)
            if key in keys:
                m.subject = keys[key]
            elif free:
                m.subject = keys[key] = free.pop(0)
                if labels[m.subject]:
                    parse.warnings.append(f"{m.text!r} matches no label; bound it to Ref {m.subject + 1} "
                                          f"({labels[m.subject]!r}) by order")
        last = 0 if n == 1 else None
        for m in parse.mentions:
            if m.pronoun:
                m.subject = last
            elif m.subject is not None:
                last = m.subject
        parse.mentions = [m for m in parse.mentions if m.subject is not None]

    # ------------------------------------------------------------------ closed grammar

    def _lemma(self, word: str) -> str | None:
        cands = [word]
        if word.endswith("ies"):
            cands.append(word[:-3] + "y")
        if word.endswith("es"):
            cands.append(word[:-2])
        if word.endswith("s"):
            cands.append(word[:-1])
        for suf in ("ing", "ed"):
            if word.endswith(suf):
                stem = word[:-len(suf)]
                cands += [stem, stem + "e", stem[:-1] if len(stem) > 2 and stem[-1] == stem[-2] else stem]
        return next((c for c in cands if c in self.class_verbs), None)

    def _find_phrases(self, low: str) -> tuple[str, list[_Verb]]:
        """Listed motion phrases, before mentions: "circle" is a shape and a verb, but no listed
        phrase is a bare noun ("circle clockwise", "go around in a clockwise circle")."""
        verbs = []
        if self.phrase_re is not None:
            for m in self.phrase_re.finditer(low):
                verbs.append(_Verb(m.start(), m.end(), self.phrases[m.group(0)]))
        for m in verbs:
            low = _blank(low, m.start, m.end)
        return low, verbs

    def _find_verbs(self, low: str, parse: _Parse, verbs: list[_Verb]) -> list[_Verb]:
        fallback = []
        for t in _WORD.finditer(low):
            lemma = self._lemma(t.group(0))
            if lemma is not None:
                fallback.append(_Verb(t.start(), t.end(), self.class_verbs[lemma][1]))
        stops = sorted([m.start for m in parse.mentions] + [v.start for v in verbs + fallback])
        d = self.guide.data
        for v in fallback:
            limit = next((s for s in stops if s > v.start), len(low))
            window = low[v.end:limit]
            if "{direction}" in v.motion:
                hit = self.direction_re.search(window) if self.direction_re else None
                name = self.directions[hit.group(0)] if hit else d.get("default_direction", "right")
                if v.motion.startswith("zigzag") and name not in ("left", "right"):
                    name = "left" if "left" in name else "right" if "right" in name else d.get("default_direction")
                if not hit:
                    parse.warnings.append(f"no direction for {low[v.start:v.end]!r}; assumed {name}")
                v.motion = v.motion.format(direction=name)
                if hit:
                    low = _blank(low, v.end + hit.start(), v.end + hit.end())
            elif "{turn}" in v.motion:
                hit = self.turn_re.search(window) if self.turn_re else None
                name = self.turns[hit.group(0)] if hit else d.get("default_turn", "cw")
                if not hit:
                    parse.warnings.append(f"no turning direction for {low[v.start:v.end]!r}; assumed {name}")
                v.motion = v.motion.format(turn=name)
            if v.motion in d["motions"]:
                verbs.append(v)
        verbs.sort(key=lambda v: v.start)
        # chase: a direction after its target is the target's move
        for v in verbs:
            if v.motion == "chase":
                after = [m for m in parse.mentions if m.start >= v.end]
                nxt = next((w.start for w in verbs if w.start > v.start), len(low))
                seg_start = after[0].end if after and after[0].start < nxt else v.end
                hit = self.direction_re.search(low[seg_start:nxt]) if self.direction_re else None
                if hit:
                    v.direction = self.directions[hit.group(0)]
        return verbs

    def _closed_video(self, n: int, binds: list[str], parse: _Parse, verbs: list[_Verb]) -> str:
        d = self.guide.data
        motions: dict[int, str] = {}
        interaction = None
        used: set[int] = set()  # mention indices already consumed
        ments = parse.mentions
        prev_end = 0
        prev_subjects: list[int] = []

        def assign(k: int, motion: str, text: str):
            if k in motions and motions[k] != motion:
                parse.warnings.append(f"Ref {k + 1} already {d['motions'][motions[k]]['canonical']}; ignored "
                                      f"{text!r} (one motion per subject)")
                return
            motions[k] = motion

        for v in verbs:
            seg = [i for i, m in enumerate(ments) if prev_end <= m.start < v.start and i not in used]
            subjects = list(dict.fromkeys(ments[i].subject for i in seg))
            kind = d["motions"][v.motion].get("interaction")
            after = [i for i, m in enumerate(ments) if m.start >= v.end and i not in used]
            if kind == "chase" and after and (subjects or prev_subjects or n == 2):
                chaser = subjects[-1] if subjects else (prev_subjects[-1] if prev_subjects else None)
                leader = ments[after[0]].subject
                if chaser is None:
                    chaser = next(k for k in range(n) if k != leader)
                if chaser != leader and interaction is None:
                    interaction = ("chase", leader, chaser)
                    used.add(after[0])
                    assign(chaser, "chase", "chase")
                    if v.direction:
                        assign(leader, f"move_{v.direction}", v.direction)
                    prev_subjects = [chaser]
            elif kind in ("swap", "meet"):
                pair = subjects[-2:]
                if len(pair) < 2 and after:  # "the star swaps places with the circle"
                    pair = (pair + [ments[after[0]].subject])[:2]
                    used.add(after[0])
                if len(pair) < 2 and n == 2:
                    pair = [0, 1]
                if len(pair) == 2 and pair[0] != pair[1] and interaction is None:
                    interaction = (kind, *pair)
                    for k in pair:
                        assign(k, kind, kind)
                    prev_subjects = list(pair)
            else:
                targets = subjects or prev_subjects
                if not targets:
                    targets = [next((k for k in range(n) if k not in motions), 0)] if n else []
                for k in targets:
                    assign(k, v.motion, v.motion)
                prev_subjects = targets
            used.update(seg)
            prev_end = v.end
        default = d.get("default_motion")
        for k in range(n):
            if k not in motions:
                motions[k] = default
                parse.warnings.append(f"no motion found for Ref {k + 1}; it {d['motions'][default]['canonical']}")
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
            else:
                clauses.append(f"{binds[a]} and {binds[b]} {d['motions'][kind]['canonical']}")
            taken = {a, b}
        clauses += [f"{binds[k]} {d['motions'][motions[k]]['canonical']}" for k in range(n) if k not in taken]
        first, rest = d.get("clause_join", [" while ", " and "])
        text = clauses[0] + (first + rest.join(clauses[1:]) if len(clauses) > 1 else "") if clauses else ""
        backgrounds = parse.extras.get("backgrounds") or []
        background = backgrounds[0] if backgrounds else d.get("default_background")
        if not backgrounds and background:
            parse.warnings.append(f"no background named; used {background!r}")
        if background:
            text += f" on {background}"
        order = d.get("video_order") or ["clauses", "background", "occluder", "camera", "light"]
        for key in order:
            table = {"occluder": "occluders"}.get(key, key)
            if table in ("occluders", "camera", "light"):
                for canon in (parse.extras.get(table) or [])[:1]:
                    text += f"; {canon}"
        return f"Video: {text.strip()}."

    # ------------------------------------------------------------------ open grammar

    def _statement(self, text: str, mention_ends: list[int], imperative: bool, progressive: bool) -> str:
        """'X should run' / 'X to run' / (make) 'X run ... and then wave' -> 'X runs ... and then waves';
        (show) 'X running' -> 'X is running'."""
        from ..spriteworld.captions import conjugate

        out, pos = [], 0
        for end in mention_ends:
            m = re.match(r"(\s+)(should|to|must|would|could)?(\s*)([a-z]+(?:-[a-z]+)*)\b", text[end:])
            if not m:
                continue
            verb = m.group(4)
            modal = m.group(2) is not None
            if modal or (imperative and not verb.endswith(("s", "ed", "ing"))):
                new = " " + conjugate(verb)[0]
                tail_end = end + m.end()
                # "... and then wave" belongs to the same request
                nxt = re.search(r"\b(and then|then)\s+([a-z]+(?:-[a-z]+)*)\b", text[tail_end:tail_end + 80])
                out.append(text[pos:end] + new)
                pos = tail_end
                if nxt and not nxt.group(2).endswith(("s", "ed", "ing")) and nxt.group(2) not in _STOP:
                    out.append(text[pos:pos + nxt.start(2)] + conjugate(nxt.group(2))[0])
                    pos += nxt.end(2)
                continue
            if verb.endswith("ing") and (imperative or progressive):
                out.append(text[pos:end] + " is " + verb)
                pos = end + m.end()
        out.append(text[pos:])
        return "".join(out)

    def _open_video(self, prompt: str, kept: str, binds: list[str], parse: _Parse, imperative: bool,
                    progressive: bool) -> str:
        # the original characters (case, any script) minus what was taken out (request words, camera terms)
        text = "".join(" " if lc == " " and not c.isspace() else c for c, lc in zip(prompt, kept))
        # replace mentions, last first, so earlier offsets stay valid
        first_seen: set[int] = set()
        order = sorted(parse.mentions, key=lambda m: m.start)
        replace = {}
        for m in order:
            if m.subject is not None and m.subject not in first_seen and not m.pronoun:
                first_seen.add(m.subject)
                replace[m.start] = (m.end, f"Ref {m.subject + 1}[{binds[m.subject]}]")
        for m in order:  # a subject named only by a pronoun ("make her dance"): bind the first one
            if m.pronoun and m.subject is not None and m.subject not in first_seen:
                first_seen.add(m.subject)
                replace[m.start] = (m.end, f"Ref {m.subject + 1}[{binds[m.subject]}]")
        for m in order:
            if m.start not in replace and not m.pronoun:
                replace[m.start] = (m.end, prompt[m.start:m.end])
        pieces, pos, ends = [], 0, []
        for start in sorted(replace):
            end, new = replace[start]
            pieces.append(text[pos:start])
            pieces.append(new)
            ends.append(sum(len(p) for p in pieces))
            pos = end
        pieces.append(text[pos:])
        body = "".join(pieces)
        body = self._statement(body, ends, imperative, progressive)
        body = re.sub(r"\s+", " ", body)
        body = re.sub(r"\s+([,.;:!?])", r"\1", body)
        body = re.sub(r"(?:,\s*)+(?=,|$)", "", body).strip(" ,;.!?")
        missing = [k for k in range(len(binds)) if k not in first_seen]
        if missing:
            names = " and ".join(f"Ref {k + 1}[{binds[k]}]" for k in missing)
            if not first_seen:
                body = f"{names} {'appear' if len(missing) > 1 else 'appears'}; {body}" if body else \
                    f"{names} {'appear' if len(missing) > 1 else 'appears'}"
            else:
                body += f"; {names} {'are' if len(missing) > 1 else 'is'} also in the scene"
            parse.warnings.append(f"the prompt does not name Ref {', '.join(str(k + 1) for k in missing)}; bound "
                                  "them with a generic phrase")
        for canon in parse.extras.get("camera") or []:
            body += f"; {canon}"
        if body and not body[0].isupper() and not body.startswith("Ref "):
            body = body[0].upper() + body[1:] if body[0].isalpha() and body[0].isascii() else body
        return f"Video: {body}."

    # ------------------------------------------------------------------ entry point

    def rewrite(self, labels: Sequence[str], prompt: str, ref_lines: Sequence[str] | None = None) -> Rewrite:
        labels = list(labels)
        n = len(labels)
        parse = _Parse()
        prompt = prompt.strip()
        low = _lower(prompt)
        stripped = self._strip_prefixes(low)
        progressive = bool(re.match(r"\s*(?:please\s+)?(?:show|animate)\b", low))
        imperative = stripped != low and not progressive and \
            not re.match(r"\s*(?:can you|could you)?\s*make it so", low) and \
            not re.match(r"\s*(?:a video|a clip|video|create|generate)", low)
        low = self._take_extras(stripped.rstrip(" ?!.") + " " * (len(stripped) - len(stripped.rstrip(" ?!."))),
                                parse)
        kept = low
        verbs: list[_Verb] = []
        if self.guide.closed:
            low, verbs = self._find_phrases(low)
        low = self._find_mentions(low, labels, parse) if n else low
        if n:
            self._resolve(labels, parse)
        first = {}
        for m in parse.mentions:
            first.setdefault(m.subject, m)
        binds = [self.binding(labels[k], first.get(k)) for k in range(n)]
        lines = list(ref_lines) if ref_lines else [self.ref_line(k, labels[k], first.get(k)) for k in range(n)]
        if self.guide.closed:
            verbs = self._find_verbs(low, parse, verbs)
            video = self._closed_video(n, [f"Ref {k + 1}[{b}]" for k, b in enumerate(binds)], parse, verbs)
            leftover = [w for w in _WORD.findall(self._blank_verbs(low, verbs)) if w not in _STOP]
            if leftover:
                parse.warnings.append(f"not in {self.guide.name}'s vocabulary, left out: {' '.join(leftover[:12])}")
        else:
            video = self._open_video(prompt, kept, binds, parse, imperative, progressive)
        return assemble(lines, video, NAME, parse.warnings)

    def _blank_verbs(self, low: str, verbs: list[_Verb]) -> str:
        for v in verbs:
            low = _blank(low, v.start, v.end)
        for regex in (self.direction_re, self.turn_re):
            if regex is not None:
                low = regex.sub(lambda m: " " * len(m.group(0)), low)
        return low

