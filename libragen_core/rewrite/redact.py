"""Key-shaped text: found before it is stored, and blanked out before it is shown or logged.

An API key must never reach a node report, ComfyUI's /history, a log line or an exception. Two
nets catch it: the values of the keys in use (exact match, whatever their shape), and the common
shapes of keys and tokens, for a key pasted where it does not belong: provider prefixes (sk-,
hf_, ghp_, xoxb-, AKIA, AIza, glpat-), JWTs, 'Bearer <token>' / 'api_key=<token>', and long runs
of letters and digits such as hex or base64 secrets. The shapes are strict enough to leave
prompts alone: a run must mix at least 3 digits and 3 letters over 24 characters or more.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
_PREFIXED = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"(?:sk|pk|rk)[-_][A-Za-z0-9_-]{12,}"
    r"|hf_[A-Za-z0-9]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|AKIA[0-9A-Z]{16}"
    r"|AIza[0-9A-Za-z_-]{30,}"
    r"|glpat-[A-Za-z0-9_-]{16,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r")")
_LABELLED = re.compile(r"(?i)\b(bearer|api[-_ ]?key|token|secret|password)(\s*[:=]\s*|\s+)([A-Za-z0-9._~+/=-]{8,})")
_RUN = re.compile(r"[A-Za-z0-9_+=-]{24,}")


def _random(run: str) -> bool:
    digits = sum(c.isdigit() for c in run)
    return digits >= 3 and sum(c.isalpha() for c in run) >= 3


def _labelled_value(m: re.Match) -> bool:
    value = m.group(3)
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def looks_like_key(text) -> bool:
    """Whether a string holds something shaped like an API key or token."""
    if not isinstance(text, str):
        return False
    return bool(_PREFIXED.search(text) or any(_labelled_value(m) for m in _LABELLED.finditer(text))
                or any(_random(m.group(0)) for m in _RUN.finditer(text)))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """text with the given secret values and every key-shaped part replaced by [redacted]."""
    if not isinstance(text, str):
        text = str(text)
    for value in sorted({s for s in secrets if isinstance(s, str) and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    text = _PREFIXED.sub(REDACTED, text)
    text = _LABELLED.sub(lambda m: m.group(1) + m.group(2) + REDACTED if _labelled_value(m) else m.group(0), text)
    return _RUN.sub(lambda m: REDACTED if _random(m.group(0)) else m.group(0), text)
