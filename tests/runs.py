"""Helpers for tests that kill a training run and resume it (`from tests.runs import sigkill_when`)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable


def sigkill_when(proc: subprocess.Popen, reached: Callable[[], bool], what: str, timeout: float = 240) -> None:
    """Wait until reached() is true while proc runs, then SIGKILL it; fail if it ends first or
    takes longer than timeout seconds. The process is gone when this returns."""
    deadline = time.monotonic() + timeout
    try:
        while not reached():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, f"the run did not reach {what} in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
