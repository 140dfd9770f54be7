"""DPO on real data, from files: pair generation as its own stage on the manifest's triplets
(sharded over processes, resumable after SIGKILL), then the DPO stages on the stored pair latents.

One chain is built per module (tests/real_data.run_real_chain: curate -> cache -> SFT in-pair and
cross-pair -> merge on the tiny Wan-layout base of training/configs/cpu-smoke.toml); each test
copies its run folder and works on the copy."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from libragen_core.io.safetensors_file import load_state_dict
from tests.real_data import run_real_chain

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "training" / "configs" / "cpu-smoke.toml")
ACCELERATE = {layout: str(REPO / "training" / "accelerate" / f"{layout}.yaml") for layout in ("ddp-1.3b", "fsdp-14b")}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chain")
    run_real_chain(tmp, steps=2)
    return tmp


def _copy(chain: Path, tmp: Path) -> Path:
    """The chain's folder (curated manifest, tiny base, SFT run) copied, so tests do not share outputs."""
    for name in ("footage", "curated", "runs", "run"):
        shutil.copytree(chain / name, tmp / name, symlinks=True)
    return tmp


def _cmd(module: str, cwd: Path, *args: str, procs: int = 1, layout: str | None = None) -> list[str]:
    """layout: a shipped accelerate config (ACCELERATE) as a user launches it on 2 GPUs; without GPUs
    accelerate starts two CPU processes (gloo), with ACCELERATE_USE_FSDP set for the FSDP config, so
    the loop shards the base with FSDP2. Otherwise one process, or torch's launcher for procs > 1."""
    if layout:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", ACCELERATE[layout],
                  "--num_processes", "2", "-m", module]
    elif procs == 1:
        launch = [sys.executable, "-m", module]
    else:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
                  "-m", module]
    return [*launch, "--config", CONFIG, "--set", "data.manifest=curated/accepted.jsonl", "--set", "run.out=run",
            *args]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _run(module: str, cwd: Path, *args: str, procs: int = 1, layout: str | None = None) -> str:
    cmd = _cmd(module, cwd, *args, procs=procs, layout=layout)
    r = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-6000:]}"
    return r.stdout + r.stderr


