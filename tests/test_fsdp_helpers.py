"""The FSDP helpers that also serve one process and DDP (training/common/fsdp.py): the layout
choice, and the gradient clip every layout uses (it must clip exactly as torch's does)."""
from __future__ import annotations

import pytest
import torch

from training.common.fsdp import clip_grad_norm, fsdp_units, sharding_mode


def test_sharding_mode_follows_the_setting_and_accelerates_fsdp_config(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert sharding_mode("auto", 1) == "none" and sharding_mode("fsdp", 1) == "none"
    assert sharding_mode("auto", 2) == "ddp" and sharding_mode("fsdp", 2) == "fsdp"
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` sets for an FSDP config
    assert sharding_mode("auto", 4) == "fsdp" and sharding_mode("ddp", 4) == "ddp"


@pytest.mark.parametrize("max_norm", [0.05, 1.0, 1e6])
def test_clip_matches_torch(max_norm):
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((7, 3), (11,), (2, 5, 4))]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p, q in zip(params, twins):
        p.grad = torch.randn(p.shape, generator=g)
        q.grad = p.grad.clone()
    ours = clip_grad_norm(params, max_norm)
    theirs = float(torch.nn.utils.clip_grad_norm_(twins, max_norm))
    assert ours == pytest.approx(theirs, rel=1e-6)
    for p, q in zip(params, twins):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)
    assert clip_grad_norm([torch.nn.Parameter(torch.ones(2))], 1.0) == 0.0  # no gradient: nothing to clip


def test_fsdp_units_are_the_dit_blocks_and_other_models_are_refused():
    from libragen_core.errors import ConfigError
    from libragen_core.models.presets import DIT_PRESETS
    from libragen_core.models.wan_dit import WanDiT

    with torch.device("meta"):
        dit = WanDiT(DIT_PRESETS["wan2.1-t2v-1.3b"])
    assert fsdp_units(dit) == list(dit.blocks) and len(fsdp_units(dit)) == 30
    with pytest.raises(ConfigError, match="run.sharding = 'ddp'"):
        fsdp_units(torch.nn.Linear(2, 2))


SHARD_META = """
import sys, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[1])
from libragen_core.models.presets import DIT_PRESETS
from libragen_core.models.wan_dit import WanDiT
from training.common.fsdp import shard_model
dist.init_process_group("gloo")
with torch.device("meta"):
    dit = WanDiT(DIT_PRESETS["wan2.1-t2v-1.3b"]).to(torch.bfloat16)
kept, whole, from_main = shard_model(dit, torch.device("cpu"))
assert not from_main and all(p.is_meta for p in dit.parameters()), (from_main, dit)
assert abs(kept / whole - 0.5) < 0.01, (kept, whole)
print("OK", dist.get_rank(), kept, whole, flush=True)
dist.destroy_process_group()
"""


def test_a_model_on_the_meta_device_everywhere_is_sharded_as_it_is(tmp_path):
    """The benchmark's way (benchmarks/fsdp_memory.py): every process builds the model on the meta
    device, shards it, then makes its own parts. Nothing is sent from the main process (which has
    no weights either); a main process with weights and others on meta is the training path
    (tests/test_training_dpo_real.py)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "shard_meta.py"
    script.write_text(SHARD_META)
    repo = str(Path(__file__).resolve().parents[1])
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script), repo], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.count("OK") == 2
