"""Write files so that an interrupted write never leaves a partial file under the final name."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError


def check_output_folder(path: str | os.PathLike) -> Path:
    """Return `path` as a Path after checking that its folder exists (we never create it silently)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(
            f"cannot write {path}: the folder {folder} does not exist. Create it first or choose another output path."
        )
    return path


def check_writable_output(path: str | os.PathLike) -> Path:
    """Check, before any work is done, that `path` can be written: not an existing folder, and its
    folder exists and takes a new file (tried for real, so read-only mounts and permissions count
    for every user, root included)."""
    path = check_output_folder(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is an existing folder; name a file inside it "
                         f"(e.g. {path / ('output' + (path.suffix or '.mp4'))}) or another path.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".libragen-write-check.", dir=path.parent if str(path.parent) else ".")
    except OSError as e:
        raise InputError(f"cannot write {path}: the folder {path.parent} does not take new files "
                         f"({e.strerror or e}); choose a folder you can write to.") from None
    os.close(fd)
    os.unlink(probe)
    return path


@functools.cache
def default_file_mode() -> int:
    """0666 minus the umask: the mode a plain open() gives a new file."""
    # read once: os.umask can only be read by setting it, which would race with other threads
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, on error delete it.

    The temporary name keeps the final suffix so writers that choose a format by extension
    (PyAV, PIL, safetensors) behave as they would for the final name.
    """
    path = check_output_folder(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600), and some writers replace the file they are given
        # with a private one of their own (safetensors 0.8 saves through its own temporary file),
        # so the mode is set after the write: the usual umask-based one a plain open() would give
        os.chmod(tmp_path, default_file_mode())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_jsonl(path: str | os.PathLike, records) -> None:
    """One JSON object per line (sorted keys), written through atomic_path."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, sort_keys=True) + "\n")


def write_json(path: str | os.PathLike, data) -> None:
    """`data` as indented JSON with sorted keys, written through atomic_path."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
