"""Where a job's downloaded files go: sanitised local names and an all-or-nothing job folder."""
from __future__ import annotations

import os
import shutil
import string
import uuid
from pathlib import Path

_ALLOWED = set(string.ascii_letters + string.digits + "._-+()")
# Names Windows reserves regardless of extension; a studio may sync output folders to Windows.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
MAX_NAME = 150
def safe_filename(name: str, subfolder: str = "") -> str:
    """A file name that stays inside its folder whatever the server sent.

    Directory parts of `name` are dropped and the server's subfolder is folded into the name,
    so '../../etc/passwd' becomes 'passwd' and ('x.png', 'a/b') becomes 'a_b_x.png'. Only ASCII
    letters, digits and ._-+() survive; leading dots are removed (no hidden files, no '..').
    """
    base = str(name).replace("\\", "/").split("/")[-1]
    parts = [p for p in str(subfolder).replace("\\", "/").split("/") if p and p not in (".", "..")]
    text = "_".join([*parts, base])
    text = "".join(c if c in _ALLOWED else "_" for c in text).lstrip(".-_ ").rstrip(". ")
    if not text or text.strip("._-") == "":
        text = "output"
    stem, dot, ext = text.rpartition(".")
    if not dot:
        stem, ext = text, ""
    if stem.lower() in _RESERVED:
        text = "_" + text
    if len(text) > MAX_NAME:
        ext = ext[:16]
        text = (stem[: MAX_NAME - len(ext) - 1] + "." + ext) if ext else text[:MAX_NAME]
    return text


def unique_name(name: str, taken: set[str], prefix: str) -> str:
    """`name`, or `prefix-name`, or `prefix-name-N`, whichever is not yet in `taken` (case-insensitive)."""
    lowered = {t.lower() for t in taken}
    if name.lower() not in lowered:
        return name
    candidate = safe_filename(f"{prefix}-{name}")
    n = 2
    while candidate.lower() in lowered:
        stem, dot, ext = candidate.rpartition(".")
        candidate = f"{stem}-{n}.{ext}" if dot else f"{candidate}-{n}"
        n += 1
    return candidate


class JobFolder:
    """Files land in a hidden staging folder; `commit` swaps it in as out/<job id> in one rename,
    so a job folder holds either one complete set of outputs or none."""

    def __init__(self, out_dir: Path, job_id: str):
        self.final = out_dir / job_id
        self.staging = out_dir / f".{job_id}.staging-{uuid.uuid4().hex[:8]}"
        self.staging.mkdir()

    def commit(self) -> None:
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(self.final, old)
        os.replace(self.staging, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def clean_stale_staging(out_dir: Path) -> None:
    """Remove staging/old folders a killed run left behind (never anything else)."""
    for p in out_dir.glob(".*"):
        if p.is_dir() and (".staging-" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)
