"""On-disk cache of rewrites, so re-running a graph or a script never calls an LLM again.

One JSON file per rewrite under the cache folder, named by the SHA-256 of (backend, model,
labels, prompt, reference descriptions, style-guide hash). Files are written atomically; a
damaged file is treated as a miss and rewritten. Nothing secret is ever part of a key or a
file: API keys are read from the environment by the HTTP backend and stay there.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..io.atomic import atomic_path
from .base import Rewrite

CACHE_ENV = "LIBRAGEN_REWRITE_CACHE"
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """$LIBRAGEN_REWRITE_CACHE, else the user's cache folder (XDG_CACHE_HOME or ~/.cache)/libragen/rewrite."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "libragen" / "rewrite"


def cache_key(backend: str, model: str, labels: Sequence[str], prompt: str, style_hash: str,
              ref_descriptions: Sequence[str] = ()) -> str:
    payload = json.dumps({"v": CACHE_VERSION, "backend": backend, "model": model, "labels": list(labels),
                          "prompt": prompt, "style": style_hash, "refs": list(ref_descriptions)},
                         ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class RewriteCache:
    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else default_cache_dir()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> Rewrite | None:
        try:
            data = json.loads(self._path(key).read_text(encoding="utf-8"))
            return Rewrite.from_dict(data["rewrite"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, result: Rewrite) -> Path:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"key": key, "rewrite": result.to_dict()}, ensure_ascii=False, indent=1),
                           encoding="utf-8")
        return path