def _pairs(run: Path, stage: str) -> dict[str, dict[str, torch.Tensor]]:
    folder = run / stage / "pairs"
    ids = [json.loads(line)["id"] for line in (folder / "pairs.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)), f"duplicated pairs in the index: {ids}"
    return {i: load_state_dict(folder / "pairs" / f"{i}.safetensors") for i in ids}


def _assert_same_pairs(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and len(a) >= 2
    for pid in a:
        assert a[pid].keys() == b[pid].keys()
        for k in a[pid]:
            assert torch.equal(a[pid][k], b[pid][k]), f"{pid}/{k} differs"


def test_pairs_two_processes_and_after_sigkill_equal_one_uninterrupted_run(chain, tmp_path):
    stage = "dpo_consis"
    one = _copy(chain, tmp_path / "one")
    _run("training.dpo_pairs", one, "--stage", stage)
    ref = _pairs(one / "run", stage)
    folder = one / "run" / stage / "pairs" / "pairs"
    for pid in ref:  # what the review page shows: both sides as mp4
        assert (folder / f"{pid}.winner.mp4").stat().st_size > 0 and (folder / f"{pid}.loser.mp4").stat().st_size > 0
    # the consis loser differs from the winner (shifted references), from the same noise
    assert any(not torch.equal(p["winner"], p["loser"]) for p in ref.values())

    two = _copy(chain, tmp_path / "two")
    _run("training.dpo_pairs", two, "--stage", stage, procs=2)
    _assert_same_pairs(ref, _pairs(two / "run", stage))

    # killed with SIGKILL once the first pair is finished (the second is being made), then rerun
    killed = _copy(chain, tmp_path / "killed")
    records = killed / "run" / stage / "pairs" / "pairs"
    p = subprocess.Popen(_cmd("training.dpo_pairs", killed, "--stage", stage), cwd=killed, env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not list(records.glob("*.json")) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.poll() is None, "the run ended before it could be killed"
        os.killpg(p.pid, signal.SIGKILL)
    finally:
        p.wait()
    done = list(records.glob("*.json"))
    assert len(done) == 1 and not (records.parent / "pairs.jsonl").exists()
    kept = {f: f.stat().st_mtime_ns for f in records.glob(done[0].stem + ".*")}
    _run("training.dpo_pairs", killed, "--stage", stage)
    assert {f: f.stat().st_mtime_ns for f in kept} == kept  # the finished pair was not made again
    assert not list(records.glob(".*partial*"))  # the killed run's half-written files are gone
    _assert_same_pairs(ref, _pairs(killed / "run", stage))


def test_pair_review_page_in_a_browser_decisions_read_back(chain, tmp_path):
    """The pair review page in headless Chromium (tests/test_review_page_browser.py has the
    setup): one card per pair with references, winner and loser; accept one, reject the other,
    save; the DPO stage's pair loader leaves the rejected pair out."""
    from tests.test_review_page_browser import CHROMIUM, open_review_page

    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if CHROMIUM is None:
        pytest.skip("no Chromium binary (apt-get install chromium, or set LIBRAGEN_CHROMIUM)")
    from training.pairs import load_pairs, read_decisions

    stage = "dpo_realfake"
    run = _copy(chain, tmp_path / "run")
    _run("training.dpo_pairs", run, "--stage", stage)
    _run("training.pair_review", run, "--stage", stage)
    folder = run / "run" / stage / "pairs"
    ids = [json.loads(line)["id"] for line in (folder / "pairs.jsonl").read_text().splitlines()]
    assert ids == ["realfake-000000", "realfake-000001"]
    with open_review_page((folder / "review" / "index.html").as_uri()) as (page, errors):
        assert page.inner_text("h1") == "DPO pair review"
        cards = page.locator("section.card")
        assert cards.count() == 2
        for k in range(2):
            page.locator("img.sheet").nth(k).scroll_into_view_if_needed()
        page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=15000)
        # three rows (references, winner, loser): the picture is over three contact sheets high
        assert page.evaluate("document.images[0].naturalHeight") > 3 * 128
        assert "winner" in cards.nth(0).inner_text() and "loser" in cards.nth(0).inner_text()
        cards.nth(0).locator("button.acc").click()
        cards.nth(1).locator("button.rej").click()
        assert page.inner_text("#counter").startswith("2 of 2 reviewed")
        with page.expect_download() as info:
            page.click("#save")
        saved = tmp_path / "decisions.json"
        info.value.save_as(saved)
        assert not errors, errors
    assert json.loads(saved.read_text())["decisions"] == {ids[0]: "accept", ids[1]: "reject"}
    assert read_decisions(saved) == {ids[1]}
    assert [p["id"] for p in load_pairs(folder, saved)] == [ids[0]]


DPO_STAGE, DPO_STEPS = "dpo_realfake", 4
# one square bucket (data.resolution 32x32, max_aspect 1) so both pairs make one global batch of 2
DPO_SETS = ["--set", "data.resolution=[32, 32]", "--set", "data.max_aspect=1.0",
            "--set", f"{DPO_STAGE}.optim.batch=2", "--set", f"{DPO_STAGE}.optim.steps={DPO_STEPS}",
            "--set", f"{DPO_STAGE}.optim.checkpoint_every=2"]
@pytest.fixture(scope="module")
def dpo_runs(chain, tmp_path_factory):
    """Real-Fake DPO, 4 steps, checkpoints at 2 and 4: in one process, under DDP and under FSDP (2 CPU
    processes each, launched with the shipped accelerate configs)."""
    tmp = tmp_path_factory.mktemp("dpo_runs")
    runs = {}
    for mode in ("one", "ddp", "fsdp"):
        runs[mode] = _copy(chain, tmp / mode) / "run"
        if mode == "one":
            log = _run(f"training.{DPO_STAGE}", runs[mode].parent, *DPO_SETS)
        else:
            log = _run(f"training.{DPO_STAGE}", runs[mode].parent, *DPO_SETS,
                       layout="fsdp-14b" if mode == "fsdp" else "ddp-1.3b")
        assert ("FSDP over 2 processes" in log) == (mode == "fsdp"), log[-3000:]
        # FSDP: only the main process read the base; the other built it on the meta device
        assert ("the only one that read the file" in log) == (mode == "fsdp")
        assert json.loads((runs[mode] / DPO_STAGE / "DONE.json").read_text())["pairs_kept"] == 2
    return runs


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / DPO_STAGE / "metrics.jsonl").open()) if "loss" in r}


