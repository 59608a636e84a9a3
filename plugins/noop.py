"""A plugin that does nothing: `derain bench` measures the chain's own cost with it."""
from __future__ import annotations

from pipeline.frames import FrameBatch

from .base import Plugin
from .results import Result


class NoOp(Plugin):
    """Returns no result for every frame."""

    def process(self, batch: FrameBatch) -> list[Result | None]:
        return [None] * len(batch)
