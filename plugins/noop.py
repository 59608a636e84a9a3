"""A plugin that does nothing: `derain bench` measures the chain's own cost with it.

With `delay_ms` it stands in for a detector of that speed, which shows whether a
plugin actor pool overlaps deraining (pipeline frame time ~ max, not sum, of the two).
"""
from __future__ import annotations

import time

from pipeline.frames import FrameBatch

from .base import Plugin
from .results import Result


class NoOp(Plugin):
    """Returns no result for every frame, after sleeping `delay_ms` per frame."""

    def __init__(self, delay_ms: float = 0.0):
        self.delay_ms = delay_ms

    def process(self, batch: FrameBatch) -> list[Result | None]:
        if self.delay_ms:
            time.sleep(self.delay_ms * len(batch) / 1000)
        return [None] * len(batch)
