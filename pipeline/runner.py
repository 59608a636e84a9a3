"""The one frame loop: inputs -> queues -> batcher -> worker pool -> reorder -> consumers -> plugins -> sinks.

A run has one lane per `Input` (a file, a camera, a source handed to the Python API), all
sharing one worker pool. Per lane a reader thread decodes into a small `FrameQueue`, and a
lane thread opens the input, builds its outputs and cuts batches with the `Batcher` (with
the temporal window's halo), one each time the pool has a free slot for it: a batch is
never cut long before the model can take it, so a batch holds what arrived meanwhile and
the delay stays near one queue plus one model run. The main thread (this loop) submits the
batches (those of several lanes waiting together share one model call, up to max_batch
frames of one size, as DeepStream's nvstreammux batches its sources; single-frame networks), reorders each lane's results by its own key and hands them on in order: to the
consumers, through the lane's plugin chain, into its sinks. Decoding and encoding overlap
the model. This is where a batch is cut, so this is where the temporal window and
cross-stream batching live.

Two policies, as roboflow's InferencePipeline serves files and streams with one loop:
- strict (files, the Python API): the queue blocks, so every frame is kept; the first
  error (input, model, plugin with `on_error: stop`, output) ends the run and is raised,
  and the outputs close not ok (a partial file is removed). A progress bar if asked.
- live (cameras): the queue drops the oldest frame, so the delay stays bounded; a camera
  that fails ends its own lane only; a failing output or consumer is logged and the others
  go on; a plugin with `on_error: stop` stops the run cleanly.

Stopping (`stop()`: a signal, `duration_s`, an API caller that closed its iterator): the
readers stop, plugin calls get a few seconds more at most (a hanging plugin cannot hold the
run), the batches already cut are derained, the frames still queued are counted as dropped,
and the outputs are flushed and closed playable. Per lane, frames in = out + dropped, exactly.
"""
from __future__ import annotations

import itertools
import logging
import queue as queue_mod
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from . import trace
from .batching import Batcher
from .colour import matrix_of
from .errors import DerainError, PluginError
from .framequeue import Closed, FrameQueue
from .frames import FrameBatch
from .redact import redact
from .settings import BatchSettings
from .signals import stop_signals
from .sources.files import start_reader
from .stats import LaneStats, Metrics
from .steady import SteadyLane

log = logging.getLogger(__name__)

Consumer = Callable[[FrameBatch], object]
_RUN_IDS = itertools.count()  # batch keys carry their run's id: a reused pool's late results are not this run's
MERGED = "merged"  # the key of one model call that holds several lanes' batches


@dataclass
class Input:
    """One lane of a run: how to open its source, and what its frames go to.

    Attributes:
        name: the input's id in logs, metrics and errors.
        open: given the run's stop event, returns the source (an iterable of Frames with an
            `info`); raises on failure, and gives up early once the event is set.
        outputs: builds the sinks (write(FrameBatch), close(ok)) once the source's info is known.
        uri: where it comes from (shown with any password masked).
        consumers: called with each derained batch of this input, in order, before the plugins.
        plugins: a set-up `plugins.PluginChain` in front of the sinks (the caller closes it).
        frames: how many frames it holds, when known (a file): the progress bar's total.
    """

    name: str
    open: Callable[[threading.Event], object]
    outputs: Callable[[object], Sequence] = lambda info: []
    uri: str = ""
    consumers: Sequence[Consumer] = ()
    plugins: object | None = None
    frames: int | None = None


@dataclass
class _Lane:
    input: Input
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
    plugins_failed: bool = False  # a plugin with on_error: stop failed: later batches skip the chain
    discarded: int = 0  # frames still queued when stopped: stale by then, counted as dropped
    next_key: int = 0
    next_out: int = 0
    steady: SteadyLane | None = None  # the lane's deflicker, on a thread of its own (pipeline.steady)
    inflight: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)


