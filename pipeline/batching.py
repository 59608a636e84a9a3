"""The temporal batcher: consecutive frames -> batches, cut by size or by waiting time.

Two knobs, as Ray Serve's `@serve.batch`: `max_batch` frames, or `max_wait_ms` after
the first frame of a batch arrived, whichever comes first. A change of frame size
also cuts (one array per batch). At end of stream the partial batch is flushed.
"""
from __future__ import annotations

import time
from typing import Iterator

from .framequeue import Closed, FrameQueue
from .frames import Frame, FrameBatch


class Batcher:
    def __init__(self, max_batch: int = 4, max_wait_ms: float = 50.0):
        if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1 (got {max_batch!r})")
        if not isinstance(max_wait_ms, (int, float)) or max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be a number >= 0 (got {max_wait_ms!r})")
        self.max_batch, self.max_wait_ms = max_batch, float(max_wait_ms)
        self._held: Frame | None = None

    def batches(self, queue: FrameQueue, poll_s: float = 0.2, stop=lambda: False) -> Iterator[FrameBatch]:
        """Yield batches until the queue closes (or `stop()` turns true); flush the last partial one."""
        while not stop():
            first = self._held or self._next(queue, poll_s)
            self._held = None
            if first is None:
                continue
            if first is Closed:
                return
            frames = [first]
            deadline = time.monotonic() + self.max_wait_ms / 1000
            ended = False
            while len(frames) < self.max_batch:
                frame = self._next(queue, max(0.0, deadline - time.monotonic()))
                if frame is None:  # waited max_wait_ms
                    break
                if frame is Closed:
                    ended = True
                    break
                if frame.image.shape != first.image.shape:
                    self._held = frame
                    break
                frames.append(frame)
            yield FrameBatch.of(frames)
            if ended:
                return

    @staticmethod
    def _next(queue: FrameQueue, timeout: float):
        try:
            return queue.get(timeout)
        except Closed:
            return Closed
