"""The batch manifest: atomic rewrites, and which jobs a rerun may skip."""
from __future__ import annotations

import json

import pytest

from libragen_core.batch.manifest import DONE, FAILED, PENDING, RUNNING, Manifest
from libragen_core.errors import InputError
from libragen_core.io.atomic import default_file_mode


def finished(m: Manifest, tmp_path, jid="a", fp="f1", data=b"12345"):
    (tmp_path / jid).mkdir(exist_ok=True)
    (tmp_path / jid / "x.png").write_bytes(data)
    m.update(jid, status=DONE, fingerprint=fp, outputs=[{"file": f"{jid}/x.png", "bytes": len(data)}])


def test_resume_rules(tmp_path):
    m = Manifest.open(tmp_path, workflow="wf.json")
    finished(m, tmp_path)
    assert m.is_finished("a", "f1")
    assert not m.is_finished("a", "f2")  # the graph or an image changed: render again
    assert not m.is_finished("b", "f1")  # never seen
    (tmp_path / "a" / "x.png").write_bytes(b"123")  # truncated by something else
    assert not m.is_finished("a", "f1")
    (tmp_path / "a" / "x.png").unlink()
    assert not m.is_finished("a", "f1")
    for status in (FAILED, PENDING, RUNNING):
        finished(m, tmp_path, jid="c")
        m.update("c", status=status)
        assert not m.is_finished("c", "f1")


def test_reopened_manifest_keeps_records_and_is_valid_json(tmp_path):
    m = Manifest.open(tmp_path, workflow="wf.json")
    finished(m, tmp_path)
    m.update("b", status=FAILED, error="node 3 (KSampler) raised RuntimeError: boom")
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["summary"] == {DONE: 1, FAILED: 1}
    assert data["jobs"]["b"]["error"].endswith("boom")
    again = Manifest.open(tmp_path, workflow="wf2.json")
    assert again.is_finished("a", "f1") and again.get("b")["status"] == FAILED
    assert again.counts_for(["a", "b", "new"]) == {DONE: 1, FAILED: 1, PENDING: 1}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left
    assert (tmp_path / "manifest.json").stat().st_mode & 0o777 == default_file_mode()  # not mkstemp's 0600


def test_damaged_or_foreign_manifest_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text("{half")
    with pytest.raises(InputError, match="damaged .* move it away"):
        Manifest.open(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"something": "else"}))
    with pytest.raises(InputError, match="not a libragen batch manifest"):
        Manifest.open(tmp_path)
