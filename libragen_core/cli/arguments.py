"""argparse types that check a command-line value when it is parsed, before any model is loaded.

A bad value ends the command at once with argparse's usual message and exit status 2, e.g.
`libragen generate: error: argument --frames: must be a whole number of at least 1; got -3`.
Nothing is ever replaced by a default: a value given is a value used, or refused.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from ..errors import LibraGenError


def whole_number(minimum: int, hint: str = "") -> Callable[[str], int]:
    """A whole number >= minimum (`hint` is appended to the refusal, e.g. what is typical)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least {minimum}; got {text!r}{hint}")
        return value

    parse.__name__ = "whole number"
    return parse


def number_in(low: float, high: float = math.inf, low_inclusive: bool = False) -> Callable[[str], float]:
    """A finite number above `low` (or at least `low`) and at most `high`."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        above = value >= low if low_inclusive else value > low
        if not (math.isfinite(value) and above and value <= high):
            lower = f"at least {low:g}" if low_inclusive else f"above {low:g}"
            upper = "" if high == math.inf else f" and at most {high:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {lower}{upper}; got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def output_file(suffixes: tuple[str, ...]) -> Callable[[str], Path]:
    """A file path to write: one of `suffixes`, not an existing folder, in a folder that exists and
    takes new files (tried with a real temporary file, so read-only mounts and permissions count)."""
    def parse(text: str) -> Path:
        from ..io.atomic import check_writable_output

        path = Path(text)
        if path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{text}: unsupported suffix; use one of {', '.join(suffixes)}")
        try:
            return check_writable_output(path)
        except LibraGenError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = "output file"
    return parse


def read_text_file(path: str | Path, what: str) -> str:
    """A UTF-8 text file's content; a missing, unreadable or non-UTF-8 file gets a message naming it."""
    path = Path(path)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{what} {path} is not a file" if path.exists() else
                                         f"{what} {path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot read {what} {path} ({e.strerror or e})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise argparse.ArgumentTypeError(
            f"{what} {path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "save it as UTF-8") from None
