"""Many live cameras through one worker pool, each with its own order, counters and outputs.

Per camera (a `Lane`): a reader thread fills a small drop-oldest `FrameQueue`, and a
lane thread opens the camera, builds its outputs and cuts batches with the `Batcher`.
A lane cuts its next batch only when the pool has a free slot for it, so a batch is
never cut long before the model can take it: the delay stays near one queue plus one
model run. The main thread submits ready batches, reorders each camera's results by its
own key and hands them to the consumers and outputs. A camera that fails ends its own
lane only; the others go on.

Stopping (SIGINT/SIGTERM or `duration_s`): the readers stop, plugin calls get a few seconds
more at most (a hanging plugin cannot hold the run), the batches already cut are derained,
the frames still queued (stale by then: deraining them one by one behind a slow model would
only add seconds of tail) are counted as dropped, the encoders are flushed and the files
closed playable. A source that ends by itself (a --realtime file) is derained to
its last frame. Either way, per camera, frames in = frames out + frames dropped, exactly.
"""
from __future__ import annotations

import logging
import queue as queue_mod
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .batching import Batcher
from .errors import PluginError
from .framequeue import Closed, FrameQueue
from .frames import FrameBatch
from .live_metrics import LaneStats, Metrics
from .live_redact import redact
from .sources import start_reader
from .workers import drain

log = logging.getLogger(__name__)

Consumer = Callable[[FrameBatch], object]
SinkFactory = Callable[[object], Sequence]  # SourceInfo -> sinks (built once the camera answers)


@dataclass
class Camera:
    """What one lane needs: how to open the source and build its outputs.

    Attributes:
        name: the camera's id in logs, metrics and outputs.
        open: given the runner's stop event, returns the source (a LiveSource or
            RealtimeFileSource); raises on failure, and gives up early once the event is set.
        sinks: builds the outputs from the opened source's info.
        consumers: called with each derained batch of this camera, in order.
    """

    name: str
    uri: str
    open: Callable[[threading.Event], object]
    sinks: SinkFactory = lambda info: []
    consumers: Sequence[Consumer] = ()


@dataclass
class Lane:
    camera: Camera
    index: int
    stats: LaneStats
    batcher: Batcher
    queue: FrameQueue
    source: object = None
    sinks: list = field(default_factory=list)
    reader: threading.Thread | None = None
    thread: threading.Thread | None = None
    credit: threading.Event = field(default_factory=threading.Event)
    errors: list = field(default_factory=list)
    done: bool = False
    discarded: int = 0  # frames still queued when stopped: stale by then, counted as dropped
    next_key: int = 0
    next_out: int = 0
    inflight: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)


