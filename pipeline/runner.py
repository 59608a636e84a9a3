"""The frame path, wired: source -> queue -> batcher -> worker pool -> reorder -> consumers -> sinks.

Decoding runs in a reader thread and encoding in this loop while the workers compute,
so both overlap the model. Batches go out tagged with a running key and come back in
any order; the reorder buffer hands them on strictly in key order.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .batching import Batcher
from .framequeue import FrameQueue
from .frames import FrameBatch
from .sources import start_reader
from .workers import drain

log = logging.getLogger(__name__)

Consumer = Callable[[FrameBatch], object]


@dataclass
class RunStats:
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    seconds: float = 0.0
    truncated: bool = False
    worker_restarts: int = 0
    latency_s: list[float] = field(default_factory=list, repr=False)

    @property
    def fps(self) -> float:
        return self.frames_out / self.seconds if self.seconds else 0.0

    def latency_percentiles(self) -> dict[str, float]:
        if not self.latency_s:
            return {}
        p = np.percentile(self.latency_s, [50, 95, 99])
        return {"p50": float(p[0]), "p95": float(p[1]), "p99": float(p[2])}

    def as_dict(self) -> dict:
        return {"frames_in": self.frames_in, "frames_out": self.frames_out, "dropped": self.dropped,
                "seconds": round(self.seconds, 3), "fps": round(self.fps, 3), "truncated": self.truncated,
                "worker_restarts": self.worker_restarts, "latency": self.latency_percentiles()}


class Runner:
    """Run one source through a pool into sinks.

    Args:
        source: iterable of Frames with `.info` and `.truncated` (see pipeline.sources).
        sinks: objects with write(FrameBatch) and close(ok).
        pool: a worker pool (pipeline.workers).
        batcher: cuts the frames into batches.
        queue_size, policy: the bounded reader queue and what happens when it is full.
        consumers: called with every derained batch, in order, before the sinks.
        progress: show a progress bar (frames).
    """

    def __init__(self, source, sinks: Sequence, pool, batcher: Batcher, queue_size: int = 16,
                 policy: str = "block", consumers: Sequence[Consumer] = (), progress: bool = False):
        self.source, self.sinks, self.pool, self.batcher = source, list(sinks), pool, batcher
        self.queue_size, self.policy = queue_size, policy
        self.consumers = list(consumers)
        self.progress = progress
        self.stop_event = threading.Event()
        self.stats = RunStats()

    def stop(self) -> None:
        """Finish what was read and close the outputs playable (SIGTERM for live sources)."""
        self.stop_event.set()
        if hasattr(self.source, "stop"):  # a live source (pipeline.live) ends its reader too
            self.source.stop()

    def run(self) -> RunStats:
        queue = FrameQueue(self.queue_size, self.policy)
        errors: list[BaseException] = []
        reader = start_reader(self.source, queue, errors)
        bar = self._bar()
        self._pending: dict[int, FrameBatch] = {}
        self._batches: dict[int, FrameBatch] = {}
        self._next_out = 0
        start = time.monotonic()
        ok = False
        try:
            key = 0
            for batch in self.batcher.batches(queue, stop=self.stop_event.is_set):
                while self.pool.capacity() <= 0:
                    self._collect(self.pool.poll(0.5), bar)
                self._batches[key] = batch
                self.pool.submit(key, *batch.model_input())
                key += 1
                self._collect(self.pool.poll(0), bar)
            self._collect(drain(self.pool), bar)
            if errors:
                raise errors[0]
            ok = True
        finally:
            queue.close()
            self.stats.seconds = time.monotonic() - start
            self.stats.frames_in = queue.put_count
            self.stats.dropped = queue.dropped
            self.stats.truncated = bool(getattr(self.source, "truncated", False))
            self.stats.worker_restarts = self.pool.restarts
            for sink in self.sinks:
                sink.close(ok=ok)
            if bar is not None:
                bar.close()
            reader.join(timeout=1)
        return self.stats

    def _collect(self, results, bar) -> None:
        for key, frames, intensity in results:
            self._pending[key] = self._batches.pop(key).derained(frames, intensity)
        while self._next_out in self._pending:
            self._emit(self._pending.pop(self._next_out))
            self._next_out += 1
            if bar is not None:
                bar.n = self.stats.frames_out
                bar.refresh()

    def _emit(self, batch: FrameBatch) -> None:
        for consumer in self.consumers:
            consumer(batch)
        for sink in self.sinks:
            sink.write(batch)
        now = time.monotonic()
        self.stats.frames_out += len(batch)
        self.stats.latency_s.extend(now - t for t in batch.arrival)

    def _bar(self):
        if not self.progress:
            return None
        from tqdm import tqdm

        total = getattr(getattr(self.source, "info", None), "frames", None)
        return tqdm(total=total, unit="frame", desc="derain", dynamic_ncols=True)
