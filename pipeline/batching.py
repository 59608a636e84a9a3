"""The temporal batcher: consecutive frames -> batches, cut by size or by waiting time.

Two knobs, as Ray Serve's `@serve.batch`: `max_batch` frames, or `max_wait_ms` after
the first frame of a batch arrived, whichever comes first. A change of frame size
also cuts (one array per batch). At end of stream the partial batch is flushed.

A temporal network needs each frame's neighbours, so with a `halo` of (k_before, k_after)
every batch also carries the k_before frames that preceded it and the k_after that follow it
(read ahead and kept for the next batch): batches overlap by the window, and where a batch is
cut changes nothing. Context never crosses a change of frame size, nor the start or end of
the stream: there the network's window uses the frames that exist.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Iterator

from .framequeue import Closed, FrameQueue
from .frames import Frame, FrameBatch


class Batcher:
    def __init__(self, max_batch: int = 4, max_wait_ms: float = 50.0, halo: tuple[int, int] = (0, 0)):
        if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1 (got {max_batch!r})")
        if not isinstance(max_wait_ms, (int, float)) or max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be a number >= 0 (got {max_wait_ms!r})")
        if len(halo) != 2 or any(not isinstance(k, int) or k < 0 for k in halo):
            raise ValueError(f"halo must be two integers >= 0 (got {halo!r})")
        self.max_batch, self.max_wait_ms, self.halo = max_batch, float(max_wait_ms), tuple(halo)
        self._held: deque[Frame] = deque()  # read but not yet batched (a new size, or read ahead)
        self._tail: list[Frame] = []  # the last frames batched: the next batch's `before`
        self._closed = False

    @property
    def held(self) -> int:
        """Frames read but in no batch yet (read-ahead context, a new size): dropped if the run stops."""
        return len(self._held)

    def batches(self, queue: FrameQueue, poll_s: float = 0.2, stop=lambda: False) -> Iterator[FrameBatch]:
        """Yield batches until the queue closes (or `stop()` turns true); flush the last partial one."""
        while not stop():
            first = self._next(queue, poll_s)
            if first is None:
                continue
            if first is Closed:
                return
            frames = [first]
            deadline = time.monotonic() + self.max_wait_ms / 1000
            while len(frames) < self.max_batch:
                frame = self._next(queue, max(0.0, deadline - time.monotonic()))
                if frame is None or frame is Closed:  # waited max_wait_ms, or the end
                    break
                if frame.image.shape != first.image.shape:
                    self._held.appendleft(frame)
                    break
                frames.append(frame)
            shape = first.image.shape
            before = self._run_before(shape)
            after = self._read_ahead(queue, shape, poll_s, stop) if self.halo[1] else []
            self._tail = (self._tail + frames)[-self.halo[0]:] if self.halo[0] else []
            yield FrameBatch.of(frames, before, after)

    def _run_before(self, shape: tuple) -> list[Frame]:
        """The last frames batched, back to the nearest change of size (none across it)."""
        run: list[Frame] = []
        for frame in reversed(self._tail):
            if frame.image.shape != shape:
                break
            run.insert(0, frame)
        return run

    def _read_ahead(self, queue: FrameQueue, shape: tuple, poll_s: float, stop) -> list[Frame]:
        """The next halo[1] frames of this size, left queued for the next batch."""
        taken: list[Frame] = []
        while len(taken) < self.halo[1] and not stop():
            frame = self._next(queue, poll_s)
            if frame is None:
                continue
            if frame is Closed:
                break
            taken.append(frame)
            if frame.image.shape != shape:
                break
        self._held.extendleft(reversed(taken))
        return [f for f in taken if f.image.shape == shape]

    def _next(self, queue: FrameQueue, timeout: float):
        if self._held:
            return self._held.popleft()
        if self._closed:
            return Closed
        try:
            return queue.get(timeout)
        except Closed:
            self._closed = True
            return Closed
