"""The plugin contract: one abstract method, `process`, called once per batch in order.

A plugin sees a derained `FrameBatch`: `images` (what gets encoded), `rainy` (the
originals), per frame `seq`, `pts`, `time_base`, and `rain_intensity`, plus the results
of the plugins before it in the chain (`upstream`). It returns one entry per frame.
A plugin that draws on the output sets `annotates = True`; the chain then hands it a
writable copy of the images (Ray-delivered arrays are read-only), and only then, so a
chain of pure detectors costs no copy. Any other plugin gets them read-only: drawing
there fails the call (counted, named) rather than changing what is encoded unseen.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from pipeline.frames import FrameBatch

from .results import Detections, Result

RESULTS_KEY = "plugin_results"  # FrameBatch.meta key: {plugin name: [Result | None per frame]}


class Plugin(ABC):
    """Base of every plugin (built-in or third-party).

    Subclasses take their settings as keyword arguments in `__init__` (the YAML `with:`
    mapping) and only store them: heavy work (model loading, opening files) belongs in
    `setup`, which runs where the plugin runs (in its Ray actor when it has one).

    Attributes:
        name: the short name used in logs and results; the loader sets the configured one.
        annotates: True when `process` draws on `batch.images` (the encoded frames).
        timeout_s: the time limit of one `process` call (the YAML `timeout_s:` overrides it;
            None: no limit); a call past it counts as failed under the plugin's `on_error`.
    """

    name: str = ""
    annotates: bool = False
    timeout_s: float | None = 10.0

    def setup(self) -> None:
        """Acquire resources once, before the first batch."""

    def before_actors(self) -> None:
        """Called in the pipeline's process each time the plugin's Ray actors (`ray:`) are
        started, before it is copied into them; their `setup` runs in each replica and again in
        every actor Ray restarts. A plugin with one output for all its copies readies it here
        (and makes the copies add to it), so a restarted actor does not start it afresh."""

    @abstractmethod
    def process(self, batch: FrameBatch) -> list[Result | None]:
        """Handle one batch; return exactly one entry per frame (None: nothing to report)."""

    def close(self) -> None:
        """Release resources after the last batch (also after a failure)."""


def upstream(batch: FrameBatch) -> dict[str, list[Result | None]]:
    """Results of the plugins that ran before this one on `batch`, by plugin name."""
    return batch.meta.get(RESULTS_KEY, {})


def detections_at(batch: FrameBatch, i: int) -> Detections:
    """All upstream detections of frame `i`, merged (empty when there are none)."""
    parts = [r[i].detections for r in upstream(batch).values() if r[i] is not None and r[i].detections is not None]
    return Detections.merge(parts)