class Runner:
    """Run inputs through a shared pool until they end or `stop()`.

    Args:
        inputs: the lanes.
        pool: a worker pool (pipeline.workers); its `halo` is the temporal window's.
        batching: max_batch, max_wait_ms (the batcher's knobs, per lane), queue_size and
            policy (each lane's reader queue).
        strict: files and the API (see the module's docstring); False for live cameras.
        consumers: called with every derained batch of every lane (preview, progress).
        metrics: where the figures go (the preview server reads it while the run goes on).
        duration_s: stop after this long; 0 runs until stopped or every input ends.
        progress: a progress bar (frames of the first input).
    """

    def __init__(self, inputs: Sequence[Input], pool, batching: BatchSettings, strict: bool = False,
                 consumers: Sequence[Consumer] = (), metrics: Metrics | None = None, duration_s: float = 0.0,
                 progress: bool = False, stop_grace_s: float = 5.0, plugin_grace_s: float = 3.0):
        self.pool, self.strict, self.consumers = pool, strict, list(consumers)
        self.metrics = metrics or Metrics()
        self.duration_s, self.progress = duration_s, progress
        self.stop_grace_s = stop_grace_s
        self.plugin_grace_s = plugin_grace_s  # once stopping, no plugin call is waited for longer
        halo = self._halo = getattr(pool, "halo", (0, 0))
        self._deflicker = getattr(pool, "deflicker", False)
        self.max_batch = batching.max_batch
        self.lanes = [_Lane(inp, i, self.metrics.lane(inp.name, inp.uri),
                            Batcher(batching.max_batch, batching.max_wait_ms, halo),
                            FrameQueue(batching.queue_size, batching.policy)) for i, inp in enumerate(inputs)]
        self._ready: queue_mod.Queue = queue_mod.Queue()
        self._run_id = next(_RUN_IDS)
        self._stop = threading.Event()
        self._failing: dict[tuple[int, str], list] = {}  # live: (lane, output) failing since [when, batches]
        self._over = threading.Event()  # the main loop has ended: lane threads leave whatever they wait for
        self._stop_at: float | None = None

    def stop(self) -> None:
        """Finish cleanly: stop reading, derain what was cut, flush and close the outputs.

        Safe in a signal handler: it only sets flags (the main thread may be waiting on a plugin)."""
        if not self._stop.is_set():
            self._stop_at = time.monotonic()
            self._stop.set()
        for lane in self.lanes:
            if lane.source is not None and hasattr(lane.source, "stop"):
                lane.source.stop()
            if lane.input.plugins is not None and not self.strict:  # strict: the chain may serve more runs
                lane.input.plugins.interrupt(self.plugin_grace_s)

    def install_signals(self) -> None:
        """SIGINT, SIGTERM and SIGHUP (a closed terminal) stop cleanly (call from the main thread)."""
        def stop(sig, _frame) -> None:
            if not self._stop.is_set():  # live runs end this way: say why, once, as a file run does
                log.warning("%s: stopping; the outputs are closed and the figures follow", signal.Signals(sig).name)
            self.stop()

        for sig in (signal.SIGINT, *stop_signals()):
            signal.signal(sig, stop)

    def run(self) -> Metrics:
        """Run until every input ended or the run stopped; returns the figures.

        Strict: raises the first error. Live: raises only when every input failed before any output."""
        start = time.monotonic()
        for lane in self.lanes:
            lane.thread = threading.Thread(target=self._lane_main, args=(lane,), daemon=True,
                                           name=f"lane-{lane.input.name}"[:40])
            lane.thread.start()
        bar = self._bar()
        ok = False
        try:
            while not all(lane.done for lane in self.lanes) or any(lane.inflight for lane in self.lanes) \
                    or self._steadying():
                if self.duration_s and time.monotonic() - start >= self.duration_s:
                    self.stop()
                if self._stop.is_set():
                    self._force_close_stuck()
                if self.strict:
                    self._raise_first_error()
                self._grant_credits()
                self._submit_ready()
                self._collect(self._poll())
                self._emit_steadied()
                self._update_stats(bar)
            if self.strict:
                self._raise_first_error()
            ok = True
        finally:
            self._over.set()
            trace.flush()  # a Ray worker may be killed, not left: its marks are written now
            if not (ok and self.strict):  # a strict run that ended well flushes its plugins unhurried
                self.stop()
            closing: list[BaseException] = []
            for lane in self.lanes:  # every lane is closed, whatever another one's close raised
                if lane.steady is not None:
                    lane.steady.close()
                try:
                    self._close_lane(lane, ok=ok or not self.strict)
                except BaseException as exc:  # noqa: BLE001 - raised below, after the others
                    closing.append(exc)
            if bar is not None:
                bar.close()
            if closing and ok:  # else the run's own error is already on its way up
                raise closing[0]
        failed = [lane for lane in self.lanes if lane.errors]
        if failed and len(failed) == len(self.lanes) and not any(l.stats.frames_out for l in self.lanes):
            if len(self.lanes) == 1:
                raise _redacted(failed[0].errors[0])
            raise DerainError(f"none of the {len(self.lanes)} cameras gave a frame (each one's error is above)")
        return self.metrics

    # --- lane side -----------------------------------------------------------------------------

    def _lane_main(self, lane: _Lane) -> None:
        try:
            lane.source = lane.input.open(self._stop)
            if self._stop.is_set() and hasattr(lane.source, "stop"):
                lane.source.stop()
            lane.stats.connected = True
            lane.sinks = list(lane.input.outputs(lane.source.info))
            if self._over.is_set():  # the run ended (failed) while this input opened: nothing to write
                self._close_sinks(lane, ok=False)
                return
            lane.reader = start_reader(lane.source, lane.queue, lane.errors)
            batches = lane.batcher.batches(lane.queue)
            while True:
                while not lane.credit.wait(0.1):
                    if self._over.is_set():
                        return
                lane.credit.clear()
                if self._stop.is_set():
                    lane.discarded += _discard(lane.queue)
                    break
                batch = next(batches, None)
                if batch is None:
                    break
                sent = threading.Event()
                self._ready.put((lane, batch, sent))
                while not sent.wait(0.1):
                    if self._over.is_set():
                        return
        except BaseException as exc:  # noqa: BLE001 - one input's failure ends its lane only
            if lane.source is None and self._stop.is_set():
                log.warning("camera %s: stopped while connecting (%s)", lane.input.name, redact(exc))
            else:
                lane.errors.append(exc)
        finally:
            lane.queue.close()
            if lane.errors:
                lane.stats.error = redact(lane.errors[0])
                if not self.strict and len(self.lanes) > 1:  # one camera's error ends the run, said there
                    log.error("camera %s: %s", lane.input.name, lane.stats.error)
            lane.done = True

    # --- main side -----------------------------------------------------------------------------

    def _raise_first_error(self) -> None:
        for lane in self.lanes:
            if lane.errors:
                raise lane.errors[0]

    def _grant_credits(self) -> None:
        if self.pool.capacity() - self._ready.qsize() > 0:
            for lane in self.lanes:
                if not lane.done:
                    lane.credit.set()

    def _submit_ready(self) -> None:
        """Submit the batches lanes have cut, while the pool has room. With room and none cut yet,
        wait a moment for one (woken the instant a lane puts it), so a batch never waits on a poll."""
        busy = self.pool.inflight or self._steadying()  # a result may come back soon
        wait = (0.005 if busy else 0.02) if self.pool.capacity() > 0 else None
        while self.pool.capacity() > 0:
            try:
                ready = [self._ready.get(timeout=wait) if wait else self._ready.get_nowait()]
            except queue_mod.Empty:
                return
            wait = None
            ready += self._mergeable(ready[0][1], _matrix(ready[0][0]))
            keys = []
            for lane, batch, _ in ready:
                trace.mark("submitted", _name(lane), batch.seq)
                keys.append((self._run_id, lane.index, lane.next_key))
                lane.next_key += 1
                lane.inflight[keys[-1]] = batch
            matrix = _matrix(ready[0][0])
            if len(ready) == 1:
                self.pool.submit(keys[0], *ready[0][1].model_input(), matrix=matrix)
            else:  # one model call for several lanes' batches (as DeepStream's nvstreammux)
                images = np.concatenate([batch.images for _, batch, _ in ready])
                self.pool.submit((self._run_id, MERGED, tuple(keys), tuple(len(b) for _, b, _ in ready)), images,
                                 matrix=matrix)
            for _, _, sent in ready:
                sent.set()

    def _mergeable(self, first: FrameBatch, matrix: str) -> list:
        """Other lanes' batches waiting now that can share `first`'s model call: single-frame
        networks only (no context frames), the same frame size and layout (and colour matrix),
        max_batch frames in all."""
        if first.before is not None or first.after is not None or self._halo != (0, 0):
            return []
        taken, room, skipped = [], self.max_batch - len(first), []
        while room > 0:
            try:
                item = self._ready.get_nowait()
            except queue_mod.Empty:
                break
            batch = item[1]
            if batch.images.shape[1:] == first.images.shape[1:] and len(batch) <= room and _matrix(item[0]) == matrix:
                taken.append(item)
                room -= len(batch)
            else:
                skipped.append(item)
        for item in skipped:  # back in the queue for the next call (a lane has one batch waiting at most)
            self._ready.put(item)
        return taken

    def _poll(self) -> list:
        """Results that are back. A full pool takes nothing new until one is: wait for it (few
        wake-ups, so the model keeps the cores); else only take what is there."""
        if not self.pool.inflight:
            return []
        if self.pool.capacity() > 0:
            return self.pool.poll(0)
        # full: wait for a result, briefly where a lane is steadying batches (they are taken back here)
        return self.pool.poll(0.005 if self._steadying() else 0.5)

    def _collect(self, results) -> None:
        for key, frames, intensity in self._split(results):
            if not (isinstance(key, tuple) and key[0] == self._run_id):
                continue  # an earlier run's batch, left in a reused pool when that run failed
            lane = self.lanes[key[1]]
            batch = lane.inflight.pop(key)
            trace.mark("derained", _name(lane), batch.seq)
            lane.results[key[2]] = batch.derained(frames, intensity)
            while lane.next_out in lane.results:
                self._hand_on(lane, lane.results.pop(lane.next_out))
                lane.next_out += 1

    def _hand_on(self, lane: _Lane, batch: FrameBatch) -> None:
        """A lane's next batch, in order: to its deflicker (this is the only place that sees a
        lane's frames in order, one batch after another), else on to its outputs."""
        if not self._deflicker:
            self._emit(lane, batch)
            return
        if lane.steady is None:
            lane.steady = SteadyLane(lane.input.name)
        lane.steady.put(batch)

    def _steadying(self) -> bool:
        """Whether a lane has batches with its deflicker, not yet taken back."""
        return any(lane.steady for lane in self.lanes)

    def _emit_steadied(self) -> None:
        """The batches lanes have steadied, in order. A deflicker that fails ends a strict run;
        a camera's batch goes on as it was."""
        for lane in self.lanes:
            if lane.steady is None:
                continue
            for batch, error in lane.steady.ready():
                if error is not None:
                    if self.strict:
                        raise error
                    log.error("camera %s: deflicker failed (%s); frames go on as derained", lane.input.name, error)
                self._emit(lane, batch)

    @staticmethod
    def _split(results):
        """Each merged model call's result back into its lanes' batches."""
        for key, frames, intensity in results:
            if isinstance(key, tuple) and len(key) == 4 and key[1] == MERGED:
                ends = np.cumsum(key[3])[:-1]
                yield from zip(key[2], np.split(frames, ends), np.split(intensity, ends))
            else:
                yield key, frames, intensity

    def _emit(self, lane: _Lane, batch: FrameBatch) -> None:
        for consumer in (*lane.input.consumers, *self.consumers):
            self._guarded(lane, f"consumer {consumer!r}", consumer, batch)
        chain = lane.input.plugins
        if chain is None or lane.plugins_failed:
            self._write(lane, [batch])
        else:
            try:
                self._write(lane, chain.feed(batch))
            except PluginError as exc:
                self._plugins_failed(lane, exc)
        trace.mark("written", _name(lane), batch.seq)
        with self.metrics.lock:
            lane.stats.output(batch.arrival, time.monotonic())

    def _write(self, lane: _Lane, batches: Sequence[FrameBatch]) -> None:
        for batch in batches:
            for sink in lane.sinks:
                if not self._guarded(lane, f"output {_shown(sink)}", sink.write, batch):
                    with self.metrics.lock:
                        lane.stats.output_errors += 1

    def _guarded(self, lane: _Lane, what: str, call: Callable, batch: FrameBatch) -> bool:
        """Strict: an error ends the run. Live: the video goes on, and an output or consumer that
        keeps failing (a restream whose server left) is said once, not at every frame, then once
        more when it works again. Whether the call succeeded."""
        if self.strict:
            call(batch)
            return True
        key = (lane.index, what)
        try:
            call(batch)
        except Exception as exc:  # noqa: BLE001 - a failing output or consumer never stops the others
            failing = self._failing.get(key)
            if failing is None:
                self._failing[key] = [time.monotonic(), 1]
                if isinstance(exc, DerainError):  # its own words name the output and the cause
                    log.error("camera %s: %s failed: %s; said again when it works", lane.input.name, what, exc)
                else:
                    log.exception("camera %s: %s failed; said again when it works", lane.input.name, what)
            else:
                failing[1] += 1
            return False
        if (failing := self._failing.pop(key, None)) is not None:
            log.warning("camera %s: %s works again, after %d failed batches over %.0f s", lane.input.name, what,
                        failing[1], time.monotonic() - failing[0])
        return True

    def _plugins_failed(self, lane: _Lane, exc: PluginError) -> None:
        """A plugin with `on_error: stop` failed: the batches still in the chain, and any after,
        are written without plugins (the outputs hold every frame counted out); the run stops."""
        lane.plugins_failed = True
        lane.stats.plugin_errors = _plugin_errors(lane.input.plugins)
        if self.strict:
            raise exc
        log.error("camera %s: %s; stopping", lane.input.name, exc)
        lane.errors.append(exc)
        lane.stats.error = lane.stats.error or redact(exc)
        self._write(lane, lane.input.plugins.abandon())
        self.stop()

    def _update_stats(self, bar=None) -> None:
        with self.metrics.lock:
            for lane in self.lanes:
                s, src = lane.stats, lane.source
                s.frames_in, s.queue_depth = lane.queue.put_count, len(lane.queue)
                s.dropped = lane.queue.dropped + lane.discarded
                s.reconnects = getattr(src, "reconnects", 0)
                s.stalls = getattr(src, "stalls", 0)
                s.connected = bool(src is not None and not lane.done and getattr(src, "connected", True))
                s.plugin_errors = _plugin_errors(lane.input.plugins)
            self.metrics.workers_alive = getattr(self.pool, "size", 1)
            self.metrics.worker_restarts = getattr(self.pool, "restarts", 0)
        if bar is not None and bar.n != self.lanes[0].stats.frames_out:
            bar.n = self.lanes[0].stats.frames_out
            bar.refresh()

    def _force_close_stuck(self) -> None:
        """A reader blocked on a dead network read: close its queue after the grace time."""
        if self._stop_at is not None and time.monotonic() - self._stop_at > self.stop_grace_s:
            for lane in self.lanes:
                lane.queue.close()
                lane.credit.set()

    def _close_lane(self, lane: _Lane, ok: bool) -> None:
        """Flush the lane's plugins into its outputs and close them (`ok`: keep what they wrote)."""
        try:
            chain = lane.input.plugins
            if chain is not None and ok and not lane.plugins_failed:
                try:
                    self._write(lane, chain.flush())
                except PluginError as exc:
                    ok = not self.strict
                    self._plugins_failed(lane, exc)
        except BaseException:
            ok = ok and not self.strict  # strict: an output missing the batches still in the chain is no output
            raise
        finally:
            self._close_sinks(lane, ok)

    def _close_sinks(self, lane: _Lane, ok: bool) -> None:
        errors = []
        for sink in lane.sinks:
            try:
                sink.close(ok=ok)
            except Exception as exc:  # noqa: BLE001 - every output gets closed
                errors.append(exc)
                log.log(logging.DEBUG if self.strict else logging.ERROR, "%s: closing %r failed: %s",
                        lane.input.name, sink, exc)
        lane.sinks = []
        if lane.reader is not None:
            lane.reader.join(timeout=1)
        with self.metrics.lock:
            s = lane.stats
            # Frames a stuck reader put after the queue closed were never derained: dropped.
            s.frames_in = lane.queue.put_count
            s.dropped = lane.queue.dropped + lane.discarded + len(lane.queue) + lane.batcher.held
            s.queue_depth, s.connected = 0, False
            s.reconnects = getattr(lane.source, "reconnects", 0)
            s.stalls = getattr(lane.source, "stalls", 0)
            s.truncated = bool(getattr(lane.source, "truncated", False))
            s.plugin_errors = _plugin_errors(lane.input.plugins)
            s.worker_restarts = getattr(self.pool, "restarts", 0)
            s.ended = s.ended or time.monotonic()
        if errors and self.strict and ok:
            raise errors[0]

    def _bar(self):
        if not self.progress or not self.lanes:
            return None
        from tqdm import tqdm

        return tqdm(total=self.lanes[0].input.frames, unit="frame", desc="derain", dynamic_ncols=True)


