"""Training batches made ahead by worker processes, so a GPU never waits for the synthesiser.

Batch k of a stage is drawn from a generator seeded with (seed, stage, k) and nothing
else, so the data a run sees does not depend on how many workers made it, and a resumed
run sees exactly the batches an unbroken one would have.
"""
from __future__ import annotations

import multiprocessing as mp
from collections import deque

import numpy as np

from .data import PatchSampler

WORKER_TIMEOUT_S = 300
_sampler: PatchSampler | None = None  # one per worker process, built by _init


def batch_rng(seed: int, stage: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, stage, step])


def _init(sampler_args: tuple) -> None:
    global _sampler
    import cv2

    cv2.setNumThreads(1)  # the pool is the parallelism; don't oversubscribe the cores
    _sampler = PatchSampler.from_dirs(*sampler_args)


def _make(seed: int, stage: int, step: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    return _sampler.batch(n, batch_rng(seed, stage, step))


class BatchStream:
    """`next(n)` gives the batch of the current step; `workers` processes keep `ahead` batches ready.

    With workers=0 batches are made in this process (the CPU recipe: the cores are busy training).
    """

    def __init__(self, sampler_args: tuple, seed: int, workers: int = 0, ahead: int = 0):
        self.seed, self.workers = seed, workers
        self.ahead = ahead or 2 * workers
        self.pending: deque = deque()
        self.key: tuple[int, int] | None = None  # (stage, next step to hand out)
        # Built here too, so bad training folders fail now, naming the folder, not in a worker
        # (a pool whose initialiser fails restarts it forever).
        self.sampler = PatchSampler.from_dirs(*sampler_args)
        self.pool = None
        if workers:
            # spawn: the parent may already hold CUDA state, which must not be forked
            self.pool = mp.get_context("spawn").Pool(workers, _init, (sampler_args,))

    def next(self, stage: int, step: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.pool is None:
            return self.sampler.batch(n, batch_rng(self.seed, stage, step))
        if self.key != (stage, step):  # first call, a new stage, or a resume: restart the queue
            self.pending.clear()
            self.key, self.queued = (stage, step), step
        while len(self.pending) < self.ahead:
            self.pending.append(self.pool.apply_async(_make, (self.seed, stage, self.queued, n)))
            self.queued += 1
        self.key = (stage, step + 1)
        try:
            return self.pending.popleft().get(timeout=WORKER_TIMEOUT_S)
        except mp.TimeoutError:
            raise RuntimeError(f"no training batch from the {self.workers} worker processes "
                               f"in {WORKER_TIMEOUT_S} s; are they dying? (try data.workers: 0)") from None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool = None