def _lora_delta_gap(a_file: Path, b_file: Path) -> float:
    """|delta_a - delta_b| / |delta_a| over every layer (delta = scale * B A)."""
    from libragen_core.lora import load_lora

    a, b = load_lora(a_file), load_lora(b_file)
    diff = sum(float((a.delta(n) - b.delta(n)).pow(2).sum()) for n in a.layer_names())
    norm = sum(float(a.delta(n).pow(2).sum()) for n in a.layer_names())
    assert norm > 0
    return (diff / norm) ** 0.5


def _max_gap(a_file: Path, b_file: Path) -> float:
    a, b = load_state_dict(a_file), load_state_dict(b_file)
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_dpo_on_real_pairs_ddp_and_fsdp_match_one_process(dpo_runs):
    """DDP and FSDP (2 CPU processes each, gloo) against one process.

    Against one process the tolerance is bf16's: the frozen base computes in bf16, and a batch of 2
    in one process rounds otherwise than two batches of 1, before any update (step 1: 2.5e-5
    relative); DPO multiplies such differences by beta / 2 and AdamW's first steps follow the
    gradients' signs. Measured: losses within 2.7e-3 relative, the LoRA delta within 4.5%. Bounds:
    step 1 1e-4, every step 5e-3, LoRA 15%.
    FSDP against DDP (the same per-process batches, only the gradient reduction and the gather
    differ): losses within 1e-6 relative, every LoRA tensor and checkpoint tensor (LoRA, AdamW
    state) within 1e-6 absolute; measured 3.2e-8 (rounding of the two backward passes' reductions).
    Control, measured once with a broken share (every process took the first half of the batch):
    step-1 loss 8.6e-3 off, step 3 1.9e-2, LoRA delta 84% from one process, 5.8e-3 absolute from
    DDP: every one of these bounds fails it."""
    runs = dpo_runs
    for mode in ("ddp", "fsdp"):
        _assert_same_pairs(_pairs(runs["one"], DPO_STAGE), _pairs(runs[mode], DPO_STAGE))
    one, ddp, fsdp = (_losses(runs[m]) for m in ("one", "ddp", "fsdp"))
    assert one.keys() == ddp.keys() == fsdp.keys() == set(range(1, DPO_STEPS + 1))
    for s in one:
        bound = 1e-4 if s == 1 else 5e-3
        for name, other in (("ddp", ddp), ("fsdp", fsdp)):
            assert abs(one[s] - other[s]) <= bound * abs(one[s]), (name, s, one[s], other[s])
        assert abs(ddp[s] - fsdp[s]) <= 1e-6 * abs(ddp[s]), (s, ddp[s], fsdp[s])
    lora = {m: runs[m] / DPO_STAGE / "lora.safetensors" for m in runs}
    for mode in ("ddp", "fsdp"):
        gap = _lora_delta_gap(lora["one"], lora[mode])
        assert gap < 0.15, f"{mode}: the LoRA delta differs from one process's by {gap:.1%}"
    assert _max_gap(lora["ddp"], lora["fsdp"]) <= 1e-6
    # the checkpoints: gathered by FSDP to the files one process and DDP write
    for step in (2, 4):
        ck = {m: runs[m] / DPO_STAGE / "checkpoints" / f"step-{step:08d}" for m in runs}
        for name in ("model-lora.safetensors", "optimizer.safetensors"):
            assert _max_gap(ck["ddp"] / name, ck["fsdp"] / name) <= 1e-6, (step, name)
            _max_gap(ck["one"] / name, ck["fsdp"] / name)  # same keys, shapes and dtypes
        assert json.loads((ck["fsdp"] / "state.json").read_text())["optimizer"]["param_groups"] == \
            json.loads((ck["one"] / "state.json").read_text())["optimizer"]["param_groups"]