class LiveRunner:
    """Run cameras through a shared pool until stopped.

    Args:
        cameras: the sources and their outputs.
        pool: a worker pool (pipeline.workers), shared by every camera.
        max_batch, max_wait_ms: the batcher's knobs, per camera.
        queue_size, policy: each camera's reader queue (drop-oldest keeps the delay bounded).
        consumers: called with every derained batch of every camera (plugins, preview).
        metrics: where the figures go (the preview server reads it).
        duration_s: stop after this long; 0 runs until stopped or every source ends.
    """

    def __init__(self, cameras: Sequence[Camera], pool, max_batch: int = 1, max_wait_ms: float = 20.0,
                 queue_size: int = 4, policy: str = "drop-oldest", consumers: Sequence[Consumer] = (),
                 metrics: Metrics | None = None, duration_s: float = 0.0, stop_grace_s: float = 5.0,
                 plugin_grace_s: float = 3.0):
        self.pool, self.consumers, self.duration_s = pool, list(consumers), duration_s
        self.metrics = metrics or Metrics()
        self.stop_grace_s = stop_grace_s
        self.plugin_grace_s = plugin_grace_s  # once stopping, no plugin call is waited for longer
        self.lanes = [Lane(c, i, self.metrics.lane(c.name, c.uri), Batcher(max_batch, max_wait_ms, getattr(pool, "halo", (0, 0))),
                           FrameQueue(queue_size, policy)) for i, c in enumerate(cameras)]
        self._ready: queue_mod.Queue = queue_mod.Queue()
        self._stop = threading.Event()
        self._stop_at: float | None = None

    def stop(self) -> None:
        """Finish cleanly: stop reading, derain what was read, flush and close the outputs.

        Safe in a signal handler: it only sets flags (the main thread may be waiting on a plugin)."""
        if not self._stop.is_set():
            self._stop_at = time.monotonic()
            self._stop.set()
        for lane in self.lanes:
            if lane.source is not None and hasattr(lane.source, "stop"):
                lane.source.stop()
            _interrupt(lane.sinks, self.plugin_grace_s)

    def install_signals(self) -> None:
        """SIGINT and SIGTERM stop cleanly (call from the main thread)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop())

    def run(self) -> dict:
        """Run until stopped; returns the figures. Raises the error if every camera failed."""
        start = time.monotonic()
        for lane in self.lanes:
            lane.thread = threading.Thread(target=self._lane_main, args=(lane,), name=f"lane-{lane.camera.name}",
                                           daemon=True)
            lane.thread.start()
        try:
            while not all(lane.done for lane in self.lanes) or any(lane.inflight for lane in self.lanes):
                if self.duration_s and time.monotonic() - start >= self.duration_s:
                    self.stop()
                if self._stop.is_set():
                    self._force_close_stuck()
                self._grant_credits()
                self._submit_ready()
                self._collect(self.pool.poll(0.02) if self.pool.inflight else self._idle())
                self._update_stats()
            self._collect(drain(self.pool))
        finally:
            self.stop()
            for lane in self.lanes:
                self._close_lane(lane)
        failed = [lane for lane in self.lanes if lane.errors]
        if failed and len(failed) == len(self.lanes) and not any(l.stats.frames_out for l in self.lanes):
            raise _redacted(failed[0].errors[0])
        return self.metrics.snapshot()

    # --- lane side -----------------------------------------------------------------------------

    def _lane_main(self, lane: Lane) -> None:
        try:
            lane.source = lane.camera.open(self._stop)
            if self._stop.is_set() and hasattr(lane.source, "stop"):
                lane.source.stop()
            lane.stats.connected = True
            lane.sinks = list(lane.camera.sinks(lane.source.info))
            lane.reader = start_reader(lane.source, lane.queue, lane.errors)
            batches = lane.batcher.batches(lane.queue)
            while True:
                while not lane.credit.wait(0.1):
                    pass
                lane.credit.clear()
                if self._stop.is_set():
                    lane.discarded += _discard(lane.queue)
                    break
                batch = next(batches, None)
                if batch is None:
                    break
                sent = threading.Event()
                self._ready.put((lane, batch, sent))
                sent.wait()
        except BaseException as exc:  # noqa: BLE001 - one camera's failure ends its lane only
            if lane.source is None and self._stop.is_set():
                log.warning("camera %s: stopped while connecting (%s)", lane.camera.name, redact(exc))
            else:
                lane.errors.append(exc)
        finally:
            lane.queue.close()
            if lane.errors:
                lane.stats.error = redact(lane.errors[0])
                log.error("camera %s: %s", lane.camera.name, lane.stats.error)
            lane.done = True

    # --- main side -----------------------------------------------------------------------------

    def _grant_credits(self) -> None:
        if self.pool.capacity() - self._ready.qsize() > 0:
            for lane in self.lanes:
                if not lane.done:
                    lane.credit.set()

    def _submit_ready(self) -> None:
        while self.pool.capacity() > 0:
            try:
                lane, batch, sent = self._ready.get_nowait()
            except queue_mod.Empty:
                return
            key = (lane.index, lane.next_key)
            lane.next_key += 1
            lane.inflight[key] = batch
            self.pool.submit(key, *batch.model_input())
            sent.set()

    def _idle(self) -> list:
        time.sleep(0.005)
        return []

    def _collect(self, results) -> None:
        for key, frames, intensity in results:
            lane = self.lanes[key[0]]
            lane.results[key[1]] = lane.inflight.pop(key).derained(frames, intensity)
            while lane.next_out in lane.results:
                self._emit(lane, lane.results.pop(lane.next_out))
                lane.next_out += 1

    def _emit(self, lane: Lane, batch: FrameBatch) -> None:
        for consumer in (*lane.camera.consumers, *self.consumers):
            try:
                consumer(batch)
            except Exception:  # noqa: BLE001 - a failing consumer never stops the video
                log.exception("camera %s: consumer %r failed", lane.camera.name, consumer)
        for sink in lane.sinks:
            try:
                sink.write(batch)
            except PluginError as exc:  # a plugin with `on_error: stop` failed: the run stops cleanly
                log.error("camera %s: %s; stopping", lane.camera.name, exc)
                lane.errors.append(exc)
                lane.stats.error = lane.stats.error or redact(exc)
                self.stop()
            except Exception:  # noqa: BLE001 - a broken output never stops the others
                log.exception("camera %s: output %r failed", lane.camera.name, sink)
        with self.metrics.lock:
            lane.stats.output(batch.arrival, time.monotonic())

    def _update_stats(self) -> None:
        with self.metrics.lock:
            for lane in self.lanes:
                s, src = lane.stats, lane.source
                s.frames_in, s.queue_depth = lane.queue.put_count, len(lane.queue)
                s.dropped = lane.queue.dropped + lane.discarded
                s.reconnects = getattr(src, "reconnects", 0)
                s.stalls = getattr(src, "stalls", 0)
                s.connected = bool(src is not None and not lane.done and getattr(src, "connected", True))
            self.metrics.workers_alive = getattr(self.pool, "size", 1)
            self.metrics.worker_restarts = getattr(self.pool, "restarts", 0)

    def _force_close_stuck(self) -> None:
        """A reader blocked on a dead network read: close its queue after the grace time."""
        if self._stop_at is not None and time.monotonic() - self._stop_at > self.stop_grace_s:
            for lane in self.lanes:
                lane.queue.close()
                lane.credit.set()

    def _close_lane(self, lane: Lane) -> None:
        ok = True
        if self._stop.is_set():
            _interrupt(lane.sinks, self.plugin_grace_s)
        for sink in lane.sinks:
            try:
                sink.close(ok=ok)
            except Exception:  # noqa: BLE001
                log.exception("camera %s: closing %r failed", lane.camera.name, sink)
        lane.sinks = []
        if lane.reader is not None:
            lane.reader.join(timeout=1)
        with self.metrics.lock:
            s = lane.stats
            # Frames a stuck reader put after the queue closed were never derained: dropped.
            s.frames_in = lane.queue.put_count
            s.dropped = lane.queue.dropped + lane.discarded + len(lane.queue)
            s.queue_depth, s.connected = 0, False
            s.reconnects = getattr(lane.source, "reconnects", 0)
            s.stalls = getattr(lane.source, "stalls", 0)
            s.ended = s.ended or time.monotonic()


def _redacted(exc: BaseException) -> BaseException:
    """`exc` with any URL password in its message masked (it is printed as the run's error)."""
    if str(exc) != redact(exc):
        try:
            exc.args = tuple(redact(a) if isinstance(a, str) else a for a in exc.args)
        except (AttributeError, TypeError):
            pass
    return exc


def _interrupt(sinks, grace_s: float) -> None:
    """Tell outputs with plugins that the run is stopping (their calls get `grace_s` more at most)."""
    for sink in list(sinks):
        if hasattr(sink, "interrupt"):
            sink.interrupt(grace_s)


def _discard(queue: FrameQueue) -> int:
    """Empty a queue until it closes (its reader has stopped); returns how many frames it held."""
    n = 0
    while True:
        try:
            if queue.get(0.2) is not None:
                n += 1
        except Closed:
            return n
