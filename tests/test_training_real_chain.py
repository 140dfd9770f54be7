"""The real-data chain end to end on a CPU, from files: mp4 clips of several sizes, aspect ratios
and frame rates (one corrupt, one with its reference picture missing) -> curate -> manifest ->
cache -> SFT in-pair -> SFT cross-pair -> merge, on tiny base files in the Wan2.1 / umT5 layouts.
tests/integration/test_real_chain_comfy.py loads the result in ComfyUI."""
from __future__ import annotations

import json

import pytest
import torch

from libragen_core.io.safetensors_file import read_header
from libragen_core.lora import load_lora
from tests.real_data import run_real_chain


@pytest.mark.slow
def test_curate_cache_sft_merge_from_real_files(tmp_path):
    out = run_real_chain(tmp_path, probe_every=2)
    curated = out["curated"]
    rejected = [json.loads(line)["id"] for line in (curated / "rejected.jsonl").read_text().splitlines()]
    incomplete = [json.loads(line)["id"] for line in (curated / "incomplete.jsonl").read_text().splitlines()]
    assert rejected == ["corrupt.mp4"] and incomplete == ["lost_ref.mp4"]
    run = out["run"]
    for stage, kind in (("sft_in", "in_pair"), ("sft_cross", "cross_pair")):
        done = json.loads((run / stage / "DONE.json").read_text())
        assert done["kind"] == kind and done["base"] == "dit" and done["items"] >= 2
        # held-out validation: flow loss, an mp4 and a contact sheet per validation
        assert any("val/heldout_loss" in json.loads(line) for line in (run / stage / "metrics.jsonl").open())
        assert list((run / stage / "samples").glob("*.mp4")) and list((run / stage / "samples").glob("*.png"))
    # the direction probe on real captions ("slides to the right"), swapped captions from the cache
    probe = {r["step"]: r for r in map(json.loads, (run / "sft_cross" / "metrics.jsonl").open())
             if "probe/dir_gap" in r}
    assert sorted(probe) == [0, 2, 4]
    assert probe[4]["probe/dir_clips"] == 2 and probe[4]["probe/dir_sample_clips"] == 1
    assert probe[4]["probe/dir_vdiff"] > 0 and probe[4]["probe/dir_noise_diff"] > 0
    assert probe[4]["probe/dir_text_diff"] > 0  # "right" and "left" give different cached features
    assert probe[4]["probe/dir_gap_se"] > 0  # pooled over the two clips, which sit in different buckets
    # the in-pair and cross-pair stages saw different buckets: clips of three aspect ratios were cached
    shapes = {tuple(read_header(p)[0]["x"]["shape"][2:]) for p in (run / "cache" / "clips").rglob("*.safetensors")}
    assert len(shapes) >= 3
    merged = load_lora(out["lora"])
    header, meta = read_header(out["lora"])
    assert {v["dtype"] for k, v in header.items() if ".lora_" in k} == {"F32"}  # the LoRA stays fp32
    assert meta["base_model"] == "dit" and meta["method"] == "sft-merge:concat"
    sft_in, sft_cross = load_lora(run / "sft_in" / "lora.safetensors"), load_lora(run / "sft_cross" / "lora.safetensors")
    for name in sft_in.layer_names():
        torch.testing.assert_close(merged.delta(name), 0.5 * sft_in.delta(name) + 0.5 * sft_cross.delta(name),
                                   rtol=1e-5, atol=1e-7)
