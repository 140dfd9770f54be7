"""Helpers for VALIDATE_INPUTS.

ComfyUI skips its own min/max and combo checks for every input a node's VALIDATE_INPUTS takes,
so those checks are redone here from the node's INPUT_TYPES. Inputs fed by a link arrive as None
at validation time (their value is not known yet) and are skipped.
"""
from __future__ import annotations


def _spec(cls, name: str):
    types = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        if name in types.get(section, {}):
            return types[section][name]
    return None


def check_ranges(cls, **values) -> str | None:
    """The first widget value outside its declared min/max or combo list, as a message."""
    for name, value in values.items():
        spec = _spec(cls, name)
        if value is None or spec is None:
            continue
        kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
        if isinstance(kind, (list, tuple)):
            if value not in kind:
                shown = ", ".join(map(str, kind[:12])) + (" ..." if len(kind) > 12 else "")
                return f"{name} {value!r} is not one of the choices ({shown})."
            continue
        if kind in ("INT", "FLOAT"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"{name} must be a number; got {value!r}."
            if "min" in options and value < options["min"]:
                return f"{name} {value} is below its minimum {options['min']}."
            if "max" in options and value > options["max"]:
                return f"{name} {value} is above its maximum {options['max']}."
    return None


def first_error(problems) -> bool | str:
    """What VALIDATE_INPUTS returns: True, or the first problem's message."""
    for p in problems:
        if p:
            return p
    return True
