"""The results manifest: one JSON file in the output folder, rewritten atomically on every change,
that records each job's status, server, prompt id, outputs, timings and error, and tells a rerun
which jobs are finished."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io.atomic import atomic_path
from .jobs import MANIFEST_NAME

FORMAT = "libragen-batch-manifest"
VERSION = 1
PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Manifest:
    """Thread-safe job records keyed by job id. Every `update` rewrites the file, so the file on
    disk is always one consistent snapshot (a killed run leaves at worst a job marked running,
    which a rerun treats as unfinished)."""

    def __init__(self, path: Path, data: dict):
        self.path = path
        self._data = data
        self._lock = threading.Lock()

    @classmethod
    def open(cls, out_dir: Path, **info: Any) -> Manifest:
        path = Path(out_dir) / MANIFEST_NAME
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise InputError(f"manifest {path} is damaged ({e}); move it away to start the batch over") from None
            if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("jobs"), dict):
                raise InputError(f"{path} is not a libragen batch manifest; choose another --out folder")
            if data.get("version") != VERSION:
                raise InputError(f"manifest {path} has version {data.get('version')}, this tool writes {VERSION}; "
                                 "move it away to start over")
        else:
            data = {"format": FORMAT, "version": VERSION, "created": now_iso(), "jobs": {}}
        data.update(info)
        return cls(path, data)

    def get(self, job_id: str) -> dict | None:
        with self._lock:
            rec = self._data["jobs"].get(job_id)
            return json.loads(json.dumps(rec)) if rec is not None else None

    def is_finished(self, job_id: str, fingerprint: str) -> bool:
        """Done with the same graph and inputs, and every recorded file still on disk at its size."""
        rec = self.get(job_id)
        if not rec or rec.get("status") != DONE or rec.get("fingerprint") != fingerprint:
            return False
        base = self.path.parent
        for out in rec.get("outputs", []):
            f = base / out["file"]
            if not f.is_file() or f.stat().st_size != out.get("bytes"):
                return False
        return True

    def update(self, job_id: str, write: bool = True, **fields: Any) -> None:
        with self._lock:
            rec = self._data["jobs"].setdefault(job_id, {"id": job_id})
            rec.update(fields)
            if write:
                self._write_locked()

    def update_run(self, **info: Any) -> None:
        """Run-level fields (servers, times) beside the job records."""
        with self._lock:
            self._data.update(info)
            self._write_locked()

    def save(self) -> None:
        with self._lock:
            self._write_locked()

    def counts_for(self, job_ids: list[str]) -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            for jid in job_ids:
                status = self._data["jobs"].get(jid, {}).get("status", PENDING)
                out[status] = out.get(status, 0) + 1
            return out

    def _write_locked(self) -> None:
        self._data["updated"] = now_iso()
        counts: dict[str, int] = {}
        for rec in self._data["jobs"].values():
            counts[rec.get("status", PENDING)] = counts.get(rec.get("status", PENDING), 0) + 1
        self._data["summary"] = counts
        # One job per line: readable and diffable, and it keeps json's C encoder (indent= would
        # fall back to the pure-Python one, ~10x slower on a thousand-job manifest).
        head = [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in self._data.items() if k != "jobs"]
        jobs = [f"  {json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}"
                for k, v in self._data["jobs"].items()]
        text = "{\n" + ",\n".join(head) + ',\n "jobs": {\n' + ",\n".join(jobs) + "\n }\n}\n"
        with atomic_path(self.path) as tmp:
            tmp.write_text(text, encoding="utf-8")
