"""The whole real-data chain with DPO, on a CPU, from files (tests/real_data.run_real_dpo_chain):
curate -> cache -> SFT in-pair / cross-pair -> merge -> DPO pairs (own stage) -> review decisions ->
Consis-DPO -> Real-Fake DPO (on the stored pair latents) -> DPO merge; the final LoRA loads in
ComfyUI's core LoraLoaderModelOnly on the base DiT file with no key left unloaded."""
from __future__ import annotations

import json

import pytest
import torch

from libragen_core.io.safetensors_file import read_header
from libragen_core.lora import load_lora
from tests.integration.comfy_lora import lora_in_comfyui
from tests.real_data import run_real_dpo_chain

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_real_dpo_chain_lora_loads_in_comfyui(comfyui, tmp_path):
    chain = run_real_dpo_chain(tmp_path / "chain")
    run = chain["run"]
    for stage, kind in (("dpo_consis", "consis"), ("dpo_realfake", "realfake")):
        records = [json.loads(line) for line in (run / stage / "pairs" / "pairs.jsonl").read_text().splitlines()]
        assert [r["kind"] for r in records] == [kind] * 2
        assert all({"pair_difference", "motion_loser", "loser_spread"} <= set(r["metrics"]) for r in records)
        done = json.loads((run / stage / "DONE.json").read_text())
        # the review's rejection is read back: Consis-DPO trains on the one pair left
        assert done["pairs_total"] == 2 and done["pairs_kept"] == (1 if stage == "dpo_consis" else 2)
        assert {r["id"]: r["kept"] for r in records}.get("consis-000001", False) is False
        _, meta = read_header(run / stage / "lora.safetensors")
        assert meta["base_model"] == "dit" and meta["method"] == stage.replace("_", "-")
    # the DPO merge: the merged SFT plus a * consis + (1 - a) * realfake, a = 0.5
    merged = load_lora(chain["lora"])
    parts = {s: load_lora(run / s / "lora.safetensors") for s in ("sft_in", "sft_cross", "dpo_consis", "dpo_realfake")}
    for name in parts["sft_in"].layer_names():
        want = 0.5 * (parts["sft_cross"].delta(name) + parts["dpo_consis"].delta(name)) + \
            0.5 * (parts["sft_in"].delta(name) + parts["dpo_realfake"].delta(name))
        torch.testing.assert_close(merged.delta(name), want, rtol=1e-5, atol=1e-7)
    assert any(parts["dpo_consis"].delta(n).abs().max() > 0 for n in parts["dpo_consis"].layer_names())

    report, outs = lora_in_comfyui(comfyui, chain["base"] / "dit.safetensors", chain["lora"], tmp_path)
    assert report["lora"]["warnings"] == [], f"ComfyUI left LoRA keys unloaded: {report['lora']['warnings']}"
    assert report["lora"]["patches"] == len(merged) and report["base"]["patches"] == 0
    assert (outs["lora"] - outs["base"]).abs().max() > 0
