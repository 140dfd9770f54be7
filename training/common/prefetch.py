"""Render procedural clips ahead of the trainer in a pool of worker processes.

A SpriteWorld clip takes milliseconds to render on one core, which is nothing next to a CPU
training step but more than a GPU step needs: the VAE stage renders its batch every step, and
the latent caches render every clip once. `run.render_workers` > 0 wraps a procedural source in
`ParallelClips`, which keeps the next `ahead` items rendering in that many processes (the
machine's other cores) while the trainer consumes the ones before them. Items come out exactly
as the source renders them: rendering depends on (seed, index) alone.

The trainers read items in increasing index order (the VAE stage: step * batch + j; the caches:
0..n-1), so rendering ahead of the highest index asked for keeps the pool busy.
"""
from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import Future, ProcessPoolExecutor

_SOURCE = None


def _init(source) -> None:
    global _SOURCE
    _SOURCE = source


def _render(index: int):
    return _SOURCE[index]


class ParallelClips:
    """source[i] rendered by `workers` processes, up to `ahead` items beyond the newest asked for."""

    def __init__(self, source, workers: int, ahead: int = 256):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.source = source
        self.ahead = ahead
        # spawn, not fork: the trainer may hold CUDA and OpenMP state that a forked child must not inherit
        self.pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init,
                                        initargs=(source,))
        self.pending: dict[int, Future] = {}
        self.scheduled_to = -1

    def __getitem__(self, index: int):
        index = int(index)
        for j in range(max(index, self.scheduled_to + 1), index + self.ahead):
            self.pending[j] = self.pool.submit(_render, j)
        self.scheduled_to = max(self.scheduled_to, index + self.ahead - 1)
        future = self.pending.pop(index, None)
        if future is None:  # asked again, or below what was scheduled: render it here
            return self.source[index]
        for stale in [j for j in self.pending if j < index - self.ahead]:
            self.pending.pop(stale).cancel()
        return future.result()

    def settings(self) -> dict:
        return self.source.settings()

    def close(self) -> None:
        for f in self.pending.values():
            f.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __getattr__(self, name):  # the source's other attributes (spec, scene, ...)
        if name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)


def parallel(source, workers: int):
    """source itself when workers is 0, else a ParallelClips over it."""
    return ParallelClips(source, workers) if workers > 0 else source
