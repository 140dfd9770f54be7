"""`libragen batch` against real ComfyUI servers started with the shared harness.

The workflow uses only ComfyUI core nodes (our own nodes do not matter to the batch tool):
LoadImage (an uploaded reference) -> ImageScale -> ImageAddNoise (the job's seed) -> SaveImage,
whose filename prefix comes from StringConcatenate (the job's prompt), plus an animated WEBP of
the same frame repeated and an MP4 of it (CreateVideo -> SaveVideo into the server's
subfolder video/). So each job proves that its image, seed and prompt reached the server.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import requests
from PIL import Image

from libragen_core.batch.jobs import find_prompt_target, find_seed_target, load_workflow
from libragen_core.errors import InputError
from libragen_core.io.atomic import default_file_mode

REPO = Path(__file__).resolve().parents[2]
HARNESS = Path(os.environ.get("COMFYUI_HARNESS", REPO.parent / "shared" / "tools" / "comfyui-harness"))
WORKFLOWS = Path(os.environ.get("LIBRAGEN_WORKFLOWS", REPO / "workflows"))  # API-format graphs to smoke-test

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact",
                                                 "width": 384, "height": 384, "crop": "disabled"}},
    "3": {"class_type": "ImageAddNoise", "inputs": {"image": ["2", 0], "seed": 0, "strength": 0.08}},
    "4": {"class_type": "StringConcatenate", "inputs": {"string_a": "batch", "string_b": "x", "delimiter": "_"}},
    "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": ["4", 0]}},
    "6": {"class_type": "RepeatImageBatch", "inputs": {"image": ["3", 0], "amount": 3}},
    "7": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["6", 0], "filename_prefix": "anim", "fps": 6.0,
                                                       "lossless": False, "quality": 80, "method": "default"}},
    "8": {"class_type": "CreateVideo", "inputs": {"images": ["6", 0], "fps": 6.0}},
    "9": {"class_type": "SaveVideo", "inputs": {"video": ["8", 0], "filename_prefix": "video/clip", "format": "auto",
                                                "codec": "auto"}},
}
COLOURS = [(200, 60, 60), (60, 170, 80), (70, 90, 200)]
SLOW = {"2.width": 2048, "2.height": 2048}  # about 4 s on one CPU core: long enough to kill mid-render


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a killed child of the harness lingers as a zombie until init reaps it
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


class Servers:
    """ComfyUI servers this module started (harness layout in a private folder whose ComfyUI/ and
    venv/ link to the configured checkout), so pid files, logs and outputs stay out of shared places."""

    def __init__(self, comfyui, root: Path):
        self.dir = root
        (root / "ComfyUI").symlink_to(comfyui.dir)
        (root / "venv").symlink_to(Path(comfyui.python).parents[1])
        self.ports: list[int] = []

    def start(self, *ports: int) -> None:
        self.ports += [p for p in ports if p not in self.ports]
        procs = []
        for p in ports:
            # the harness' output goes to a file: a pipe can stay open in the detached server
            with open(self.dir / f"harness-{p}.txt", "w") as log:
                procs.append(subprocess.Popen(["bash", str(HARNESS), "serve", str(self.dir), str(REPO), str(p)],
                                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        for p, proc in zip(ports, procs):
            rc = proc.wait(timeout=240)
            out = (self.dir / f"harness-{p}.txt").read_text()
            assert rc == 0, f"ComfyUI on port {p} did not start:\n{out[-3000:]}"

    def pid(self, port: int) -> int:
        return int((self.dir / f"server-{port}.pid").read_text().strip())

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        pid = self.pid(port)
        if alive(pid):
            os.kill(pid, sig)
        for _ in range(100):
            if not alive(pid):
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)

    def up(self, port: int) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/system_stats", timeout=2).ok
        except requests.RequestException:
            return False

    def stop_all(self) -> None:
        for port in self.ports:
            if (self.dir / f"server-{port}.pid").exists():
                self.kill(port, signal.SIGTERM)


@pytest.fixture(scope="module")
def servers(comfyui, tmp_path_factory):
    if not HARNESS.exists():
        pytest.skip(f"the ComfyUI harness is not at {HARNESS}; set COMFYUI_HARNESS")
    s = Servers(comfyui, tmp_path_factory.mktemp("comfy-batch"))
    try:
        s.start(free_port(), free_port())
        yield s
    finally:
        s.stop_all()


@pytest.fixture
def batch_dir(tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    for i, c in enumerate(COLOURS):
        Image.new("RGB", (64, 48), c).save(refs / f"ref{i}.png")
    (refs / "broken.png").write_bytes(b"this is not an image")
    (tmp_path / "wf.json").write_text(json.dumps(WORKFLOW, indent=1))
    return tmp_path


def write_jobs(d: Path, jobs: list[dict], name: str = "jobs.jsonl") -> Path:
    p = d / name
    p.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    return p


def batch_cmd(d: Path, jobs: Path, ports: list[int], *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "libragen_core", "batch", str(d / "wf.json"), str(jobs), "--out", str(d / "out"),
           "--prompt-node", "4.string_b", "--no-progress", *extra]
    for p in ports:
        cmd += ["--server", f"http://127.0.0.1:{p}"]
    return cmd


def manifest(d: Path) -> dict:
    try:
        return json.loads((d / "out" / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"jobs": {}}


def wait_until(pred, timeout: float, proc: subprocess.Popen | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"batch exited early ({proc.returncode}):\n{proc.stdout.read()}")
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def check_outputs(d: Path, job: dict, colour: tuple[int, int, int], prompt: str, size: int = 384) -> np.ndarray:
    files = {Path(o["file"]).name: d / "out" / o["file"] for o in job["outputs"]}
    assert len(files) == 3, files
    png = [f for n, f in files.items() if n.endswith(".png")][0]
    assert png.name.startswith(f"batch_{prompt}_")  # the prompt reached node 4
    webp = [f for n, f in files.items() if n.endswith(".webp")][0]
    for o in job["outputs"]:
        st = (d / "out" / o["file"]).stat()
        assert st.st_size == o["bytes"] > 0 and st.st_mode & 0o777 == default_file_mode()
    # SaveVideo wrote into the server's subfolder video/: folded into the local name
    mp4 = files[[n for n in files if n.endswith(".mp4")][0]]
    assert mp4.name.startswith("video_clip_")
    with av.open(str(mp4)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 3 and (frames[0].width, frames[0].height) == (size, size)
    with Image.open(webp) as im:  # libwebp merges the three identical frames into one
        assert im.format == "WEBP" and im.size == (size, size)
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32)
    assert pixels.shape == (size, size, 3)
    assert np.abs(pixels.mean(axis=(0, 1)) - np.array(colour)).max() < 6  # the uploaded reference was used
    assert pixels.std() > 5  # noise was added
    return pixels


def test_failures_are_recorded_with_the_servers_message_and_not_retried(servers, batch_dir):
    d, port = batch_dir, servers.ports[0]
    jobs = write_jobs(d, [
        {"id": "good", "images": {"1.image": "refs/ref0.png"}, "prompt": "good", "seed": 1},
        {"id": "broken", "images": {"1.image": "refs/broken.png"}, "prompt": "broken", "seed": 2},
        {"id": "invalid", "images": {"1.image": "refs/ref1.png"}, "inputs": {"2.width": -5}},
    ])
    out = subprocess.run(batch_cmd(d, jobs, [port]), capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    recs = manifest(d)["jobs"]
    assert recs["good"]["status"] == "done"
    check_outputs(d, recs["good"], COLOURS[0], "good")
    assert recs["broken"]["status"] == "failed" and recs["broken"]["attempts"] == 1
    assert recs["broken"]["error"].startswith("node 1 (LoadImage) raised")
    assert "identify image file" in recs["broken"]["error"]
    assert recs["invalid"]["status"] == "failed" and recs["invalid"]["attempts"] == 1
    assert "node 2 (ImageScale)" in recs["invalid"]["error"] and "-5" in recs["invalid"]["error"]
    assert not (d / "out" / "broken").exists() and not (d / "out" / "invalid").exists()
    assert "1 rendered, 0 already finished, 2 failed" in out.stdout
    # a rerun skips the finished job and tries the failed ones again
    again = subprocess.run(batch_cmd(d, jobs, [port]), capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "0 rendered, 1 already finished, 2 failed" in again.stdout
    # a server without a node type the workflow needs is not sent any job
    (d / "wf.json").write_text(json.dumps({**WORKFLOW, "9": {"class_type": "LibraGenNotInstalled", "inputs": {}}}))
    none = subprocess.run(batch_cmd(d, jobs, [port]), capture_output=True, text=True, timeout=120)
    assert none.returncode == 2
    assert f"127.0.0.1:{port}: lacks node types LibraGenNotInstalled (install them there)" in none.stderr
    assert manifest(d)["jobs"]["good"]["status"] == "pending"  # the changed graph makes it unfinished


def test_a_graph_with_one_refused_branch_is_failed_not_done(servers, batch_dir):
    """ComfyUI answers /prompt with node_errors for an invalid branch and runs the rest: the job has
    an output missing, so it is failed (with the server's words), its files are kept, the exit code
    is 1 and a rerun tries it again instead of skipping it."""
    d, port = batch_dir, servers.ports[0]
    wf = {**WORKFLOW,
          "10": {"class_type": "ImageScale", "inputs": {"image": ["3", 0], "upscale_method": "nearest-exact",
                                                       "width": -5, "height": 64, "crop": "disabled"}},
          "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "small"}}}
    (d / "wf.json").write_text(json.dumps(wf))
    jobs = write_jobs(d, [{"id": "half", "images": {"1.image": "refs/ref0.png"}, "prompt": "half", "seed": 1}])
    out = subprocess.run(batch_cmd(d, jobs, [port]), capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    rec = manifest(d)["jobs"]["half"]
    assert rec["status"] == "failed", rec
    assert rec["missing_outputs"] == ["11"]
    assert rec["error"].startswith("output node 11 (SaveImage) produced nothing")
    assert "node 10 (ImageScale)" in rec["error"] and "-5" in rec["error"]
    check_outputs(d, rec, COLOURS[0], "half")  # the three outputs the server did make are kept
    assert "0 rendered, 0 already finished, 1 failed" in out.stdout
    assert "failed half: output node 11 (SaveImage) produced nothing" in out.stderr
    again = subprocess.run(batch_cmd(d, jobs, [port]), capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "0 already finished, 1 failed" in again.stdout, again.stdout
    # fixing the branch makes the same job done, with all four outputs
    wf["10"]["inputs"]["width"] = 64
    (d / "wf.json").write_text(json.dumps(wf))
    fixed = subprocess.run(batch_cmd(d, jobs, [port]), capture_output=True, text=True, timeout=120)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    rec = manifest(d)["jobs"]["half"]
    assert rec["status"] == "done" and len(rec["outputs"]) == 4 and rec["missing_outputs"] is None


def test_ctrl_c_leaves_a_consistent_manifest_and_a_clean_server(servers, batch_dir):
    d, port = batch_dir, servers.ports[0]
    jobs = write_jobs(d, [{"id": f"c{i}", "images": {"1.image": f"refs/ref{i % 3}.png"}, "prompt": f"c{i}",
                           "seed": i, **({"inputs": SLOW} if i == 1 else {})} for i in range(4)])
    proc = subprocess.Popen(batch_cmd(d, jobs, [port]), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_until(lambda: manifest(d)["jobs"].get("c1", {}).get("prompt_id"), 60, proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, log
    recs = manifest(d)["jobs"]
    assert recs["c0"]["status"] == "done" and recs["c1"]["status"] == "pending"
    assert {r["status"] for r in recs.values()} <= {"done", "pending"}
    assert not (d / "out" / "c1").exists()
    assert [p.name for p in (d / "out").iterdir() if p.name.startswith(".")] == []
    # the interrupted prompt was taken off the server
    q = wait_until(lambda: (lambda q: q if not q["queue_running"] and not q["queue_pending"] else None)(
        requests.get(f"http://127.0.0.1:{port}/queue", timeout=5).json()), 30)
    assert q["queue_running"] == []
    out = subprocess.run(batch_cmd(d, jobs, [port]), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "3 rendered, 1 already finished" in out.stdout, out.stdout + out.stderr
    check_outputs(d, manifest(d)["jobs"]["c1"], COLOURS[1], "c1", size=2048)


def shipped_api_workflows() -> list[Path]:
    found = []
    for f in sorted(WORKFLOWS.glob("**/*.json")):
        try:
            load_workflow(f)
        except InputError:
            continue  # UI-format twin or not a workflow
        found.append(f)
    return found


def missing_files(wf: dict, info: dict) -> list[str]:
    """Choice values (model files) the server does not offer; LoadImage inputs get uploads instead."""
    out = []
    for nid, node in wf.items():
        spec = info.get(node["class_type"], {}).get("input", {})
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        for name, value in node["inputs"].items():
            if not isinstance(value, str) or (node["class_type"] == "LoadImage" and name == "image"):
                continue
            kind = declared.get(name, [None])
            choices = kind[0] if isinstance(kind[0], list) else (
                kind[1].get("options") if kind[0] == "COMBO" and len(kind) > 1 else None)
            if choices is not None and value not in choices:
                out.append(f"{nid}.{name}={value!r}")
    return out


def test_shipped_api_workflows_render_through_batch(servers, batch_dir):
    """Every API-format workflow in workflows/ (our LibraGen graphs) runs unchanged: each LoadImage
    gets an uploaded reference, prompt/seed go to the auto-detected inputs when there is exactly one,
    and step counts are cut to 2 so the CPU run stays short."""
    flows = shipped_api_workflows()
    if not flows:
        pytest.skip("workflows/ holds no API-format workflow yet")
    d = batch_dir
    port = next(p for p in servers.ports if servers.up(p))
    info = requests.get(f"http://127.0.0.1:{port}/object_info", timeout=60).json()
    ran, skipped = 0, []
    for flow in flows:
        wf = load_workflow(flow)
        absent = missing_files(wf, info)
        if absent:  # e.g. a LoRA or checkpoint this machine does not have
            skipped.append(f"{flow.name} needs {', '.join(absent)}")
            continue
        ran += 1
        job: dict = {"id": flow.stem[:60].replace(" ", "_"),
                     "images": {f"{nid}.image": "refs/ref0.png" for nid, n in wf.items()
                                if n["class_type"] == "LoadImage"},
                     "inputs": {f"{nid}.steps": 2 for nid, n in wf.items()
                                if isinstance(n["inputs"].get("steps"), int)}}
        for key, finder, value in (("prompt", find_prompt_target, "Ref 1 moves to the right"),
                                   ("seed", find_seed_target, 3)):
            try:
                finder(wf)
                job[key] = value
            except InputError:
                pass
        (d / "wf.json").write_text(json.dumps(wf))
        jobs = write_jobs(d, [job], name=f"{flow.stem}.jsonl")
        cmd = [c for c in batch_cmd(d, jobs, [port]) if c not in ("--prompt-node", "4.string_b")]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"{flow.name}:\n{out.stdout}\n{out.stderr}"
        rec = manifest(d)["jobs"][job["id"]]
        assert rec["status"] == "done" and rec["outputs"], (flow.name, rec)
        for o in rec["outputs"]:
            assert (d / "out" / o["file"]).stat().st_size == o["bytes"] > 0
        print(f"\n{flow.name}: {len(rec['outputs'])} file(s) in {rec['timings']['total_s']:.1f} s")
    for reason in skipped:
        print(f"\nnot run: {reason}")
    if not ran:
        pytest.skip("; ".join(skipped))


def test_twenty_jobs_on_two_servers_survive_a_killed_server(servers, batch_dir):
    d = batch_dir
    ports = [p for p in servers.ports if servers.up(p)]
    assert len(ports) == 2
    specs = [{"id": f"j{i:02d}", "images": {"1.image": f"refs/ref{i % 3}.png"}, "prompt": f"p{i}", "seed": i,
              **({"inputs": SLOW} if i == 4 else {})} for i in range(20)]
    jobs = write_jobs(d, specs)
    t0 = time.monotonic()
    proc = subprocess.Popen(batch_cmd(d, jobs, ports, "--retries", "2"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    # kill the server that is rendering the slow job, in the middle of it
    rec = wait_until(lambda: (lambda r: r if r.get("status") == "running" and r.get("prompt_id") else None)(
        manifest(d)["jobs"].get("j04", {})), 90, proc)
    time.sleep(1.0)
    victim = int(rec["server"].rsplit(":", 1)[1])
    servers.kill(victim)
    log, _ = proc.communicate(timeout=150)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, log
    recs = manifest(d)["jobs"]
    assert sorted(recs) == [s["id"] for s in specs]
    assert all(r["status"] == "done" for r in recs.values()), log
    survivor = next(p for p in ports if p != victim)
    assert recs["j04"]["attempts"] == 2 and recs["j04"]["server"] == f"http://127.0.0.1:{survivor}"
    by_server = {p: sum(r["server"].endswith(f":{p}") for r in recs.values()) for p in ports}
    assert by_server[victim] >= 1 and by_server[survivor] >= 10
    noises = []
    for i, s in enumerate(specs):
        pixels = check_outputs(d, recs[s["id"]], COLOURS[i % 3], f"p{i}", size=2048 if i == 4 else 384)
        if i in (0, 3):
            noises.append(pixels)
    assert np.abs(noises[0] - noises[1]).mean() > 1  # same reference, different seeds
    retries = int(re.search(r"; (\d+) retr(?:y|ies) after server drops", log).group(1))
    assert retries >= 1  # at least the slow job; jobs queued on the victim may add more
    print(f"\n20 jobs on 2 servers, one killed: {elapsed:.1f} s, {retries} retr(y/ies), per server {by_server}")
    # rerun: everything is skipped, even with the killed server still down
    t1 = time.monotonic()
    again = subprocess.run(batch_cmd(d, jobs, ports), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "0 rendered, 20 already finished" in again.stdout, again.stdout
    print(f"rerun: {time.monotonic() - t1:.1f} s, all 20 skipped")


def test_a_job_waits_for_its_only_server_to_come_back(servers, batch_dir):
    d = batch_dir
    port = next(p for p in servers.ports if servers.up(p))
    jobs = write_jobs(d, [{"id": "only", "images": {"1.image": "refs/ref2.png"}, "prompt": "only", "seed": 9,
                           "inputs": SLOW}])
    proc = subprocess.Popen(batch_cmd(d, jobs, [port], "--server-wait", "120"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_until(lambda: manifest(d)["jobs"].get("only", {}).get("prompt_id"), 60, proc)
    time.sleep(1.0)
    servers.kill(port)
    wait_until(lambda: manifest(d)["jobs"]["only"].get("status") == "pending", 30, proc)
    servers.start(port)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log
    rec = manifest(d)["jobs"]["only"]
    assert rec["status"] == "done" and rec["attempts"] == 2 and "answers again" in log
    check_outputs(d, rec, COLOURS[2], "only", size=2048)

    # with --retries 0 the same drop ends the job as failed, and the run does not wait for the server
    jobs = write_jobs(d, [{"id": "once", "images": {"1.image": "refs/ref0.png"}, "prompt": "once", "seed": 10,
                           "inputs": SLOW}], name="once.jsonl")
    proc = subprocess.Popen(batch_cmd(d, jobs, [port], "--retries", "0"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_until(lambda: manifest(d)["jobs"].get("once", {}).get("prompt_id"), 60, proc)
    time.sleep(1.0)
    servers.kill(port)
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, log
    rec = manifest(d)["jobs"]["once"]
    assert rec["status"] == "failed" and rec["attempts"] == 1
    assert rec["error"].startswith("its server dropped it 1 times (--retries 0)")
    assert manifest(d)["jobs"]["only"]["status"] == "done"  # the earlier record is kept
