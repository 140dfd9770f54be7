"""Run logging: TensorBoard scalars/images, a metrics.jsonl that scripts and tests can read, stdout lines."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np


class RunLogger:
    """Writes every logged scalar to TensorBoard (folder/tb) and to folder/metrics.jsonl.

    metrics.jsonl is appended with one JSON object per call ({"step", "time", ...}); a resumed run
    keeps appending, so the file holds the whole curve (with possible repeats of the steps between
    the last checkpoint and a crash; readers keep the last value per step).
    """

    def __init__(self, folder: str | os.PathLike, stage: str, enabled: bool = True, tensorboard: bool = True):
        self.folder = Path(folder)
        self.stage = stage
        self.enabled = enabled
        self._tb = None
        if enabled:
            self.folder.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(str(self.folder / "tb"))
                except ImportError:  # tensorboard is a training extra; the jsonl log still works
                    self._tb = None
        self._file = self.folder / "metrics.jsonl"

    def scalars(self, step: int, values: dict, prefix: str = "") -> None:
        if not self.enabled:
            return
        clean = {}
        for k, v in values.items():
            if isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v)):
                clean[prefix + k] = float(v)
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(f"{self.stage}/{k}", v, step)
        with open(self._file, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": int(step), "time": round(time.time(), 3), **clean}) + "\n")

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        if self.enabled and self._tb is not None:
            self._tb.add_image(f"{self.stage}/{tag}", image, step, dataformats="HWC")

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | os.PathLike) -> dict[int, dict]:
    """metrics.jsonl -> {step: merged values}, the last write of a step winning (resumed runs)."""
    out: dict[int, dict] = {}
    p = Path(path)
    if not p.is_file():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            out.setdefault(rec["step"], {}).update(rec)
    return out
