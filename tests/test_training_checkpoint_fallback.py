"""A damaged newest checkpoint (truncated by a full disk or an interrupted copy of the run folder)
does not stop a resume: the loop falls back to the newest readable one, says which it skipped and
why (without telling anyone to download a file it wrote itself), and ends bitwise where an
uninterrupted run ends."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from libragen_core.errors import CheckpointError
from training.common.checkpoint import list_checkpoints
from training.common.loop import TrainLoop, seed_everything
from training.common.schema import OptimConfig, RunConfig

STEPS = 6
OPTIM = OptimConfig(steps=STEPS, batch=2, lr=1e-2, warmup=1, ema_decay=0.9, checkpoint_every=2, keep_checkpoints=3,
                    log_every=1)
RUN = RunConfig(threads=1, seed=5)


def _loop(folder, until=None) -> tuple[TrainLoop, int]:
    seed_everything(RUN.seed)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    loop = TrainLoop(folder, "toy", OPTIM, RUN, {"net": net}, ema_modules=("net",))
    start = loop.resume()

    def step_fn(step, generator):
        x = torch.randn(OPTIM.batch, 4, generator=generator)
        return (net(x) - x.sum(1, keepdim=True)).pow(2).mean(), {}

    loop.run(step_fn, until=until)
    return loop, start


def _weights(loop) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in loop.modules["net"].state_dict().items()}


def _truncate(path, keep: int) -> None:
    """Keep the first `keep` bytes (negative: all but the last -keep)."""
    data = path.read_bytes()
    path.write_bytes(data[:keep])


@pytest.mark.parametrize("damage", ["model", "optimizer", "state", "missing_rng"])
def test_resume_falls_back_past_a_damaged_newest_checkpoint(tmp_path, capsys, damage):
    straight, _ = _loop(tmp_path / "straight")
    expected = _weights(straight)

    run = tmp_path / "damaged"
    _loop(run, until=STEPS)
    ckpts = run / "checkpoints"
    assert [s for s, _ in list_checkpoints(ckpts)] == [2, 4, 6]
    newest = ckpts / "step-00000006"
    if damage == "model":
        _truncate(newest / "model-net.safetensors", -16)  # cut inside the tensor data
    elif damage == "optimizer":
        _truncate(newest / "optimizer.safetensors", 20)  # cut inside the header
    elif damage == "state":
        _truncate(newest / "state.json", 30)
    else:
        (newest / "rng.safetensors").unlink()
    capsys.readouterr()

    loop, start = _loop(run)
    said = capsys.readouterr().out
    assert start == 4, said
    assert "step-00000006" in said and "skipped" in said and "resumed from" in said, said
    reason = {"model": "model-net.safetensors is truncated", "optimizer": "optimizer.safetensors is not a valid",
              "state": "state.json", "missing_rng": "rng.safetensors is missing"}[damage]
    assert reason in said, said
    assert "download" not in said.lower(), said
    # the damaged folder is kept for inspection, out of the rotation (it is no step to resume from)
    kept = [p.name for p in ckpts.iterdir() if p.name.startswith("step-00000006.unreadable")]
    assert len(kept) == 1, sorted(p.name for p in ckpts.iterdir())
    assert [s for s, _ in list_checkpoints(ckpts)] == [2, 4, 6]  # step 6 written again by the resumed run
    got = _weights(loop)
    assert all(torch.equal(got[k], expected[k]) for k in expected), "the resumed run did not end where a straight one does"
    json.loads((ckpts / "step-00000006" / "state.json").read_text())


def test_no_readable_checkpoint_stops_with_each_reason(tmp_path, capsys):
    run = tmp_path / "run"
    _loop(run, until=4)
    ckpts = run / "checkpoints"
    for step in (2, 4):
        _truncate(ckpts / f"step-{step:08d}" / "model-net.safetensors", -16)
    with pytest.raises(CheckpointError) as info:
        _loop(run)
    message = str(info.value)
    assert "step-00000002" in message and "step-00000004" in message and "truncated" in message, message
    assert "download" not in message.lower(), message
    # nothing was renamed or deleted: a run that starts over must be asked for, not assumed
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000002", "step-00000004"]
