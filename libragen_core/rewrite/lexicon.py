"""The words the offline reader knows: splitting text into words, verb lemmas, and the lexicons of
subjects (people, animals, pronouns), clause joints, motions (regular expressions over a clause's
text, where each mention reads "@<index>"), directions and screen positions.

These describe user English, not a model's captions, so they are the same for every style
guide; analysis.py reads prompts with them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# ----------------------------------------------------------------------------------------- words

_TOKEN = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*|[.,;:!?]")
SENTENCE_END = {".", "!", "?", ";"}
_N_T = {"wo": "will", "ca": "can", "sha": "shall", "ai": "is"}
_IS_AFTER = {"it", "there", "that", "he", "she", "what", "here", "who", "where", "this"}
_SUFFIXES = {"re": "are", "ll": "will", "d": "would", "ve": "have", "m": "am"}
_SPLIT_HYPHEN = {"top", "bottom", "upper", "lower", "left", "right", "hand", "center", "centre", "middle", "up",
                 "down"}


@dataclass
class Word:
    text: str  # lower case; punctuation as itself
    start: int
    end: int
    possessive: bool = False
    mention: int | None = None  # index of the mention that covers this word

    @property
    def punct(self) -> bool:
        return self.text in ".,;:!?"


def lower_keep_length(text: str) -> str:
    """Lower case with every character's index kept (str.lower can lengthen a few, e.g. 'İ')."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


@lru_cache(maxsize=256)
def label_words(label: str) -> tuple[str, ...]:
    """A label's words without punctuation and articles ('the woman in a yellow raincoat' -> woman in
    a yellow raincoat minus the leading article)."""
    return tuple(w.text for w in words_of(label) if not w.punct and w.text not in ("the", "a", "an"))


def label_head(words) -> str:
    """The head noun of a label's words: the last word before a preposition ('woman' in 'woman in a
    yellow raincoat', 'ball' in 'ball of yarn')."""
    cut = next((i for i, w in enumerate(words) if w in PLAIN_PREPS), len(words))
    head = words[:cut] or words
    return head[-1] if head else ""


def words_of(text: str) -> list[Word]:
    out: list[Word] = []
    for m in _TOKEN.finditer(lower_keep_length(text)):
        w, s, e = m.group(0).replace("’", "'"), m.start(), m.end()
        if w.endswith("n't") and len(w) > 3:
            stem = w[:-3]
            out += [Word(_N_T.get(stem, stem), s, e), Word("not", s, e)]
            continue
        head, apo, tail = w.rpartition("'")
        if apo and head and "'" not in head:
            if tail == "s":
                if head in _IS_AFTER:
                    out += [Word(head, s, e), Word("is", s, e)]
                elif head == "let":
                    out += [Word("let", s, e), Word("us", s, e)]
                else:
                    out.append(Word(head, s, e, possessive=True))
                continue
            if tail in _SUFFIXES:
                out += [Word(head, s, e), Word(_SUFFIXES[tail], s, e)]
                continue
        if w in ("zig-zag", "zig-zags", "zig-zagging", "zig-zagged"):
            out.append(Word(w.replace("-", ""), s, e))
            continue
        parts = w.split("-")
        if len(parts) > 1 and all(p in _SPLIT_HYPHEN for p in parts):
            pos = s
            for p in parts:
                out.append(Word(p, pos, pos + len(p)))
                pos += len(p) + 1
            continue
        out.append(Word(w, s, e))
    # "zig zag(s)" -> one word
    merged: list[Word] = []
    for w in out:
        if merged and merged[-1].text == "zig" and w.text.startswith("zag"):
            merged[-1] = Word("zig" + w.text, merged[-1].start, w.end)
        else:
            merged.append(w)
    return merged