def _name(lane: _Lane) -> str:
    """The lane's input as traces name it (its path or URL, as the codec processes know it)."""
    return getattr(getattr(lane.source, "info", None), "uri", None) or lane.input.name


def _matrix(lane: _Lane) -> str:
    """The colour matrix of a lane's input: how the model reads its frames where they come as
    yuv420p planes (pipeline.colour)."""
    return matrix_of(getattr(getattr(lane.source, "info", None), "colour", (2,))[0])


def _plugin_errors(chain) -> int:
    return 0 if chain is None else sum(s.errors for s in chain.stats.values())


def _redacted(exc: BaseException) -> BaseException:
    """`exc` with any URL password in its message masked (it is printed as the run's error)."""
    if str(exc) != redact(exc):
        try:
            exc.args = tuple(redact(a) if isinstance(a, str) else a for a in exc.args)
        except (AttributeError, TypeError):
            pass
    return exc


def _discard(queue: FrameQueue) -> int:
    """Empty a queue until it closes (its reader has stopped); returns how many frames it held."""
    n = 0
    while True:
        try:
            if queue.get(0.2) is not None:
                n += 1
        except Closed:
            return n


def _shown(sink) -> str:
    """How a line names an output: its path or URL (masked), not an object's repr."""
    return str(getattr(sink, "path", None) or getattr(sink, "folder", None) or type(sink).__name__)