def test_fsdp_dpo_killed_resumes_to_the_same_lora_and_its_checkpoint_resumes_in_one_process(dpo_runs, tmp_path):
    """FSDP killed with SIGKILL (every process) after its step-2 checkpoint, then launched again:
    the final LoRA equals the uninterrupted FSDP run's bitwise. The step-2 checkpoint it wrote also
    resumes in one process (the files are the same), which ends at step 4 with a LoRA within the
    one-process tolerance above."""
    killed = _copy_run(dpo_runs["fsdp"], tmp_path / "killed")
    ckpts = killed / DPO_STAGE / "checkpoints"
    cmd = _cmd(f"training.{DPO_STAGE}", killed.parent, *DPO_SETS, "--set", f"{DPO_STAGE}.optim.debug_step_delay=1.5",
               layout="fsdp-14b")
    p = subprocess.Popen(cmd, cwd=killed.parent, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not (ckpts / "step-00000002").is_dir() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.poll() is None, "the run ended before it could be killed"
        _kill_all(p.pid)
    finally:
        p.wait()
    assert not (killed / DPO_STAGE / "DONE.json").exists() and not (ckpts / "step-00000004").exists()
    shutil.copytree(killed.parent, tmp_path / "single", symlinks=True)
    single = tmp_path / "single" / "run"
    log = _run(f"training.{DPO_STAGE}", killed.parent, *DPO_SETS, layout="fsdp-14b")
    assert "(step 2)" in log
    a = load_state_dict(dpo_runs["fsdp"] / DPO_STAGE / "lora.safetensors")
    b = load_state_dict(killed / DPO_STAGE / "lora.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    log = _run(f"training.{DPO_STAGE}", single.parent, *DPO_SETS)
    assert "(step 2)" in log
    gap = _lora_delta_gap(dpo_runs["one"] / DPO_STAGE / "lora.safetensors", single / DPO_STAGE / "lora.safetensors")
    assert gap < 0.15, f"the LoRA delta differs from one process's by {gap:.1%}"


def _kill_all(pid: int) -> None:
    """SIGKILL the launcher and every process under it at once, as a crashed machine would stop
    them (torch's launcher starts its workers in sessions of their own: killpg misses them)."""
    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    assert len(procs) >= 3, f"expected the launcher and 2 workers, found {len(procs)} processes"
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def _copy_run(run: Path, to: Path) -> Path:
    """A copy of a finished run folder (and the data beside it) with its stage's pairs but nothing
    the training wrote (checkpoints, metrics, LoRA, DONE.json): the training starts again."""
    shutil.copytree(run.parent, to, symlinks=True)
    stage = to / "run" / DPO_STAGE
    for name in ("DONE.json", "lora.safetensors", "metrics.jsonl"):
        (stage / name).unlink(missing_ok=True)
    shutil.rmtree(stage / "checkpoints")
    return to / "run"


def test_sft_on_an_fp8_base_fsdp_and_ddp_write_the_same_lora(chain, tmp_path):
    """SFT in-pair on the fp8 base (model.dtype = "fp8"), 2 processes each way: one backward pass per
    step, so FSDP's reduce-scatter and DDP's all-reduce add the same two halves and the LoRA files
    are bitwise equal (measured: equal; before DDP left the frozen base alone, DDP stopped at wrapping
    the model: gloo cannot broadcast float8). Validation runs on every FSDP process (each forward
    needs them all), and the main process alone writes the samples."""
    sets = ["--stage", "sft_in", "--set", "run.out=fp8", "--set", "model.dtype=fp8", "--set", "sft_in.optim.steps=2",
            "--set", "sft_in.optim.batch=2", "--set", "data.resolution=[32, 32]", "--set", "data.max_aspect=1.0"]
    work = _copy(chain, tmp_path)
    log = _run("training.sft", work, *sets, layout="fsdp-14b")
    assert "FSDP over 2 processes" in log
    fsdp_dir = work / "fp8" / "sft_in"
    assert sorted(p.name for p in (fsdp_dir / "samples").iterdir()) == ["sft_in-00000002-0.mp4", "sft_in-00000002.png"]
    (work / "fp8").rename(work / "fp8-fsdp")
    _run("training.sft", work, *sets, procs=2)
    a = load_state_dict(work / "fp8-fsdp" / "sft_in" / "lora.safetensors")
    b = load_state_dict(work / "fp8" / "sft_in" / "lora.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fsdp_refuses_what_it_does_not_shard_before_any_work(chain, tmp_path):
    """The direction probe runs on one process: under FSDP the stage stops at once, naming the
    setting and the fix, on every process (none waits for the others in a collective)."""
    work = _copy(chain, tmp_path)
    cmd = _cmd("training.sft", work, "--stage", "sft_in", "--set", "run.out=probe", "--set", "sft_in.optim.batch=2",
               "--set", "sft_in.probe.every=1", layout="fsdp-14b")
    r = subprocess.run(cmd, cwd=work, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "set sft_in.probe.every = 0 or run.sharding = 'ddp'" in r.stdout + r.stderr
    assert not (work / "probe" / "sft_in" / "checkpoints").exists()
