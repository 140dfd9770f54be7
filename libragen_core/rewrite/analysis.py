"""Reading a user's prompt: words, subject mentions, clauses, pronouns, camera clauses, motions.

The offline rewriter reads every prompt with this module, whatever the guide. Closed guides
(SpriteWorld) write the motions it finds in their caption grammar; open guides (libragen, phantom)
keep the user's words and use the mentions, the resolved pronouns and the camera clauses to bind
each subject once and to move camera clauses to the end.

1. Words (lexicon.words_of): the prompt is split into words and punctuation with their character
   spans; contractions are expanded ("doesn't" -> does not, "it's" -> it is) and "X's" marks a
   possessive.
2. Mentions: an exact label, a (determiner) + known words + head noun run ("the blue one", "his
   kite", "the dog's ball" -> the ball, owned by the dog), a plural run ("both squares",
   "snowflakes": every subject with that head), or a pronoun. Named mentions bind to the label
   they agree with (a contradicting colour rules a label out; most shared words wins; the rest
   bind by order).
3. Clauses: split at punctuation and conjunctions (and, while, as, but, which, ...). A piece
   with only mentions ("the moon", "green circle on the left") is the subject of the next piece
   ("... and the star are both lifted up"); a piece that starts with a direction or comparative
   ("... up and down", "bigger and bigger") continues the previous one. A clause's subject is the
   mentions it starts with; without any it is the mention before "which"/"who", the subject of
   the clause after a fronted participle ("starting at the bottom, the star ..."), or the
   previous clause's subject ("the rocket lifts off and climbs").
4. Pronouns: he/she/it/they resolve in reading order to the last compatible mention (gender and
   animacy from the labels); an object pronoun ("runs after him") never resolves to its own
   clause's subject.
5. Camera: a clause whose subject is the camera (or the view, the shot) or that is a camera
   term ("pan left", "tracking shot") is camera motion, never a subject's motion.
6. Motions (per clause, for its subjects): negation ("doesn't move", "neither ... nor") and
   staying verbs; grow/shrink, spin, circle, bounce, zig-zag; chase/follow, swap places, meet
   ("toward each other"), move apart (from the subjects' positions, "the car on the left");
   directions from direction words, verbs of rising and falling, and paths: start and end points
   ("from the right side over to the left", "right to left", "starting at the bottom ... ends up
   at the top"), a goal ("heads for the bottom left corner", "off the right side", "over to the
   flower on the left"); a negated direction ("to the left, not the right") is dropped. Passive
   and causative sentences move the patient ("X is pushed up by Y", "Y pushes X up"); agents that
   travel with it (push, pull, carry, tow, roll, ride) move the same way, and "is chased by" is a
   chase. A motion verb with no direction it can find is reported as unsure: the rewriter keeps
   the user's words in a warning rather than inventing a direction.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from .lexicon import (
    AFTER_VERBS,
    ANIMALS,
    APART,
    BEFORE_VERB,
    BOUNCE,
    CAMERA_NOUNS,
    CAMERA_TERMS,
    CAMERA_VERBS,
    CAUSATIVE_IMPULSE,
    CAUSATIVE_WITH,
    CHASE,
    CIRCLE,
    DIRECTION_WORDS,
    DOWN_VERBS,
    END_MARKERS,
    ENDING_WORDS,
    GROUP_WORDS,
    GROW,
    MEET,
    MODIFIER_STARTS,
    MOTION_VERBS,
    NEGATED_DIRECTION,
    NEGATION,
    NO_SPLIT_AFTER_AS,
    NON_MOTION,
    PARTICIPLES_IRREGULAR,
    PARTICLE_IDIOMS,
    PATH_ADJECTIVES,
    PATH_FILLERS,
    PERSON_F,
    PERSON_M,
    PERSON_N,
    PLACE_NOUNS,
    PLAIN_PREPS,
    POSITION_WORDS,
    POSSESSIVE_DETS,
    PRONOUNS,
    REQUEST,
    SENTENCE_END,
    SHAPE_PATHS,
    SHRINK,
    SKIP_BEFORE_SUBJECT,
    SPIN,
    SPLIT_WORDS,
    START_MARKERS,
    STARTING_WORDS,
    STAY,
    SWAP,
    TURN_WORDS,
    UP_VERBS,
    VERTICAL_ADJ,
    ZIGZAG,
    Word,
    adjective_like,
    label_head,
    label_words,
    lemma,
    lower_keep_length,
    singular,
    verb_like,
    words_of,
)

# ------------------------------------------------------------------------------------- mentions

@dataclass
class Mention:
    start: int  # character span in the prompt
    end: int
    first: int  # word indices (inclusive)
    last: int
    words: tuple[str, ...]
    kind: str  # "name" | "pronoun" | "group"
    pron: str | None = None  # n, m, f, p (pronouns)
    det: str | None = None  # leading determiner word
    possessive: bool = False  # "the dog's" (owner of what follows)
    subjects: tuple[int, ...] = ()


class _RunVocab(NamedTuple):
    words: set[str]  # words a subject's name may hold
    heads: set[str]  # words that may end it
    plural_heads: set[str]  # heads whose plural names every subject with that head


@dataclass
class Subjects:
    """What the analysis knows about the labelled subjects."""

    labels: list[str]
    words: list[list[str]]  # label words without determiners
    heads: list[str]  # head noun of each label ("woman" in "the woman in a yellow raincoat")
    kinds: list[str]  # "m", "f", "person", "animal", "thing"


def subject_kind(label: str, head: str) -> str:
    if head in PERSON_M:
        return "m"
    if head in PERSON_F:
        return "f"
    if head in PERSON_N:
        return "person"
    if head in ANIMALS:
        return "animal"
    first = label.strip().split(" ")[0] if label.strip() else ""
    if first[:1].isupper() and first.lower() not in ("the", "a", "an", "my", "our", "your"):
        return "person"  # a name ("Anna")
    return "thing"


_KIND_CLASS = {"m": "person", "f": "person", "person": "person", "animal": "animal", "thing": "thing"}


def _compatible(pron: str, kind: str) -> bool:
    if pron == "n":
        return kind in ("thing", "animal")
    if pron == "m":
        return kind in ("m", "person", "animal")
    if pron == "f":
        return kind in ("f", "person", "animal")
    return True


# ------------------------------------------------------------------------------------- clauses

@dataclass
class Clause:
    items: list  # word indices, or ("@", mention index) for a mention
    splitter: str | None  # the word or punctuation before it
    sentence: int
    subject: list[int] = field(default_factory=list)  # mention indices
    pred: list = field(default_factory=list)  # items after the subject
    camera: bool = False
    subjects: tuple[int, ...] = ()  # resolved subject indices


@dataclass
class Evidence:
    kind: str  # stay move zigzag bounce circle spin grow shrink chase swap meet apart copy unsure
    dirs: list = field(default_factory=list)  # direction vectors
    turn: str | None = None
    partner: int | None = None  # chase target / swap-meet partner / copy source (subject index)
    weak: bool = False
    text: str = ""


@dataclass
class Camera:
    kind: str  # pan tilt zoom follow orbit static shot
    direction: str | None
    start: int  # character span of the clause in the prompt
    end: int
    text: str  # the user's words
    clause: int = -1  # index in Reading.clauses


@dataclass
class Reading:
    words: list[Word]
    mentions: list[Mention]
    clauses: list[Clause]
    evidence: dict[int, list[Evidence]]
    positions: dict[int, tuple[float, float]]
    camera: list[Camera]
    warnings: list[str]


class Reader:
    """Reads prompts for one guide's subject vocabulary (determiners, nouns, adjective classes)."""

    def __init__(self, subject_vocab: dict):
        self.determiners = set(subject_vocab.get("determiners", ())) | POSSESSIVE_DETS | {"the", "a", "an"}
        self.nouns = set(subject_vocab.get("nouns", ()))
        self.wildcards = set(subject_vocab.get("wildcard_nouns", ()))
        self.categories = {w: cat for cat, ws in subject_vocab.get("adjectives", {}).items() for w in ws}
        for n in self.nouns:
            self.categories[n] = "noun"

    # -------------------------------------------------------------------------------- subjects

    def subjects(self, labels: Sequence[str]) -> Subjects:
        words = [list(label_words(lb)) for lb in labels]
        heads = [label_head(ws) for ws in words]
        return Subjects(list(labels), words, heads, [subject_kind(lb, h) for lb, h in zip(labels, heads)])

    def _score(self, words: Sequence[str], label_words: Sequence[str]) -> int | None:
        """Shared words, those of the label's head part counting twice those of its tail ('with yellow
        stripes'); None when a word contradicts the head part (another colour)."""
        if not label_words:
            return None
        cut = next((i for i, w in enumerate(label_words) if w in PLAIN_PREPS), len(label_words))
        head, tail = label_words[:cut], label_words[cut:]
        mine: dict[str, set[str]] = {}
        for w in head:
            if w in self.categories:
                mine.setdefault(self.categories[w], set()).add(w)
        for w in words:
            cat = self.categories.get(w)
            if cat and cat in mine and w not in mine[cat]:
                return None
        score = 0
        for w in words:
            forms = {w, *singular(w)}
            score += 2 * bool(forms & set(head)) + bool(forms & set(tail))
        return score or None

    # -------------------------------------------------------------------------------- mentions

    def find_mentions(self, words: list[Word], subj: Subjects, prompt_low: str) -> list[Mention]:
        mentions: list[Mention] = []
        taken = [False] * len(words)
        # motion phrases that look like nouns ("in a counterclockwise circle", "runs in circles")
        for i, w in enumerate(words):
            if w.text in ("in", "into") and i + 1 < len(words):
                for j in range(i + 1, min(i + 5, len(words))):
                    if words[j].text in SHAPE_PATHS:
                        for x in range(i, j + 1):
                            taken[x] = True
                        break
                    if words[j].text not in PATH_ADJECTIVES:
                        break

        def add(first: int, last: int, kind: str, **kw) -> None:
            ws = tuple(w.text for w in words[first:last + 1])
            det = ws[0] if kind != "pronoun" and ws and ws[0] in self.determiners | GROUP_WORDS else None
            core = ws if kind == "pronoun" else tuple(w for w in ws if w not in self.determiners and w not in GROUP_WORDS)
            mentions.append(Mention(words[first].start, words[last].end, first, last, core, kind, det=det, **kw))
            for i in range(first, last + 1):
                taken[i] = True

        # exact labels first (multi-word labels with prepositions)
        for k, lw in enumerate(subj.words):
            if not lw:
                continue
            n = len(lw)
            for i in range(len(words) - n + 1):
                if any(taken[i:i + n]) or [w.text for w in words[i:i + n]] != lw:
                    continue
                first = i - 1 if i > 0 and words[i - 1].text in self.determiners and not taken[i - 1] else i
                add(first, i + n - 1, "name", possessive=words[i + n - 1].possessive, subjects=(k,))
        # labels in scripts without spaces (CJK, ...): found inside a word
        for k in range(len(subj.labels)):
            body = " ".join(subj.words[k])
            if not body or body.isascii() or " " in body or any(m.subjects == (k,) for m in mentions):
                continue
            for m in re.finditer(re.escape(body), prompt_low):
                idx = next((i for i, w in enumerate(words) if w.start <= m.start() < w.end), None)
                if idx is not None and not taken[idx]:
                    mentions.append(Mention(m.start(), m.end(), idx, idx, (body,), "name", subjects=(k,)))
                    taken[idx] = True
        # the head part of each label ("large green hexagon", not "with a white top"): tail words such as
        # "top" or "spots" are too often a place or a verb of the prompt
        label_vocab = {w for ws in subj.words
                       for w in ws[:next((i for i, x in enumerate(ws) if x in PLAIN_PREPS), len(ws))]}
        heads = self.nouns | self.wildcards | label_vocab
        # plurals name subjects only through their labels ("both squares"; not "moves in circles")
        voc = _RunVocab((set(self.categories) | self.wildcards | label_vocab) - PLAIN_PREPS, heads,
                        label_vocab | self.wildcards if any(subj.words) else heads)
        i = 0
        while i < len(words):
            w = words[i]
            if taken[i] or w.punct:
                i += 1
                continue
            if w.text in PRONOUNS and not (w.text in POSSESSIVE_DETS and
                                           self._run_end(words, i + 1, voc, taken) is not None):
                add(i, i, "pronoun", pron=PRONOUNS[w.text])
                i += 1
                continue
            j = i
            group = False
            while j < len(words) and (words[j].text in self.determiners or words[j].text in GROUP_WORDS) and \
                    not taken[j]:
                group = group or words[j].text in GROUP_WORDS
                j += 1
            end = self._run_end(words, j, voc, taken)
            if end is not None and end == j == i and verb_like(w.text) and i > 0 and \
                    (taken[i - 1] or words[i - 1].text in BEFORE_VERB):
                i += 1  # "the moon should circle", "the blue circle circles": a verb, not a shape
                continue
            if end is not None:
                core = [x.text for x in words[j:end + 1]]
                if all(c in self.wildcards for c in core) and not group and not self._plural(words[end].text, voc):
                    i = end + 1  # "one" alone names nobody
                    continue
                plural = self._plural(words[end].text, voc)
                add(i, end, "group" if plural or group else "name", possessive=words[end].possessive)
                if plural:
                    mentions[-1].words = tuple(list(mentions[-1].words[:-1]) + [plural])
                i = end + 1
                continue
            i += 1
        mentions.sort(key=lambda m: m.first)
        for idx, m in enumerate(mentions):
            for wi in range(m.first, m.last + 1):
                words[wi].mention = idx
        return mentions

    def _widen(self, m: Mention, words: list[Word]) -> None:
        """'an old man' when only 'man' matched a label: take in the adjectives up to the determiner."""
        if m.kind != "name" or m.det is not None:
            return
        j = m.first - 1
        while j >= 0 and m.first - j <= 3 and not words[j].punct and words[j].mention is None and \
                words[j].text not in self.determiners and adjective_like(words[j].text) and \
                not words[j].possessive:
            j -= 1
        if j >= 0 and j < m.first - 1 and words[j].text in {"the", "a", "an"} | POSSESSIVE_DETS and \
                words[j].mention is None:
            m.det = words[j].text
            m.words = tuple(w.text for w in words[j + 1:m.first]) + m.words
            m.first, m.start = j, words[j].start

    @staticmethod
    def _plural(word: str, voc: _RunVocab) -> str | None:
        if word in voc.heads:
            return None
        return next((s for s in singular(word) if s in voc.heads and s in voc.plural_heads), None)

    def _run_end(self, words: list[Word], j: int, voc: _RunVocab, taken: list[bool]) -> int | None:
        """Index of the last head noun of a run of known words starting at j ('blue striped star')."""
        k, end = j, None
        while k < len(words) and not taken[k] and not words[k].punct:
            t = words[k].text
            if t in voc.words or self._plural(t, voc):
                if end is not None and words[end].text not in self.categories.keys() - self.nouns and \
                        (t == words[end].text + "s" or t == words[end].text + "es" or verb_like(t)):
                    break  # "the circle circles", "the heart circle(s) clockwise": a verb after the head noun
                if t in voc.heads or self._plural(t, voc):
                    end = k
                    if words[k].possessive or self._plural(t, voc):
                        break
                k += 1
            else:
                break
        return end

    def bind_names(self, mentions: list[Mention], subj: Subjects, warnings: list[str]) -> None:
        n = len(subj.labels)
        named = [m for m in mentions if m.kind == "name" and not m.subjects]
        for m in named:
            scores = [(self._score(m.words, lw), k) for k, lw in enumerate(subj.words)]
            scores = [(s, k) for s, k in scores if s is not None]
            if scores:
                best = max(s for s, _ in scores)
                tied = [k for s, k in scores if s == best]
                if len(tied) > 1:
                    warnings.append(f"{' '.join(m.words)!r} fits the labels of Ref "
                                    f"{', '.join(str(k + 1) for k in tied)}; bound it to Ref {tied[0] + 1} "
                                    "(use a more specific name)")
                m.subjects = (tied[0],)
        bound = {k for m in mentions if m.kind == "name" for k in m.subjects}
        free = [k for k in range(n) if k not in bound and not subj.labels[k]] + \
               [k for k in range(n) if k not in bound and subj.labels[k]]
        keys: dict[tuple, int] = {}
        for m in mentions:
            if m.kind != "name" or m.subjects:
                continue
            key = tuple(w for w in m.words if w not in self.wildcards)
            kind = _KIND_CLASS[subject_kind("", m.words[-1] if m.words else "")]
            fits = [k for k in free if not subj.labels[k] or _KIND_CLASS[subj.kinds[k]] == kind]
            if key in keys:
                m.subjects = (keys[key],)
            elif fits:
                k = keys[key] = fits[0]
                free.remove(k)
                m.subjects = (k,)
                if subj.labels[k]:
                    warnings.append(f"{' '.join(m.words)!r} matches no label; bound it to Ref {k + 1} "
                                    f"({subj.labels[k]!r}) by order")
        for m in mentions:
            if m.kind == "group":
                head = m.words[-1] if m.words else ""
                if head in self.wildcards or not head:
                    m.subjects = tuple(range(n))
                else:
                    m.subjects = tuple(k for k in range(n) if head in subj.words[k] or head == subj.heads[k])
                    if not m.subjects:
                        m.subjects = tuple(range(n))

    # -------------------------------------------------------------------------------- clauses

    def clauses(self, words: list[Word], mentions: list[Mention]) -> list[Clause]:
        items: list = []
        i = 0
        while i < len(words):
            if words[i].mention is not None:
                m = words[i].mention
                items.append(("@", m))
                i = mentions[m].last + 1
            else:
                items.append(i)
                i += 1
        raw: list[Clause] = []
        current: list = []
        splitter, sentence = None, 0
        for pos, it in enumerate(items):
            word = None if isinstance(it, tuple) else words[it].text
            if word is not None and (words[it].punct or self._splits(word, items, pos, words)):
                if current:
                    raw.append(Clause(current, splitter, sentence))
                current = []
                splitter = word
                if word in SENTENCE_END:
                    sentence += 1
                continue
            current.append(it)
        if current:
            raw.append(Clause(current, splitter, sentence))
        return self._merge(raw, words, mentions)

    def _splits(self, word: str, items: list, pos: int, words: list[Word]) -> bool:
        if word not in SPLIT_WORDS:
            return False
        nxt = items[pos + 1] if pos + 1 < len(items) else None
        prev = items[pos - 1] if pos > 0 else None
        nxt_word = None if nxt is None or isinstance(nxt, tuple) else words[nxt].text
        prev_word = None if prev is None or isinstance(prev, tuple) else words[prev].text
        if word == "as" and (nxt_word in NO_SPLIT_AFTER_AS or prev_word in ("such", "as", "just", "same")):
            return False
        if word in ("after", "before", "until", "till") and prev_word is not None and \
                lemma(prev_word, AFTER_VERBS) in AFTER_VERBS:
            return False  # "runs after it"
        if word in ("after", "before", "until", "till") and nxt is not None and isinstance(nxt, tuple) and \
                (pos + 2 >= len(items) or not isinstance(items[pos + 2], int) or
                 words[items[pos + 2]].text in ".,;:!?"):
            return False  # "after the dog" (a preposition)
        return True

    def _only_mentions(self, clause: Clause, words: list[Word]) -> bool:
        has = False
        k = 0
        items = clause.items
        while k < len(items):
            it = items[k]
            if isinstance(it, tuple):
                has = True
                k += 1
                skip = self._descriptor(items, k, words)
                k += skip
                continue
            if words[it].text not in SKIP_BEFORE_SUBJECT | GROUP_WORDS:
                return False
            k += 1
        return has

    def _descriptor(self, items: list, k: int, words: list[Word]) -> int:
        """Length of a position descriptor after a mention ('on the left', 'at the bottom', 'on top')."""
        if k >= len(items) or isinstance(items[k], tuple):
            return 0
        if words[items[k]].text not in ("on", "at", "in", "near", "by"):
            return 0
        vec, used = self.position(items, k + 1, words)
        if vec is None or isinstance(vec, int):
            return 0
        return 1 + used

    def _merge(self, raw: list[Clause], words: list[Word], mentions: list[Mention]) -> list[Clause]:
        out: list[Clause] = []
        pending: Clause | None = None
        for idx, c in enumerate(raw):
            if pending is not None:
                c = Clause(pending.items + ([("sep", c.splitter)] if c.splitter else []) + c.items,
                           pending.splitter, pending.sentence)
                pending = None
            first = c.items[0]
            first_word = None if isinstance(first, tuple) else words[first].text
            has_mention = any(isinstance(it, tuple) and it[0] == "@" for it in c.items)
            if out and not has_mention and first_word in MODIFIER_STARTS and c.splitter not in SENTENCE_END:
                prev = out[-1]
                prev.items = prev.items + [("sep", c.splitter)] + c.items
                continue
            if self._only_mentions(c, words):
                nxt = raw[idx + 1] if idx + 1 < len(raw) else None
                if nxt is not None and nxt.splitter in ("and", "nor", ",", ":", "or") and nxt.sentence == c.sentence:
                    pending = c
                    continue
                if out and c.splitter in ("and", ",", "nor") and out[-1].sentence == c.sentence:
                    out[-1].items = out[-1].items + [("sep", c.splitter)] + c.items
                    continue
            out.append(c)
        if pending is not None:
            out.append(pending)
        return out

    # -------------------------------------------------------------------------------- positions

    def position(self, items: list, k: int, words: list[Word]):
        """(vector, items used) of a position phrase at items[k] ('the left side', 'the very top of
        the screen', 'the bottom left corner'); (None, 0) if there is none. A mention gives
        (mention index as int, 1)."""
        start = k
        n = len(items)

        def word(j):
            return None if j >= n or isinstance(items[j], tuple) else words[items[j]].text

        while word(k) in ("the", "a", "very", "far", "upper", "lower", "top", "bottom") and word(k) in \
                ("the", "a", "very", "far"):
            k += 1
        if k < n and isinstance(items[k], tuple) and items[k][0] == "@":
            return items[k][1], k - start + 1
        w = word(k)
        vec = None
        if w in VERTICAL_ADJ and word(k + 1) in ("left", "right"):
            vec = (POSITION_WORDS[word(k + 1)][0], VERTICAL_ADJ[w])
            k += 2
        elif w in ("left", "right") and word(k + 1) in ("top", "bottom", "upper", "lower"):
            vec = (POSITION_WORDS[w][0], VERTICAL_ADJ[word(k + 1)])
            k += 2
        elif w in ("upper", "lower") and word(k + 1) in PLACE_NOUNS | {"half", "part", "screen", "frame"}:
            vec = (0.0, VERTICAL_ADJ[w])
            k += 1
        elif w in POSITION_WORDS and POSITION_WORDS[w] is not None:
            vec = POSITION_WORDS[w]
            k += 1
        else:
            return None, 0
        while word(k) in PLACE_NOUNS or word(k) == "hand":
            k += 1
        if word(k) == "of" and word(k + 1) in ("the", "this", "a") and word(k + 2) is not None:
            k += 3
        elif word(k) == "of" and word(k + 1) is not None and not isinstance(items[k + 1], tuple):
            k += 2
        return vec, k - start

    # -------------------------------------------------------------------------------- reading

    def read(self, prompt: str, labels: Sequence[str], *, blanked: str | None = None) -> Reading:
        """blanked: the prompt with spans the guide already took out (backgrounds ...) as spaces."""
        text = blanked if blanked is not None else prompt
        words = words_of(text)
        warnings: list[str] = []
        subj = self.subjects(labels)
        mentions = self.find_mentions(words, subj, lower_keep_length(text)) if labels else []
        self.bind_names(mentions, subj, warnings)
        mentions = [m for m in mentions if m.subjects or m.kind == "pronoun"]
        for w in words:
            w.mention = None
        for idx, m in enumerate(mentions):
            self._widen(m, words)
            for wi in range(m.first, m.last + 1):
                words[wi].mention = idx
        clauses = self.clauses(words, mentions)
        positions: dict[int, tuple[float, float]] = {}
        camera: list[Camera] = []
        for c in clauses:
            self._split_subject(c, words, mentions, positions)
        self._resolve(clauses, mentions, subj, words)
        evidence: dict[int, list[Evidence]] = {}
        for ci, c in enumerate(clauses):
            if self._camera_clause(c, words):
                c.camera = True
                cam = self._camera(c, words, mentions)
                cam.text, cam.clause = self.source(c, words, mentions, prompt), ci
                camera.append(cam)
                continue
            self._motion(c, words, mentions, evidence, positions, len(labels), self.source(c, words, mentions, prompt))
        return Reading(words, mentions, clauses, evidence, positions, camera, warnings)

    def _split_subject(self, c: Clause, words: list[Word], mentions: list[Mention], positions: dict) -> None:
        k = 0
        items = c.items
        # request wording at the start of a clause ("make", "I want", "please have")
        head = " ".join(words[it].text for it in items[:6] if isinstance(it, int))
        m = REQUEST.match(head + " ")
        if m and isinstance(items[0], int):
            used = len(m.group(0).split())
            while used and k < len(items) and isinstance(items[k], int):
                k += 1
                used -= 1
        subject: list[int] = []
        while k < len(items):
            it = items[k]
            if isinstance(it, tuple):
                if it[0] == "sep":
                    if subject and it[1] in ("and", ",", "nor", "or"):
                        k += 1
                        continue
                    break
                m_ = mentions[it[1]]
                if m_.possessive and k + 1 < len(items) and isinstance(items[k + 1], tuple) and items[k + 1][0] == "@":
                    k += 1  # "the dog's ball": the ball is the subject
                    continue
                subject.append(it[1])
                k += 1
                d = self._descriptor(items, k, words)
                if d:
                    vec, _ = self.position(items, k + 1, words)
                    if isinstance(vec, tuple):
                        for s in m_.subjects or ():
                            positions[s] = vec
                        positions[("m", it[1])] = vec
                    k += d
                continue
            w = words[it].text
            if subject and w in ("and", "nor", "or", ",", "both", "all", "each", "neither", "either"):
                k += 1
                continue
            if not subject and (w in SKIP_BEFORE_SUBJECT or w in GROUP_WORDS or w.endswith("ly")):
                k += 1
                continue
            break
        c.subject = subject
        c.pred = items[k:]
        # descriptors after mentions inside the predicate ("the flower on the left")
        j = 0
        while j < len(c.pred):
            it = c.pred[j]
            if isinstance(it, tuple) and it[0] == "@":
                d = self._descriptor(c.pred, j + 1, words)
                if d:
                    vec, _ = self.position(c.pred, j + 2, words)
                    if isinstance(vec, tuple):
                        positions[("m", it[1])] = vec
                        c.pred = c.pred[:j + 1] + c.pred[j + 1 + d:]
            j += 1

    def _camera_clause(self, c: Clause, words: list[Word]) -> bool:
        if c.subject:
            return False
        ws = [words[it].text for it in c.items if isinstance(it, int)]
        content = [w for w in ws if w not in SKIP_BEFORE_SUBJECT and w not in ("make", "have", "let", "please")]
        if not content:
            return False
        if content[0] in CAMERA_NOUNS:
            return True
        if lemma(content[0], CAMERA_VERBS) in ("pan", "tilt", "zoom", "dolly", "track", "truck", "crane"):
            return True
        text = " ".join(ws)
        return bool(CAMERA_TERMS.fullmatch(text.strip())) or (
            len(content) <= 3 and bool(CAMERA_TERMS.search(text)) and not any(
                lemma(w, MOTION_VERBS) in MOTION_VERBS for w in content))

    def _camera(self, c: Clause, words: list[Word], mentions: list[Mention]) -> Camera:
        spans = [(words[it].start, words[it].end) for it in c.items if isinstance(it, int)] + \
            [(mentions[it[1]].start, mentions[it[1]].end) for it in c.items if isinstance(it, tuple) and it[0] == "@"]
        start, end = (min(s for s, _ in spans), max(e for _, e in spans)) if spans else (0, 0)
        text = self._text(c.items, words)
        kind, direction = "shot", None
        m = re.search(r"\b(pan|pans|panning|panned|tilt|tilts|tilting|tilted|move|moves|moving|swing|swings|"
                      r"swinging|track|tracks|tracking|truck|trucks|trucking|crane|cranes|craning)\s+(?:slowly\s+|"
                      r"quickly\s+|gently\s+)?(?:to\s+the\s+|over\s+to\s+the\s+|towards?\s+the\s+)?(left|right|up|"
                      r"down|upward|downward|upwards|downwards)\b", text)
        if m:
            verb = lemma(m.group(1), {"pan", "tilt", "move", "swing", "track", "truck", "crane"})
            kind = "tilt" if verb in ("tilt", "crane") else "pan"
            direction = m.group(2).replace("wards", "").replace("ward", "")
        elif re.search(r"\b(zoom|zooms|zooming|push|pushes|pushing|dolly|dollies|dollying|move|moves|moving)\s+"
                       r"(?:slowly\s+)?(in|closer|forward)\b", text):
            kind, direction = "zoom", "in"
        elif re.search(r"\b(zoom|zooms|zooming|pull|pulls|pulling|dolly|dollies|dollying|move|moves|moving)\s+"
                       r"(?:slowly\s+)?(out|back|away)\b", text):
            kind, direction = "zoom", "out"
        elif re.search(r"\b(follow|follows|following|track|tracks|tracking)\b", text):
            kind = "follow"
        elif re.search(r"\b(orbit|orbits|orbiting|circle|circles|circling|rotates?\s+around)\b", text):
            kind = "orbit"
        elif re.search(r"\b(static|still|locked|tripod|does\s+not\s+move|stays|holds)\b", text):
            kind = "static"
        return Camera(kind, direction, start, end, text)

    def _text(self, items: list, words: list[Word]) -> str:
        out = []
        for it in items:
            if isinstance(it, tuple):
                out.append(f"@{it[1]}" if it[0] == "@" else (it[1] or ""))
            else:
                out.append(words[it].text)
        return " ".join(x for x in out if x)

    # -------------------------------------------------------------------------------- pronouns

    def _resolve(self, clauses: list[Clause], mentions: list[Mention], subj: Subjects, words: list[Word]) -> None:
        n = len(subj.labels)
        history: list[tuple[int, ...]] = []  # subject tuples in reading order
        last_compound: tuple[int, ...] = ()  # the last clause subject of two or more ("the man and his dog")

        def pick(pron: str, exclude: tuple[int, ...]) -> tuple[int, ...]:
            if pron == "p":
                if last_compound:
                    return last_compound
                seen = tuple(dict.fromkeys(k for h in history for k in h))
                return seen if len(seen) >= 2 else tuple(range(n))
            for h in reversed(history):
                if len(h) == 1 and h[0] not in exclude and _compatible(pron, subj.kinds[h[0]]):
                    return h
            for h in reversed(history):
                if len(h) == 1 and h[0] not in exclude:
                    return h
            if n == 1:
                return (0,)
            # no antecedent yet ("she walks her dog"): the subject it fits, a matching gender first
            fits = [k for k in range(n) if k not in exclude and _compatible(pron, subj.kinds[k])]
            exact = [k for k in fits if subj.kinds[k] == pron]
            pool = exact or fits
            return (pool[0],) if pool else ()

        for c in clauses:
            ments = [it[1] for it in c.items if isinstance(it, tuple) and it[0] == "@"]
            own: tuple[int, ...] = ()
            for mi in c.subject:
                m = mentions[mi]
                if m.kind == "pronoun" and not m.subjects:
                    m.subjects = pick(m.pron, ())
                    copula = self._text(c.pred[:1], words) in ("is", "are")
                    if copula or not m.subjects:  # "it's a yellow duck": the name after the copula
                        later = next((mentions[x] for x in ments if mentions[x].kind == "name"), None)
                        m.subjects = later.subjects if later else m.subjects
                own += m.subjects
            for mi in ments:
                m = mentions[mi]
                if mi in c.subject:
                    continue
                if m.kind == "pronoun" and not m.subjects:
                    m.subjects = pick(m.pron, own if m.pron != "p" else ())
                if m.subjects:
                    history.append(m.subjects)
            # the subject goes last into the history: "the cat runs after him" looks past the cat
            own = tuple(dict.fromkeys(own))
            if own:
                history.append(own)
                if len(own) >= 2:
                    last_compound = own
            c.subjects = own
        # clauses without a subject
        for ci, c in enumerate(clauses):
            if c.subjects or self._camera_clause(c, words):
                continue
            prev = clauses[ci - 1] if ci > 0 else None
            nxt = clauses[ci + 1] if ci + 1 < len(clauses) else None
            first = next((words[it].text for it in c.items if isinstance(it, int)), "")
            if c.splitter in ("which", "who", "where") and prev is not None:
                before = [it[1] for it in prev.items if isinstance(it, tuple) and it[0] == "@"]
                if before and mentions[before[-1]].subjects:
                    c.subjects = mentions[before[-1]].subjects
                    continue
            if (prev is None or prev.sentence != c.sentence) and nxt is not None and nxt.sentence == c.sentence \
                    and (first.endswith("ing") or first in STARTING_WORDS) and nxt.subjects:
                c.subjects = nxt.subjects  # "starting at the bottom, the star ..."
                continue
            back = next((p for p in reversed(clauses[:ci]) if p.subjects and not p.camera), None)
            if back is not None and not (prev is not None and prev.camera and prev.sentence == c.sentence and
                                         back.sentence != c.sentence):
                c.subjects = back.subjects
            elif n:
                c.subjects = (0,) if n == 1 else ()

    # -------------------------------------------------------------------------------- motions

    def source(self, c: Clause, words: list[Word], mentions: list[Mention], prompt: str) -> str:
        """The user's own words of a clause."""
        spans = [(words[it].start, words[it].end) for it in c.items if isinstance(it, int) and not words[it].punct] + \
            [(mentions[it[1]].start, mentions[it[1]].end) for it in c.items if isinstance(it, tuple) and it[0] == "@"]
        if not spans:
            return ""
        return " ".join(prompt[min(s for s, _ in spans):max(e for _, e in spans)].split())

    def _motion(self, c: Clause, words: list[Word], mentions: list[Mention], evidence: dict, positions: dict,
                n: int, source: str) -> None:
        targets = list(c.subjects)
        text = self._text(c.items, words)
        pred_text = self._text(c.pred, words)
        if not targets:
            if n and re.search(r"\w", pred_text):
                targets = [-1]  # decided later: the first subject without a motion
            else:
                return

        def add(k: int, ev: Evidence) -> None:
            ev.text = source
            evidence.setdefault(k, []).append(ev)

        objects = [it[1] for it in c.pred if isinstance(it, tuple) and it[0] == "@"]
        obj_subjects = [s for mi in objects for s in mentions[mi].subjects if s not in targets]
        scan = NEGATED_DIRECTION.sub(" ", pred_text)
        # negation: "doesn't move", "neither ... nor ... moves", "never moves"
        negated = bool(NEGATION.search(NEGATED_DIRECTION.sub(" ", text))) or \
            any(mentions[mi].det in ("neither", "no") for mi in c.subject)
        if negated:
            for k in targets:
                add(k, Evidence("stay"))
            return
        turn = next((TURN_WORDS[w] for w in TURN_WORDS if re.search(rf"\b{w}\b", scan)), None)
        for kind, rx in (("grow", GROW), ("shrink", SHRINK)):
            if rx.search(scan):
                for k in targets:
                    add(k, Evidence(kind))
                return
        if SWAP.search(scan) or MEET.search(scan):
            kind = "swap" if SWAP.search(scan) else "meet"
            pair = list(dict.fromkeys([*targets, *obj_subjects]))[:2]
            if len(pair) == 2 and -1 not in pair:
                add(pair[0], Evidence(kind, partner=pair[1]))
                add(pair[1], Evidence(kind, partner=pair[0]))
                return
        if APART.search(scan):
            pair = list(dict.fromkeys([*targets, *obj_subjects]))
            for k in pair:
                if k >= 0:
                    others = [j for j in pair if j != k]
                    add(k, Evidence("apart", partner=others[0] if others else None))
            return
        chase = CHASE.search(scan)
        if chase:
            passive = re.search(r"\b(?:is|are|was|were|gets?|getting|got|being|been)\s+(?:\w+ly\s+)?chased\b", scan)
            by = re.search(r"\bby\s+@(\d+)", scan)
            if passive and by and mentions[int(by.group(1))].subjects:
                chaser = mentions[int(by.group(1))].subjects[0]
                ev = self._direction(c.pred, words, positions, mentions)
                for k in targets:
                    if k >= 0:
                        add(k, ev)
                        add(chaser, Evidence("chase", partner=k))
                return
            after = [mi for mi in objects if self._index_of(c.pred, mi) > self._word_pos(c.pred, words, chase.group(0))]
            target = next((mentions[mi].subjects[0] for mi in after if mentions[mi].subjects and
                           mentions[mi].subjects[0] not in targets), None)
            if target is not None:
                for k in targets:
                    if k >= 0:
                        add(k, Evidence("chase", partner=target))
                # a direction after the target is the target's move ("chases the cat to the right")
                ev = self._direction(c.pred, words, positions, mentions)
                if ev.kind == "move":
                    add(target, ev)
                return
        for kind, rx in (("spin", SPIN), ("circle", CIRCLE)):
            if rx.search(scan):
                for k in targets:
                    add(k, Evidence(kind, turn=turn))
                return
        zig = ZIGZAG.search(scan)
        if BOUNCE.search(scan) and not zig:
            ev = self._direction(c.pred, words, positions, mentions)
            for k in targets:
                add(k, Evidence("bounce", dirs=ev.dirs if ev.kind == "move" else []))
            return
        verb = self._main_verb(c.pred, words)
        stay = STAY.search(scan)
        if stay and not zig and not (verb and lemma(verb, MOTION_VERBS) in MOTION_VERBS and
                                     stay.group(0) in ("in place", "still")):
            for k in targets:
                add(k, Evidence("stay"))
            return
        # passive and causative: who moves
        passive = re.search(r"\b(?:is|are|was|were|gets?|getting|got|being|been|be)\s+(?:\w+ly\s+)?(?:both\s+|all\s+)?"
                            r"(\w+ed|" + "|".join(PARTICIPLES_IRREGULAR) + r")\b", scan)
        reduced = re.match(r"^(\w+ed|" + "|".join(PARTICIPLES_IRREGULAR) + r")\b.*\bby\b", pred_text)
        by = re.search(r"\bby\s+@(\d+)", scan)
        ev = self._direction(c.pred, words, positions, mentions)
        if zig:
            ev.kind = "zigzag" if ev.kind in ("move", "unsure") else ev.kind
            if not ev.dirs:
                ev.kind = "unsure"
        if passive or reduced:
            participle = (passive or reduced).group(1)
            base = lemma(participle, CAUSATIVE_WITH | CAUSATIVE_IMPULSE | UP_VERBS | DOWN_VERBS)
            if base in UP_VERBS | {"lift", "raise", "hoist"} and ev.kind in ("move", "unsure") and not ev.dirs:
                ev.dirs.append((0.0, -1.0))
                ev.kind = "move"
            if base in DOWN_VERBS | {"drop", "lower"} and ev.kind in ("move", "unsure") and not ev.dirs:
                ev.dirs.append((0.0, 1.0))
                ev.kind = "move"
            if ev.kind in ("move", "zigzag"):
                for k in targets:
                    add(k, ev)
                if by and base in CAUSATIVE_WITH:
                    for agent in mentions[int(by.group(1))].subjects:
                        if agent not in targets:
                            add(agent, Evidence(ev.kind, list(ev.dirs), weak=True))
            return
        causative = verb is not None and lemma(verb, CAUSATIVE_WITH | CAUSATIVE_IMPULSE) in \
            CAUSATIVE_WITH | CAUSATIVE_IMPULSE
        if causative and obj_subjects and ev.kind in ("move", "zigzag"):
            base = lemma(verb, CAUSATIVE_WITH | CAUSATIVE_IMPULSE)
            first_obj = obj_subjects[0]
            add(first_obj, ev)
            if base in CAUSATIVE_WITH:
                for k in targets:
                    if k >= 0:
                        add(k, Evidence(ev.kind, list(ev.dirs), weak=True))
            return
        if verb is not None and lemma(verb, NON_MOTION) in NON_MOTION and not ev.dirs:
            return
        if ev.kind == "unsure":
            # "walks with him": the same motion as him
            with_ = re.search(r"\b(?:with|alongside|beside)\s+@(\d+)", scan)
            if with_ and mentions[int(with_.group(1))].subjects:
                src = mentions[int(with_.group(1))].subjects[0]
                for k in targets:
                    if k != src:
                        add(k, Evidence("copy", partner=src))
                return
            if verb is None or lemma(verb, MOTION_VERBS) not in MOTION_VERBS:
                return  # no motion verb, no direction: nothing stated
        for k in targets:
            add(k, ev)

    def _index_of(self, items: list, mi: int) -> int:
        return next((i for i, it in enumerate(items) if isinstance(it, tuple) and it == ("@", mi)), -1)

    def _word_pos(self, items: list, words: list[Word], phrase: str) -> int:
        first = phrase.split()[0]
        return next((i for i, it in enumerate(items) if isinstance(it, int) and words[it].text == first), 0)

    def _main_verb(self, items: list, words: list[Word]) -> str | None:
        for it in items:
            if isinstance(it, tuple):
                if it[0] == "@":
                    return None
                continue
            w = words[it].text
            if w in ("should", "will", "would", "can", "could", "must", "to", "is", "are", "does", "do", "also",
                     "then", "just", "both", "all", "gets", "get", "slowly", "quickly", "gently", "first",
                     "suddenly", "not", "now", "be", "being", "keeps", "starts", "begins", "continues", "tries") or \
                    (w.endswith("ly") and len(w) > 4):
                continue
            if w in DIRECTION_WORDS or w in POSITION_WORDS or w in ("from", "to", "toward", "towards", "in", "on"):
                return None
            return w
        return None

    def _direction(self, items: list, words: list[Word], positions: dict, mentions: list[Mention]) -> Evidence:
        """A predicate's direction: direction words, verbs of rising and falling, and its path (start and
        end points, or a goal), as one vector (kind "move"), or kind "unsure" when there is none."""
        n = len(items)

        def word(j):
            return None if j >= n or isinstance(items[j], tuple) else words[items[j]].text

        dirs: list[tuple[float, float]] = []
        start = end = None
        goal = None  # a subject as the goal ("over to the flower on the left")
        joined = self._text(items, words)
        # item indices of negated directions ("not the right") and of idioms ("speeds up", "ends up")
        blocked: set[int] = set()
        for m in NEGATED_DIRECTION.finditer(joined):
            first = len(joined[:m.start()].split())
            blocked.update(range(first, first + len(m.group(0).split())))
        idioms = {len(joined[:m.end()].split()) - 1 for m in PARTICLE_IDIOMS.finditer(joined)}
        j = 0
        marker = None  # "start" after from/starting at, "end" after to/toward/into/off, "ending" after ends up
        while j < n:
            w = word(j)
            if j in blocked:
                j += 1
                continue
            if isinstance(items[j], tuple):
                if items[j][0] == "@" and marker == "end":
                    goal, marker = items[j][1], None
                j += 1
                continue
            if w in START_MARKERS or w in STARTING_WORDS:
                marker = "start"
                j += 2 if (w == "out" and word(j + 1) == "of") or \
                    (w in STARTING_WORDS and word(j + 1) in ("at", "from", "in", "on")) else 1
                continue
            if w in END_MARKERS and (w != "at" or marker == "ending"):
                marker = None if word(j + 1) == "each" else "end"  # "toward each other" is a meeting
                j += 1
                continue
            if w in ENDING_WORDS and w != "up":
                marker = "ending"
                j += 1
                continue
            vec, used = self.position(items, j, words)
            if used and isinstance(vec, tuple):
                after = word(j + used)
                if marker is None and w not in DIRECTION_WORDS and after in ("to", "toward", "towards") and \
                        self.position(items, j + used + 1, words)[1]:
                    start = vec  # "right to left", "top to bottom"
                elif marker == "start":
                    start = vec
                elif marker in ("end", "ending"):
                    end = vec
                elif w in DIRECTION_WORDS:
                    dirs.append(DIRECTION_WORDS[w])
                marker = None
                j += used
                continue
            if w in DIRECTION_WORDS and j not in idioms:
                if not (w in ("up", "down") and word(j + 1) == "and" and word(j + 2) in ("down", "up")):
                    dirs.append(DIRECTION_WORDS[w])
                marker = "end" if word(j + 1) in ("to", "toward", "towards", "into") else None
                j += 1
                continue
            if w in PATH_FILLERS:
                j += 1
                continue
            if lemma(w, UP_VERBS) in UP_VERBS:
                dirs.append((0.0, -1.0))
            elif lemma(w, DOWN_VERBS) in DOWN_VERBS:
                dirs.append((0.0, 1.0))
            elif lemma(w, {"lift", "take"}) in ("lift", "take") and word(j + 1) == "off":
                dirs.append((0.0, -1.0))
                j += 1
            if marker != "ending":
                marker = None
            j += 1
        if goal is not None and end is None:
            end = positions.get(("m", goal)) or next((positions[s] for s in mentions[goal].subjects
                                                      if s in positions), None)
        vec = _combine(dirs, start, end)
        return Evidence("move", [vec]) if vec is not None else Evidence("unsure")


