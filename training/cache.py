"""Cache the subject-to-video stages' latents and text features ahead of training.

    python -m training.cache --config training/configs/phantom-wan-1.3b.toml --set data.manifest=curated/final.jsonl
    python -m training.cache --config ... --stage sft_cross

The SFT stages build what is missing themselves before their first step; this step does the same
on its own (e.g. on a machine with a GPU for the VAE and umT5 while another trains, or to see the
bad entries of a new manifest before a long run). Entries are keyed by the files' digests, so a
rerun encodes only what changed (training/common/cache.py).
"""
from __future__ import annotations

import sys

from .common.schema import PostChainConfig
from .post_common import cache_folder, stages_main
from .sft import SFT_STAGES, prepare_sft_data


def run_cache(cfg: PostChainConfig, stage: str) -> dict:
    from .common.loop import _use_cuda

    data, held, _, _ = prepare_sft_data(cfg, stage, device="cuda" if _use_cuda(cfg.run) else "cpu")
    n_held = 0 if held is None else len(held)
    print(f"[{stage}] {len(data)} training items in {len(data.groups())} buckets, {n_held} held out; "
          f"cache: {cache_folder(cfg)}")
    return {"items": len(data), "buckets": len(data.groups()), "heldout": n_held}


def main(argv=None) -> int:
    return stages_main("python -m training.cache", __doc__, list(SFT_STAGES), run_cache, argv)

if __name__ == "__main__":
    sys.exit(main())
