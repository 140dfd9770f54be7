"""Prompt-list checks shared by the text encoders."""
from __future__ import annotations

from ..errors import InputError


def check_prompts(prompts) -> list[str]:
    """A prompt or a non-empty list of prompts -> list[str]; anything else is an InputError."""
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise InputError(f"expected a prompt or a non-empty list of prompts, got {prompts!r:.80}")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise InputError(f"prompt {bad[0] + 1} is a {type(prompts[bad[0]]).__name__}, not text")
    return list(prompts)