_IRREGULAR = {
    "rose": "rise", "risen": "rise", "fell": "fall", "fallen": "fall", "sank": "sink", "sunk": "sink",
    "flew": "fly", "flown": "fly", "flies": "fly", "ran": "run", "went": "go", "gone": "go", "goes": "go",
    "came": "come", "swam": "swim", "drove": "drive", "driven": "drive", "rode": "ride", "ridden": "ride",
    "threw": "throw", "thrown": "throw", "blew": "blow", "blown": "blow", "shot": "shoot", "spun": "spin",
    "swung": "swing", "dove": "dive", "leapt": "leap", "sped": "speed", "slid": "slide", "stood": "stand",
    "sat": "sit", "took": "take", "taken": "take", "drew": "draw", "drawn": "draw", "swept": "sweep",
    "shook": "shake", "shaken": "shake", "flung": "fling", "led": "lead", "grew": "grow", "grown": "grow",
    "shrank": "shrink", "shrunk": "shrink", "got": "get", "gotten": "get", "does": "do", "did": "do",
    "has": "have", "had": "have", "is": "be", "are": "be", "was": "be", "were": "be", "been": "be",
    "being": "be", "am": "be", "hit": "hit", "put": "put", "set": "set", "knelt": "kneel", "dragged": "drag",
    "carries": "carry", "carried": "carry", "hurries": "hurry", "hurried": "hurry", "tries": "try",
    "dies": "die", "lies": "lie", "lying": "lie", "towed": "tow", "bit": "bite", "fled": "flee", "crept": "creep",
}


