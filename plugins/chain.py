"""Plugins in configured order, pipelined across batches, between the reorder buffer and the sinks.

Each batch walks the stages in order; a batch may enter a stage only after every earlier
batch has entered it, so every plugin sees batches in order. Inline stages are waited for
at once; actor stages return at once and finish later, so up to `window` batches are in
flight and a slow detector overlaps the derain workers. Every call has a time limit (the
plugin's `timeout_s`, 10 s by default); a call past it counts as failed. A failing plugin
never corrupts the video: with `on_error: skip` its results for that batch are None and the
frames go on unchanged; with `stop` a PluginError ends the run (the sink removes its
partial file). `interrupt()` (the run is stopping) bounds every wait to a few seconds.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace

from pipeline.errors import PluginError
from pipeline.frames import FrameBatch

from .actors import ActorStage, InlineStage, Ticket, error_words
from .base import RESULTS_KEY, Result, upstream
from .loader import PluginSpec, load_plugins

log = logging.getLogger(__name__)


@dataclass
class PluginStats:
    batches: int = 0
    frames: int = 0
    errors: int = 0
    restarts: int = 0
    timeouts: int = 0


@dataclass
class _Job:
    batch: FrameBatch
    stage: int = 0
    ticket: Ticket | None = None
    writable: bool = False


@dataclass
class PluginChain:
    """Run configured plugins on every derained batch, in order.

    Args:
        specs: checked plugins from `load_plugins`, in chain order.
        window: batches in flight at most (actor stages); 1 makes the chain synchronous.
    """

    specs: list[PluginSpec]
    window: int = 4
    stats: dict[str, PluginStats] = field(init=False)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window: must be an integer >= 1 (got {self.window})")
        self.stages = [ActorStage(s) if s.ray else InlineStage(s) for s in self.specs]
        self.stats = {s.name: PluginStats() for s in self.specs}
        self._jobs: deque[_Job] = deque()
        self._started: list = []
        self._streak = {s.name: 0 for s in self.specs}  # consecutive failed batches, per plugin
        self._logged = {s.name: 0.0 for s in self.specs}  # when a failure was last logged

    @classmethod
    def from_config(cls, entries: list, source: str = "plugins", window: int = 4) -> "PluginChain":
        """Load and check every entry now (raises PluginError before any frame is read)."""
        return cls(load_plugins(entries, source), window)

    def setup(self) -> None:
        for stage in self.stages:
            stage.setup()
            self._started.append(stage)

    def close(self) -> None:
        """Close every plugin that was set up, last first; never raises."""
        while self._started:
            stage = self._started.pop()
            try:
                stage.close()
            except Exception as exc:  # noqa: BLE001 - closing must not hide the run's outcome
                log.warning("plugin %s: close failed: %s", stage.spec.name, error_words(exc))
        self._jobs.clear()

    def interrupt(self, grace_s: float = 3.0) -> None:
        """The run is stopping: from now on no plugin call is waited for past `grace_s`
        (calls still running then count as failed; later ones are skipped). Signal-safe."""
        for stage in self.stages:
            stage.interrupt(grace_s)

    def abandon(self) -> list[FrameBatch]:
        """Take back the batches still in the chain, in order, as they are (after a stop-policy
        failure, so a live output can still write them); the chain is empty afterwards."""
        out = [job.batch for job in self._jobs]
        self._jobs.clear()
        return out

    def __enter__(self) -> "PluginChain":
        self.setup()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def feed(self, batch: FrameBatch) -> list[FrameBatch]:
        """Hand in the next batch; get back the batches every plugin has finished, in order."""
        self._jobs.append(_Job(batch))
        self._advance(block=False)
        out = self._pop_done()
        while len(self._jobs) > self.window:  # finished batches leave the window as they finish
            self._advance(block=True)
            out += self._pop_done()
        return out

    def flush(self) -> list[FrameBatch]:
        """Wait for every batch still in flight (end of stream)."""
        out = []
        while self._jobs:
            self._advance(block=True)
            out += self._pop_done()
        return out

    def process(self, batch: FrameBatch) -> FrameBatch:
        """One batch through every plugin, synchronously (tests, eval, simple embedders)."""
        done = self.feed(batch) + self.flush()
        return done[-1]

    def _pop_done(self) -> list[FrameBatch]:
        out = []
        while self._jobs and self._jobs[0].stage == len(self.stages):
            out.append(self._jobs.popleft().batch)
        return out

    def _advance(self, block: bool) -> None:
        limit = len(self.stages)
        for n, job in enumerate(self._jobs):
            while job.stage < limit:
                stage = self.stages[job.stage]
                if job.ticket is None:
                    job.ticket = stage.submit(self._input(job, stage))
                if not stage.poll(job.ticket, timeout=0.05 if block and n == 0 else 0):
                    break
                self._finish(job, stage)
            limit = job.stage + (job.ticket is not None)

    def _input(self, job: _Job, stage) -> FrameBatch:
        if isinstance(stage, InlineStage) and stage.spec.plugin.annotates and not job.writable:
            # The one copy an annotating chain costs: Ray-delivered frames are read-only.
            job.batch = replace(job.batch, images=job.batch.images.copy())
            job.writable = True
        if isinstance(stage, InlineStage) and not stage.spec.plugin.annotates:
            # A read-only view: a plugin that draws without saying so (annotates) fails, counted and
            # named, instead of changing the encoded frames, and with the identity profile the rainy ones
            view = job.batch.images.view()
            view.flags.writeable = False
            return replace(job.batch, images=view)
        return job.batch

    def _finish(self, job: _Job, stage) -> None:
        spec, ticket, batch = stage.spec, job.ticket, job.batch
        stats = self.stats[spec.name]
        stats.restarts, stats.timeouts = stage.restarts, stage.timeouts
        results, images = ticket.value if ticket.error is None else (None, None)
        error = ticket.error or _contract_problem(results, len(batch))
        if error is not None:
            results, images = [None] * len(batch), None
            self._fail(spec, batch, error)
        elif self._streak[spec.name]:
            log.warning("plugin %s: working again after %d failed batch(es)", spec.name, self._streak[spec.name])
            self._streak[spec.name] = 0
        stats.batches += 1
        stats.frames += len(batch)
        if images is not None:
            batch = replace(batch, images=images)
            job.writable = False
        meta = {**batch.meta, RESULTS_KEY: {**upstream(batch), spec.name: list(results)}}
        job.batch = replace(batch, meta=meta)
        job.stage += 1
        job.ticket = None

    def _fail(self, spec: PluginSpec, batch: FrameBatch, error: BaseException) -> None:
        self.stats[spec.name].errors += 1
        where = f"source {batch.source_id} seq {batch.seq[0]}..{batch.seq[-1]}"
        if spec.on_error == "stop":
            raise PluginError(f"plugin {spec.name} ({spec.module}) failed on {where}: {error!r}") from (
                error if isinstance(error, Exception) else None)
        self._streak[spec.name] += 1
        n, now = self._streak[spec.name], time.monotonic()
        # One line per streak of failures (then one every 10 s), not 25 a second from a stuck plugin.
        level = logging.ERROR if n == 1 or now - self._logged[spec.name] >= 10 else logging.DEBUG
        if level == logging.ERROR:
            self._logged[spec.name] = now
        log.log(level, "plugin %s (%s) failed on %s: %r; skipped for this batch%s", spec.name, spec.module, where,
                error, f" ({n} failed batches in a row)" if n > 1 else "",
                exc_info=error if log.isEnabledFor(logging.DEBUG) else None)


def _contract_problem(results, n: int) -> BaseException | None:
    if not isinstance(results, (list, tuple)):
        return PluginError(f"process() must return a list of {n} entries, got {type(results).__name__}")
    if len(results) != n:
        return PluginError(f"process() returned {len(results)} entries for a batch of {n} frames")
    bad = next((r for r in results if r is not None and not isinstance(r, Result)), None)
    if bad is not None:
        return PluginError(f"process() entries must be Result or None, got {type(bad).__name__}")
    return None
