"""Score the offline SpriteWorld rewrite on user phrasings with expected motions (JSONL sets).

A set (tests/data/rewrite_dev.jsonl, tests/data/rewrite_heldout.jsonl) holds, per line, the
subjects' labels, the user's prompt, one expected label per subject and the expected camera move.
The labels are the phrasings' own vocabulary (move:left, zigzag:down, circle, still, none, ...);
LABEL_MAP below says which SpriteWorld motions count as each, apart from the phrasings.

Figures:
- stated: subject motions the prompt states (every label but "none"); correct when the rewrite's
  motion (caption_facts) is one that LABEL_MAP accepts.
- opposite: stated directions rewritten with a direction pointing the other way (dot < 0).
- unstated: subjects with no stated motion; correct when they "stay" (nothing invented).
- camera: expected pans/tilts written as that pan; zoom and follow (not in the grammar) left out.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..spriteworld.motions import DIRECTIONS

# label -> SpriteWorld motions that count as it. SpriteWorld zig-zags only sideways and bounces in
# place, so a vertical zig-zag is scored by its direction (move_up/move_down) and a bounce along a
# direction by the bounce. A subject that moves in a direction may also do it as the chaser of a
# leader moving that way, or as one of a meeting or swapping pair (checked in _accepts).
LABEL_MAP: dict[str, tuple[str, ...]] = {
    **{f"move:{d.replace('_', '-')}": (f"move_{d}",) for d in DIRECTIONS},
    "zigzag:left": ("zigzag_left",), "zigzag:right": ("zigzag_right",),
    "zigzag:up": ("move_up",), "zigzag:down": ("move_down",),
    "bounce": ("bounce",), **{f"bounce:{d.replace('_', '-')}": ("bounce",) for d in DIRECTIONS},
    "circle": ("circle_cw", "circle_ccw"), "spin": ("spin_cw", "spin_ccw"),
    "grow": ("grow",), "shrink": ("shrink",), "still": ("stay",), "none": ("stay",),
}
CAMERA_MAP = {"pan:left": "left", "pan:right": "right", "tilt:up": "up", "tilt:down": "down",
              "zoom:in": None, "zoom:out": None, "follow": None, None: None}


@dataclass
class Score:
    stated: int = 0
    stated_ok: int = 0
    opposite: int = 0
    unstated: int = 0
    unstated_ok: int = 0
    camera: int = 0
    camera_ok: int = 0
    misses: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        rate = lambda a, b: round(a / b, 4) if b else None  # noqa: E731
        return {"stated": f"{self.stated_ok}/{self.stated}", "stated_rate": rate(self.stated_ok, self.stated),
                "opposite": self.opposite, "unstated": f"{self.unstated_ok}/{self.unstated}",
                "camera": f"{self.camera_ok}/{self.camera}", "camera_rate": rate(self.camera_ok, self.camera)}


def load_set(path: str | Path) -> list[dict]:
    rows = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if len(row["subjects"]) != len(row["motions"]):
            raise InputError(f"{path}:{i}: {len(row['subjects'])} subjects but {len(row['motions'])} motions")
        for label in row["motions"]:
            if label not in LABEL_MAP:
                raise InputError(f"{path}:{i}: unknown motion label {label!r}")
        if row.get("camera") not in CAMERA_MAP:
            raise InputError(f"{path}:{i}: unknown camera label {row.get('camera')!r}")
        rows.append(row)
    return rows


def _vector(label: str) -> tuple[float, float] | None:
    kind, _, d = label.partition(":")
    return DIRECTIONS.get(d.replace("-", "_")) if kind in ("move", "zigzag", "bounce") and d else None


def _motion_vector(motion: str, k: int, facts: dict) -> tuple[float, float] | None:
    if motion.startswith(("move_", "zigzag_")):
        return DIRECTIONS[motion.split("_", 1)[1]]
    inter = facts.get("interaction")
    if motion == "chase" and inter:
        lead = facts["motions"].get(inter["subjects"][0], "")
        return DIRECTIONS.get(lead[5:]) if lead.startswith("move_") else None
    return None


def _accepts(label: str, k: int, facts: dict, expected: list[str]) -> bool:
    got = facts["motions"].get(k)
    if got in LABEL_MAP[label]:
        return True
    want = _vector(label)
    inter = facts.get("interaction")
    if want is None or not label.startswith("move:") or not inter:
        return False
    if got == "chase":
        return _motion_vector(got, k, facts) == want
    if got in ("swap", "meet"):
        other = next(j for j in inter["subjects"] if j != k)
        theirs = _vector(expected[other]) if other < len(expected) else None
        return theirs is not None and theirs[0] * want[0] + theirs[1] * want[1] < -0.5
    return False


def score_set(rows: list[dict], rewrite_fn) -> Score:
    """rewrite_fn(labels, prompt) -> caption text in the SpriteWorld grammar."""
    from ..spriteworld.captions import caption_facts

    s = Score()
    for row in rows:
        text = rewrite_fn(row["subjects"], row["prompt"])
        facts = caption_facts(text)
        for k, label in enumerate(row["motions"]):
            ok = _accepts(label, k, facts, row["motions"])
            if label == "none":
                s.unstated += 1
                s.unstated_ok += ok
            else:
                s.stated += 1
                s.stated_ok += ok
                want, got = _vector(label), _motion_vector(facts["motions"].get(k, ""), k, facts)
                if want and got and want[0] * got[0] + want[1] * got[1] < -1e-6:
                    s.opposite += 1
            if not ok:
                s.misses.append({"id": row["id"], "prompt": row["prompt"], "subject": row["subjects"][k],
                                 "expected": label, "got": facts["motions"].get(k), "video": text.splitlines()[-1]})
        cam = row.get("camera")
        if cam is not None:
            s.camera += 1
            ok = facts.get("camera") == CAMERA_MAP[cam]
            s.camera_ok += ok
            if not ok:
                s.misses.append({"id": row["id"], "prompt": row["prompt"], "subject": "(camera)", "expected": cam,
                                 "got": facts.get("camera"), "video": text.splitlines()[-1]})
    return s
