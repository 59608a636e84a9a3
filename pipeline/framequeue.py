"""A bounded frame queue between a reader thread and the batcher, with a drop policy.

Files use `block` (nothing is ever dropped: the reader waits). Live sources use
`drop-oldest`: when the model falls behind, the oldest waiting frame goes, so the
delay stays bounded; every drop is counted.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Literal

from .frames import Frame

DropPolicy = Literal["block", "drop-oldest", "drop-newest"]
POLICIES = ("block", "drop-oldest", "drop-newest")


class Closed(Exception):
    """The queue was closed and is empty: the stream has ended."""


class FrameQueue:
    def __init__(self, maxsize: int, policy: DropPolicy = "block"):
        if not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be an integer >= 1 (got {maxsize!r})")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES} (got {policy!r})")
        self.maxsize, self.policy = maxsize, policy
        self._items: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.put_count = 0
        self.dropped = 0

    def put(self, frame: Frame) -> bool:
        """Add a frame; returns False if it (or, for drop-oldest, another) was dropped."""
        with self._cond:
            self.put_count += 1
            if self.policy == "block":
                while len(self._items) >= self.maxsize and not self._closed:
                    self._cond.wait(0.1)
            kept = True
            if len(self._items) >= self.maxsize:
                self.dropped += 1
                kept = False
                if self.policy == "drop-newest":
                    return False
                self._items.popleft()
            self._items.append(frame)
            self._cond.notify_all()
            return kept

    def get(self, timeout: float | None = None) -> Frame | None:
        """The oldest frame; None on timeout; raises Closed once closed and drained."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    raise Closed
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left if left is not None else 0.5)
            frame = self._items.popleft()
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._items)
