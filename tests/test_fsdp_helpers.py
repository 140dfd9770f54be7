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
