"""Prompt-list checks shared by the text encoders."""
from __future__ import annotations

import logging

import torch

from ..errors import InputError

log = logging.getLogger(__name__)


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


def pad_token_rows(rows: list[list[int]], max_length: int, pad_id: int, eos_id: int,
                   prompts: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (ids, mask), each [B, longest row]; rows over max_length are cut, keeping EOS last."""
    cut = []
    for i, r in enumerate(rows):
        if len(r) > max_length:
            log.warning("prompt of %d tokens cut to %d: %.60s...", len(r), max_length, prompts[i] if prompts else "")
            r = r[: max_length - 1] + [eos_id]
        cut.append(r)
    length = max(len(r) for r in cut)
    ids = torch.full((len(cut), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(cut), length), dtype=torch.long)
    for i, r in enumerate(cut):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask
