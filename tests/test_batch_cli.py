"""`libragen batch` without a live server: validation before queueing, and giving up on dead servers
with every job left pending in the manifest."""
from __future__ import annotations

import json
import socket

import pytest

from libragen_core.cli import main

WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": 0, "strength": 0.5}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
}


def setup(tmp_path, jobs):
    (tmp_path / "wf.json").write_text(json.dumps(WORKFLOW))
    (tmp_path / "ref.png").write_bytes(b"png bytes")
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(j) + "\n" for j in jobs))
    return str(tmp_path / "wf.json"), str(tmp_path / "jobs.jsonl")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_job_line_is_refused_before_any_server_is_contacted(tmp_path, capsys):
    wf, jobs = setup(tmp_path, [{"seed": 1}, {"inputs": {"7.seed": 2}}])
    rc = main(["batch", wf, jobs, "--server", f"127.0.0.1:{closed_port()}", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "jobs.jsonl line 2: inputs key '7.seed': node '7' is not in the workflow" in err
    assert not (tmp_path / "out").exists()


def test_check_mode(tmp_path, capsys):
    wf, jobs = setup(tmp_path, [{"seed": 1, "images": {"1.image": "ref.png"}}, {"seed": 2}])
    assert main(["batch", wf, jobs, "--server", "127.0.0.1:1", "--out", str(tmp_path / "o"), "--check"]) == 0
    assert "2 job(s) fit" in capsys.readouterr().out


def test_unreachable_servers_leave_jobs_pending(tmp_path, capsys):
    wf, jobs = setup(tmp_path, [{"id": "a", "seed": 1}, {"id": "b", "seed": 2}])
    out = tmp_path / "out"
    rc = main(["batch", wf, jobs, "--server", f"127.0.0.1:{closed_port()}", "--server", f"127.0.0.1:{closed_port()}",
               "--out", str(out), "--server-wait", "0.5", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "no server answered" in err and "rerun the same command to resume" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert {j["status"] for j in manifest["jobs"].values()} == {"pending"}
    assert sorted(manifest["jobs"]) == ["a", "b"]
    assert [p.name for p in out.iterdir()] == ["manifest.json"]


@pytest.mark.parametrize("option, value, message", [
    ("--retries", "-1", "argument --retries: must be a whole number of at least 0; got '-1'"),
    ("--per-server", "0", "argument --per-server: must be a whole number of at least 1; got '0'"),
    ("--timeout", "0", "argument --timeout: must be a finite number above 0; got '0'"),
    ("--server-wait", "nan", "argument --server-wait: must be a finite number above 0; got 'nan'"),
])
def test_numeric_options_are_checked_when_parsed(tmp_path, capsys, option, value, message):
    wf, jobs = setup(tmp_path, [{"seed": 1}])
    with pytest.raises(SystemExit) as e:
        main(["batch", wf, jobs, "--server", "127.0.0.1:1", "--out", str(tmp_path / "out"), option, value])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
