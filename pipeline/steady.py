"""Each lane's deflicker on a thread of its own, its batches handed on in order.

The deflicker (model/deflicker.py) must see a lane's frames one after another, so it cannot run
in the model's batches; on the frame loop's thread it would hold up everything else the loop
does (submitting batches, collecting results, writing) for ~50 ms a 1080p frame, and several
cameras would queue on that one thread. Here each lane has a thread that steadies its batches
in order while the loop goes on: lanes steady side by side (OpenCV releases the GIL), and the
loop takes each batch back once it is steadied.
"""
from __future__ import annotations

import dataclasses
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

from .frames import FrameBatch


class SteadyLane:
    """`put` a lane's derained batches in order; `ready` gives them back steadied, in that order."""

    def __init__(self, name: str):
        from .model.deflicker import Deflicker

        self._deflicker = Deflicker()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"steady-{name}"[:40])
        self._queue: deque[tuple[FrameBatch, Future]] = deque()

    def __len__(self) -> int:
        """Batches put and not yet taken back."""
        return len(self._queue)

    def put(self, batch: FrameBatch) -> None:
        """Queue the lane's next batch. One that is not RGB (yuv420p planes: frame_layout sends none
        where the deflicker is on) passes unchanged, still in its turn."""
        work = self._deflicker.frames if batch.images.ndim == 4 else _unchanged
        self._queue.append((batch, self._thread.submit(work, batch.images)))

    def ready(self) -> Iterator[tuple[FrameBatch, BaseException | None]]:
        """The batches steadied so far, in order, each with None; a batch whose deflicker failed
        comes as it was put, with the error (the caller decides: a file fails, a camera goes on)."""
        while self._queue and self._queue[0][1].done():
            batch, future = self._queue.popleft()
            error = future.exception()
            yield (batch, error) if error else (dataclasses.replace(batch, images=future.result()), None)

    def close(self) -> None:
        """Batches not started are dropped (a run that failed); the one under way finishes."""
        self._thread.shutdown(wait=False, cancel_futures=True)
        self._queue.clear()


def _unchanged(images):
    return images