def lemma(word: str, known: set[str] | frozenset[str] | None = None) -> str:
    """A verb's base form by suffix rules ('dropped' -> drop, 'rises' -> rise); with `known`, the
    first candidate in it (else the word itself)."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    cands = [word]
    if word.endswith("ies") and len(word) > 4:
        cands.append(word[:-3] + "y")
    if word.endswith("ied") and len(word) > 4:
        cands.append(word[:-3] + "y")
    if word.endswith("es") and len(word) > 3:
        cands += [word[:-2], word[:-1]]
    elif word.endswith("s") and not word.endswith("ss") and len(word) > 2:
        cands.append(word[:-1])
    for suf in ("ing", "ed"):
        if word.endswith(suf) and len(word) > len(suf) + 1:
            stem = word[: -len(suf)]
            if len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in "lsz":
                cands.append(stem[:-1])
            cands += [stem, stem + "e"]
            if len(stem) > 2 and stem[-1] == stem[-2]:
                cands.append(stem[:-1])
    if known is None:
        return next((c for c in cands[1:] if len(c) > 2), word) if len(cands) > 1 else word
    return next((c for c in cands if c in known), word)


# ------------------------------------------------------------------------------------- lexicons

PERSON_M = frozenset("man boy guy gentleman father dad grandfather grandpa king prince husband son brother uncle "
                     "fisherman sir he".split())
PERSON_F = frozenset("woman girl lady mother mom mum grandmother grandma granny queen princess wife daughter "
                     "sister aunt bride hen cow mare actress she".split())
PERSON_N = frozenset("person child kid baby toddler teenager teen runner dancer chef player barista diver rider "
                     "driver farmer doctor teacher student friend skater surfer pilot worker artist singer "
                     "athlete cyclist skier hiker model customer soldier knight wizard astronaut clown robot "
                     "people couple family character".split())
ANIMALS = frozenset("dog puppy pup cat kitten kitty bird horse pony cow sheep lamb rabbit bunny bear fox lion "
                    "tiger elephant monkey fish duck duckling parrot owl eagle hawk pigeon chicken hen rooster "
                    "chick goose swan penguin frog toad turtle tortoise snail crab shark whale dolphin octopus "
                    "jellyfish bee fly butterfly ladybug beetle ant spider mouse rat hamster squirrel deer wolf "
                    "pig goat donkey giraffe zebra snake lizard dinosaur dragon husky beagle retriever poodle "
                    "terrier corgi bulldog shepherd labrador tabby calf foal".split())
PRONOUNS = {"it": "n", "its": "n", "itself": "n", "he": "m", "him": "m", "his": "m", "himself": "m",
            "she": "f", "her": "f", "hers": "f", "herself": "f", "they": "p", "them": "p", "their": "p",
            "theirs": "p", "themselves": "p"}
POSSESSIVE_DETS = {"his", "her", "its", "their", "my", "your", "our"}
GROUP_WORDS = {"both", "all", "neither", "either", "each", "two", "three", "four"}
PLAIN_PREPS = {"in", "with", "of", "wearing", "holding", "on", "at", "and", "from", "for", "carrying", "by"}
CAMERA_NOUNS = {"camera", "cam", "view", "shot", "lens", "viewpoint", "pov", "footage"}
FRAME_NOUNS = {"screen", "frame", "image", "picture", "video", "clip", "scene", "canvas", "window"}
CAMERA_VERBS = {"pan", "tilt", "zoom", "dolly", "track", "truck", "crane", "orbit", "follow", "push", "pull",
                "move", "rotate", "swing", "circle", "stay", "remain", "hold", "shake"}
CAMERA_TERMS = re.compile(r"\b(?:tracking|aerial|drone|wide|close-up|closeup|establishing|static|handheld|hand-held|"
                          r"locked-off|tripod|overhead|low-angle|high-angle|bird's-eye|fpv|orbit|pov|dolly)\s*"
                          r"(?:shot|view|angle|camera|cam)?\b|\b(?:pan|panning|tilt|tilting|zoom|zooming)\s+"
                          r"(?:in|out|up|down|left|right|to the left|to the right)\b|\bslow[- ]?motion\b|\bslowmo\b")

SPLIT_WORDS = {"and", "while", "whilst", "as", "but", "whereas", "then", "which", "who", "when", "until", "till",
               "after", "before", "though", "although", "because", "where", "nor", "meanwhile"}
NO_SPLIT_AFTER_AS = {"well", "far", "if", "though", "much", "long", "soon", "big", "small", "fast"}
AFTER_VERBS = {"run", "go", "come", "race", "hurry", "rush", "dash", "chase", "fly", "swim", "head", "sprint",
                "scurry", "dart", "gallop", "charge", "zoom", "look", "trail", "lag"}
MODIFIER_STARTS = {"up", "down", "left", "right", "away", "forth", "back", "around", "round", "to", "toward",
                   "towards", "into", "onto", "over", "off", "out", "upward", "upwards", "downward", "downwards",
                   "bigger", "larger", "smaller", "taller", "wider", "shorter", "faster", "slower", "higher",
                   "lower", "farther", "further", "more", "less", "again", "together", "then", "forward",
                   "forwards", "backward", "backwards", "across", "along", "sideways", "leftward", "rightward",
                   "leftwards", "rightwards"}
SKIP_BEFORE_SUBJECT = {"the", "a", "an", "both", "neither", "either", "all", "each", "also", "and", "nor", ",",
                       "then", "first", "finally", "meanwhile", "now", "so", "just", "suddenly", "there", "is",
                       "are", "next", "later", "simultaneously", "at", "same", "time", "slowly", "quickly", "or"}
REQUEST = re.compile(
    r"^(?:please\s+)?(?:(?:can|could|would)\s+you\s+(?:please\s+)?)?(?:make\s+it\s+so(?:\s+that)?|make|have|let|"
    r"show(?:\s+me)?|animate|i\s+want(?:\s+to\s+see)?|i\s+would\s+like(?:\s+to\s+see)?|i\s+need|"
    r"(?:create|generate|make|render)?\s*(?:a\s+)?(?:video|clip|scene|shot|animation)\s+(?:where|of|in\s+which|with|"
    r"showing)|we\s+see|there\s+should\s+be)\s+")

# motion words: regular expressions over a clause's text, where each mention reads "@<index>"
_RX = lambda s: re.compile(s)  # noqa: E731
NEGATION = _RX(r"\b(?:not|never|neither|nor|no\s+longer|without)\b")
NEGATED_DIRECTION = _RX(r"\b(?:not|instead\s+of|rather\s+than|never)\s+(?:to\s+|toward\s+|towards\s+|going\s+|"
                        r"moving\s+)?(?:the\s+)?(?:very\s+)?(?:(?:top|bottom|upper|lower)\s+)?(?:left|right|up|down|"
                        r"top|bottom|upward|downward|upwards|downwards)(?:\s+(?:side|edge|corner|one))?\b")
STAY = _RX(r"\b(?:stay|stays|staying|stayed|remain|remains|remaining|remained|sit|sits|sitting|rest|rests|resting|"
           r"wait|waits|waiting|sleep|sleeps|sleeping|stand\s+still|stands\s+still|standing\s+still|"
           r"holds?\s+still|keeps?\s+still|stationary|motionless|parked|frozen|stay\s+put|stays\s+put|"
           r"(?:stand|stands|standing|sit|sits|sitting)\s+there|in\s+place|where\s+(?:it|he|she|they)\s+(?:is|are)|"
           r"does\s+nothing|not\s+moving|idle|still)\b")
GROW = _RX(r"\b(?:grow|grows|growing|grew|grown|expand|expands|expanding|expanded|swell|swells|swelling|swelled|"
           r"enlarge|enlarges|enlarging|inflate|inflates|inflating|inflated|puffs?\s+up|balloons?\s+(?:up|in\s+size)|"
           r"scal(?:e|es|ed|ing)\s+up|(?:get|gets|getting|grows?|becomes?|becoming)\s+(?:much\s+|a\s+lot\s+)?(?:bigger|larger|"
           r"huge|taller|wider))\b")
SHRINK = _RX(r"\b(?:shrink|shrinks|shrinking|shrank|shrunk|dwindle|dwindles|dwindling|contract|contracts|"
             r"contracting|deflate|deflates|deflating|deflated|scal(?:e|es|ed|ing)\s+down|(?:get|gets|getting|becomes?|becoming)"
             r"\s+(?:much\s+|a\s+lot\s+)?(?:smaller|tiny|tinier|little))\b")
SPIN = _RX(r"\b(?:spin|spins|spinning|spun|rotate|rotates|rotating|rotated|twirl|twirls|twirling|twirled|whirl|"
           r"whirls|whirling|pirouette|pirouettes|pirouetting|turns?\s+(?:round\s+and\s+round|around|round|in\s+place|"
           r"on\s+the\s+spot|clockwise|counterclockwise|anticlockwise|counter-clockwise|anti-clockwise)|"
           r"turning\s+(?:around|round|clockwise|counterclockwise|anticlockwise))\b")
CIRCLE = _RX(r"\b(?:circle|circles|circling|circled|orbit|orbits|orbiting|orbited|loop|loops|looping|looped|"
             r"revolve|revolves|revolving|revolved|in\s+(?:a|one)\s+(?:\w+\s+)?(?:circle|loop)|in\s+circles|"
             r"round\s+and\s+round|around\s+and\s+around|goes\s+(?:a)?round\s+in)\b")
BOUNCE = _RX(r"\b(?:bounce|bounces|bouncing|bounced|hop|hops|hopping|hopped|bob|bobs|bobbing|bobbed|"
             r"(?:jump|jumps|jumping|leap|leaps|leaping|spring|springs|springing|move|moves|moving|go|goes|going|"
             r"bob|bobs|bobbing)\s+up\s+and\s+down|up\s+and\s+down)\b")
ZIGZAG = _RX(r"\b(?:zigzag|zigzags|zigzagging|zigzagged|weave|weaves|weaving|wove|snake|snakes|snaking|wiggle|"
             r"wiggles|wiggling|slalom|slaloms|slaloming)\b|in\s+a\s+zigzag")
CHASE = _RX(r"\b(?:chase|chases|chasing|chased|follow|follows|following|followed|pursue|pursues|pursuing|pursued|"
            r"tail|tails|tailing|(?:run|runs|running|ran|go|goes|going|went|come|comes|coming|came|race|races|"
            r"racing|hurry|hurries|hurrying|rush|rushes|rushing|fly|flies|flying|swim|swims|swimming|dash|dashes|"
            r"dashing)\s+after)\b")
SWAP = _RX(r"\b(?:swap|swaps|swapping|swapped|switch|switches|switching|switched|trade|trades|trading|traded|"
           r"exchange|exchanges|exchanging|change|changes|changing)\s+(?:places|positions|spots|sides|place)\b")
MEET = _RX(r"\b(?:towards?\s+each\s+other|to\s+each\s+other|towards?\s+one\s+another|meet|meets|meeting|met|"
           r"come\s+together|comes\s+together|coming\s+together|converge|converges|converging|approach\s+each\s+other|"
           r"collide|collides|colliding|close\s+in\s+on\s+each\s+other)\b")
APART = _RX(r"\b(?:apart|away\s+from\s+each\s+other|away\s+from\s+one\s+another|in\s+opposite\s+directions|"
            r"separate|separates|separating|part\s+ways|diverge|diverges|diverging)\b")
TURN_WORDS = {"clockwise": "cw", "counterclockwise": "ccw", "counter-clockwise": "ccw", "anticlockwise": "ccw",
              "anti-clockwise": "ccw"}
UP_VERBS = frozenset("rise ascend climb soar levitate lift raise hoist launch elevate surface".split())
DOWN_VERBS = frozenset("fall drop sink descend plummet plunge tumble drip dive lower topple slump sag "
                       "settle land".split())
# verbs with a direction that is not a journey ("looks left", "points up", "speeds up")
NON_MOTION = frozenset("look gaze stare glance point face watch lean nod wave peek peer smile listen wait sleep "
                       "lie sit stand stay remain rest hold keep be have see turn_head seem appear".split())
PARTICLE_IDIOMS = _RX(r"\b(?:end|ends|ending|ended|speed|speeds|speeding|pick|picks|picking|show|shows|showing|"
                      r"wake|wakes|waking|light|lights|lighting|give|gives|giving|open|opens|opening|fill|fills|"
                      r"filling|cheer|cheers|heat|heats|warm|warms|line|lines|back|backs|catch|catches|catching|"
                      r"sit|sits|sitting|stand|stands|standing|look|looks|looking|slow|slows|slowing|calm|calms|"
                      r"shut|shuts|break|breaks|cool|cools|bend|bends|bending|point|points|pointing|swell|swells|"
                      r"puff|puffs|wind|winds|mess|messes|set|sets|upside)\s+(?:up|down)\b")
MOTION_VERBS = frozenset(
    "move go head slide drift walk run fly travel glide roll float dash scoot shift wander zoom race swim crawl "
    "scurry paddle drive sail trot scuttle hurry rush dart shoot streak march stroll skate ride flutter buzz leave "
    "come exit enter sprint jog gallop hop creep slither waddle stride step bolt charge cruise coast soar climb "
    "rise fall drop sink descend ascend plummet tumble swing sweep surf skid bound scramble wade cross flee "
    "travel journey migrate speed hover sway".split())
CAUSATIVE_WITH = frozenset("push pull drag tow carry roll ride lead walk steer haul escort herd shove wheel "
                           "guide".split())
CAUSATIVE_IMPULSE = frozenset("kick throw toss knock hit bat fling flick launch shoot blow bump nudge send "
                              "lift raise lower drop spin whack smack punch strike sweep".split())
PARTICIPLES_IRREGULAR = {"thrown", "blown", "drawn", "taken", "driven", "ridden", "shaken", "flung", "swept", "led",
                         "hit", "shot", "spun", "sent", "knocked", "held", "struck", "dropped", "lifted"}

# positions on screen: x right, y down (screen coordinates, as SpriteWorld's motions)
POSITION_WORDS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "top": (0.0, -1.0), "bottom": (0.0, 1.0),
                  "center": (0.0, 0.0), "centre": (0.0, 0.0), "middle": (0.0, 0.0), "sky": (0.0, -1.0),
                  "ceiling": (0.0, -1.0), "ground": (0.0, 1.0), "floor": (0.0, 1.0), "surface": (0.0, -1.0),
                  "heavens": (0.0, -1.0), "bottom-left": (-1.0, 1.0), "skies": (0.0, -1.0), "depths": (0.0, 1.0),
                  "deep": (0.0, 1.0), "seabed": (0.0, 1.0), "horizon": None}
VERTICAL_ADJ = {"top": -1.0, "upper": -1.0, "bottom": 1.0, "lower": 1.0}
DIRECTION_WORDS = {"left": (-1.0, 0.0), "leftward": (-1.0, 0.0), "leftwards": (-1.0, 0.0), "right": (1.0, 0.0),
                   "rightward": (1.0, 0.0), "rightwards": (1.0, 0.0), "up": (0.0, -1.0), "upward": (0.0, -1.0),
                   "upwards": (0.0, -1.0), "skyward": (0.0, -1.0), "skywards": (0.0, -1.0), "uphill": (0.0, -1.0),
                   "upstairs": (0.0, -1.0), "aloft": (0.0, -1.0), "down": (0.0, 1.0), "downward": (0.0, 1.0),
                   "downwards": (0.0, 1.0), "downhill": (0.0, 1.0), "downstairs": (0.0, 1.0)}
PLACE_NOUNS = {"side", "edge", "corner", "end", "part", "half", "border", "wall", "area", "bit", "hand", "portion",
               "sides", "edges", "corners"}
START_MARKERS = {"from", "out"}  # out (of)
END_MARKERS = {"to", "toward", "towards", "into", "onto", "for", "till", "until", "reaching", "reaches", "reach",
               "off", "at"}  # "at" only after ending verbs (checked)
ENDING_WORDS = {"end", "ends", "ending", "ended", "finish", "finishes", "finishing", "arrive", "arrives", "arriving",
                "stop", "stops", "stopping", "land", "lands", "landing", "winds", "up", "settle", "settles"}
STARTING_WORDS = {"start", "starts", "starting", "started", "begin", "begins", "beginning", "began"}


PATH_ADJECTIVES = set("a an one big small large wide tight little huge perfect full complete slow fast single lazy "
                       "giant smooth circular clockwise counterclockwise anticlockwise counter-clockwise "
                       "anti-clockwise".split())
PATH_FILLERS = {"over", "across", "back", "away", "way", "its", "their", "his", "her", "all", "the", "then",
                 "slowly", "quickly", "straight", "directly"}
SHAPE_PATHS = {"circle", "circles", "loop", "loops", "zigzag", "zigzags", "spiral", "spirals", "orbit"}
BEFORE_VERB = {"to", "should", "will", "would", "can", "could", "must", "then", "also", "and", "slowly", "quickly",
                "not", "never", "it", "they", "he", "she"}


def verb_like(word: str) -> bool:
    if any(rx.fullmatch(word) for rx in (CIRCLE, SPIN, ZIGZAG, BOUNCE, GROW, SHRINK)):
        return True
    return lemma(word, MOTION_VERBS | UP_VERBS | DOWN_VERBS) in MOTION_VERBS | UP_VERBS | DOWN_VERBS


def adjective_like(word: str) -> bool:
    return word not in _FUNCTION_WORDS and word not in SPLIT_WORDS and word not in PRONOUNS and \
        word not in DIRECTION_WORDS and word not in POSITION_WORDS and not verb_like(word) and \
        word not in CAMERA_NOUNS and word.isalpha()


def singular(word: str) -> list[str]:
    out = []
    if word.endswith("ies") and len(word) > 4:
        out.append(word[:-3] + "y")
    if word.endswith("es") and len(word) > 3:
        out.append(word[:-2])
    if word.endswith("s") and len(word) > 2:
        out.append(word[:-1])
    return out


_FUNCTION_WORDS = frozenset(
    "the a an of in on at with by to from is are be it its this that these those there here very so too also "
    "not no do does did will would should could can must may might have has had been being was were am i you we "
    "me my your our us please want like see make let show animate video clip scene where which who what when "
    "one some any each every other another same time first next last then just only still again really "
    "slowly quickly gently softly fast slow way around about over under across through along past "
    "behind beside near into onto upon toward towards out off up down away back while and or but nor as if".split())


@lru_cache(maxsize=1)
def lexicon_words() -> frozenset[str]:
    """Every word the analysis reads (for reporting the words it left out)."""
    words = set(_FUNCTION_WORDS)
    for group in (SPLIT_WORDS, MODIFIER_STARTS, SKIP_BEFORE_SUBJECT, GROUP_WORDS, PRONOUNS, POSSESSIVE_DETS,
                  CAMERA_NOUNS, FRAME_NOUNS, CAMERA_VERBS, DIRECTION_WORDS, POSITION_WORDS, PLACE_NOUNS, START_MARKERS,
                  END_MARKERS, ENDING_WORDS, STARTING_WORDS, MOTION_VERBS, UP_VERBS, DOWN_VERBS, CAUSATIVE_WITH,
                  CAUSATIVE_IMPULSE, NON_MOTION, TURN_WORDS, VERTICAL_ADJ, PARTICIPLES_IRREGULAR):
        words.update(group)
    for rx in (NEGATION, STAY, GROW, SHRINK, SPIN, CIRCLE, BOUNCE, ZIGZAG, CHASE, SWAP, MEET, APART,
               CAMERA_TERMS):
        words.update(re.findall(r"[a-z]{3,}", rx.pattern))
    return frozenset(words)


def understood(word: str) -> bool:
    known = lexicon_words()
    return word in known or lemma(word, known) in known
