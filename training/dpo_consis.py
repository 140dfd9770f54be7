"""Consis-DPO (docs/method.md section 4): identity preference pairs from the cross-pair SFT model.

    python -m training.dpo_consis --config training/configs/spriteworld.toml [--set dpo_consis.beta=1000]

Both videos of a pair come from the same noise, text and references; the loser's references sit
at RoPE positions shifted by dpo_consis.rope_offset, which keeps layout and motion and drifts the
identity. Pairs are filtered automatically (tracker identity margin, motion gap) and by an
optional manual decisions file, then a DPO LoRA is trained on top of the folded cross-pair SFT
model. Output: <run.out>/dpo_consis/lora.safetensors.
"""
from __future__ import annotations

import sys

from .dpo import run_dpo
from .post_common import stage_main


def main(argv=None) -> int:
    return stage_main("python -m training.dpo_consis", __doc__, lambda cfg: run_dpo(cfg, "dpo_consis"), argv)


if __name__ == "__main__":
    sys.exit(main())
