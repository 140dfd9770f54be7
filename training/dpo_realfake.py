"""Real-Fake DPO (docs/method.md section 4): realness preference pairs from the in-pair SFT model.

    python -m training.dpo_realfake --config training/configs/spriteworld.toml [--set dpo_realfake.sft_weight=0.1]

Winner: the real (rendered) clip of a training triplet; loser: the model's own sample from the
same references and text. dpo_realfake.sft_weight > 0 adds the flow loss on the winners
(Reg-DPO). Output: <run.out>/dpo_realfake/lora.safetensors.
"""
from __future__ import annotations

import sys

from .dpo import run_dpo
from .post_common import stage_main


def main(argv=None) -> int:
    return stage_main("python -m training.dpo_realfake", __doc__, lambda cfg: run_dpo(cfg, "dpo_realfake"), argv)


if __name__ == "__main__":
    sys.exit(main())