def _combine(dirs: list, start, end) -> tuple[float, float] | None:
    path = None
    if start is not None and end is not None:
        path = (end[0] - start[0], end[1] - start[1])
    elif end is not None and end != (0.0, 0.0):
        path = end
    elif start is not None and start != (0.0, 0.0):
        path = (-start[0], -start[1])
    if path is not None and path == (0.0, 0.0):
        path = None
    d = None
    if dirs:
        sx = sum(v[0] for v in dict.fromkeys(dirs))
        sy = sum(v[1] for v in dict.fromkeys(dirs))
        d = (sx, sy) if (sx, sy) != (0.0, 0.0) else None
    if path is None:
        return d
    if d is None:
        return path
    dot = path[0] * d[0] + path[1] * d[1]
    if abs(dot) < 1e-9:
        return (path[0] + d[0], path[1] + d[1])
    return path


def direction_name(vec: tuple[float, float]) -> str:
    """Nearest of the 8 screen directions; a minor component under 40% of the major one is dropped."""
    x, y = vec
    ax, ay = abs(x), abs(y)
    horiz = "left" if x < 0 else "right"
    vert = "up" if y < 0 else "down"
    if ay < 0.4 * ax:
        return horiz
    if ax < 0.4 * ay:
        return vert
    return f"{vert}_{horiz}"


def unit(vec: tuple[float, float]) -> tuple[float, float]:
    n = math.hypot(*vec)
    return (vec[0] / n, vec[1] / n) if n else (0.0, 0.0)
