"""Where plugin calls run, each under a time limit: inline (one thread of its own) or a Ray actor pool.

Every call of a plugin gets `timeout_s` (its `PluginSpec`); a call that takes longer counts
as failed under the plugin's `on_error` policy, so a hanging plugin can never freeze the
video. An inline plugin runs in one daemon thread of its own (setup, every process call and
close, in order: thread-bound resources stay valid); an overrunning call is abandoned
there, and the plugin's calls fail at once until it returns (a thread cannot be killed). An
actor plugin's overrunning actor is killed and restarted by Ray (`max_restarts=-1`, which
reruns `setup`), and its calls fail at once for a cool-down that doubles with each
consecutive timeout (so a plugin that always hangs costs the video one stall, not one per
batch). Actors that die on their own are restarted the same way and the lost batch is
resubmitted, like the derain worker pool does, so a dead plugin actor loses no frame.

`interrupt(grace_s)` (the run is stopping) caps every wait at `grace_s` from then on.
"""
from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from pipeline.errors import PluginError, WorkerError
from pipeline.frames import FrameBatch

from .base import Plugin
from .loader import PluginSpec

log = logging.getLogger(__name__)

MAX_COOLDOWN_S = 300.0  # longest pause of a plugin that keeps timing out
SLICE_S = 0.1  # waits are cut in slices, so an interrupt is seen promptly


class PluginTimeout(PluginError):
    """A plugin call ran past its time limit (or was skipped because of one)."""


class PluginHost:
    """The actor body: one plugin, set up where it runs."""

    def __init__(self, plugin: Plugin):
        self.plugin = plugin
        plugin.setup()

    def pid(self) -> int:
        return os.getpid()

    def process(self, batch: FrameBatch):
        if self.plugin.annotates:
            batch = replace(batch, images=batch.images.copy())  # Ray hands over read-only arrays
        results = self.plugin.process(batch)
        return results, (batch.images if self.plugin.annotates else None)

    def close(self) -> None:
        self.plugin.close()


@dataclass
class Ticket:
    """One batch in flight in a stage: done once `value` or `error` is set."""

    batch: FrameBatch
    ref: Any = None
    actor: int = 0
    tries: int = 0
    value: tuple | None = None
    error: BaseException | None = None
    deadline: float = float("inf")  # monotonic time after which the call counts as failed
    call: Any = None  # the inline stage's _Call
    generation: int = 0  # the actor's restarts-by-us count when the call was sent

    @property
    def done(self) -> bool:
        return self.value is not None or self.error is not None


class _Call:
    """One function call made by a `_Thread`."""

    def __init__(self, fn: Callable, args: tuple):
        self.fn, self.args = fn, args
        self.finished = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.started = time.monotonic()

    def run(self) -> None:
        try:
            self.value = self.fn(*self.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who applies the policy
            self.error = exc
        finally:
            self.finished.set()


class _Thread:
    """One daemon thread making one plugin's calls in order. Never joined: an abandoned call
    may run forever, and a daemon thread does not keep the process alive."""

    def __init__(self, name: str):
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._main, name=f"plugin-{name}", daemon=True)
        self.thread.start()

    def call(self, fn: Callable, *args) -> _Call:
        c = _Call(fn, args)
        self._calls.put(c)
        return c

    def stop(self) -> None:
        self._calls.put(None)

    def _main(self) -> None:
        while (c := self._calls.get()) is not None:
            c.run()


class _Limits:
    """The time limits shared by both stages: per call, and the cap of a stopping run."""

    def __init__(self, spec: PluginSpec):
        self.spec = spec
        self.cap = float("inf")  # set by interrupt(): nothing waits past it

    @property
    def timeout_s(self) -> float:
        return self.spec.timeout_s or float("inf")

    def interrupt(self, grace_s: float) -> None:
        self.cap = min(self.cap, time.monotonic() + grace_s)

    def stopping_error(self) -> PluginTimeout | None:
        if time.monotonic() >= self.cap:
            return PluginTimeout("skipped: the run is stopping and the plugin's time is up")
        return None


class InlineStage(_Limits):
    """Runs the plugin in its own thread, waited for at once: no copies, no IPC (right for cheap plugins)."""

    def __init__(self, spec: PluginSpec):
        super().__init__(spec)
        self.restarts = 0
        self.timeouts = 0
        self._thread: _Thread | None = None
        self._stuck: _Call | None = None  # a call that overran and is still running

    def setup(self) -> None:
        self._thread = _Thread(self.spec.name)
        c = self._thread.call(self.spec.plugin.setup)
        while not c.finished.wait(SLICE_S):  # no limit: loading a model may take long
            pass
        if c.error is not None:
            self._thread.stop()
            self._thread = None
            if isinstance(c.error, PluginError):
                raise c.error
            raise PluginError(f"plugin {self.spec.name} ({self.spec.module}): setup failed: {error_words(c.error)}") from None

    def submit(self, batch: FrameBatch) -> Ticket:
        ticket = Ticket(batch)
        busy = self._busy()
        ticket.error = busy or self.stopping_error()
        if ticket.error is None:
            ticket.call = self._thread.call(self.spec.plugin.process, batch)
            ticket.deadline = ticket.call.started + self.timeout_s
        return ticket

    def poll(self, ticket: Ticket, timeout: float) -> bool:
        """Waits for the call itself (as a direct call would), up to its time limit."""
        while not ticket.done:
            c = ticket.call
            if c.finished.is_set():
                if c.error is not None:
                    ticket.error = c.error if isinstance(c.error, Exception) else PluginError(repr(c.error))
                else:
                    ticket.value = (c.value, None)
                break
            now = time.monotonic()
            deadline = min(ticket.deadline, self.cap)
            if now >= deadline:
                self._stuck, self.timeouts = c, self.timeouts + 1
                why = "the run is stopping" if deadline < ticket.deadline else "timeout_s"
                ticket.error = PluginTimeout(f"no answer after {now - c.started:.1f} s ({why}); the call is "
                                             f"abandoned and the plugin skipped until it returns")
                break
            c.finished.wait(min(SLICE_S, deadline - now))
        return True

    def _busy(self) -> PluginTimeout | None:
        if self._stuck is not None and not self._stuck.finished.is_set():
            return PluginTimeout(f"skipped: still running a call that timed out "
                                 f"{time.monotonic() - self._stuck.started:.0f} s ago")
        if self._stuck is not None:
            log.warning("plugin %s: the call that timed out returned after %.1f s; the plugin runs again",
                        self.spec.name, time.monotonic() - self._stuck.started)
            self._stuck = None
        return None

    def close(self) -> None:
        if self._thread is None:
            return
        thread, self._thread = self._thread, None
        if self._busy() is not None:
            log.warning("plugin %s: not closed: a call that timed out is still running", self.spec.name)
            return
        c = thread.call(self.spec.plugin.close)
        thread.stop()
        limit = min(time.monotonic() + self.timeout_s, self.cap)
        while not c.finished.wait(SLICE_S):
            if time.monotonic() >= limit:
                log.warning("plugin %s: close() did not return within its time limit; left behind",
                            self.spec.name)
                return
        if c.error is not None:
            raise c.error


PLACE_S = 60.0  # how long a plugin's actors may wait for a node with the resources they ask


class ActorStage(_Limits):
    """Runs the plugin in `replicas` Ray actors with their own CPUs/GPUs."""

    def __init__(self, spec: PluginSpec, max_tries: int = 3):
        super().__init__(spec)
        self.max_tries = max_tries
        self.actors: list = []
        self.load: list[int] = []
        self.restarts = 0
        self.timeouts = 0
        self._streak = 0  # consecutive timeouts
        self._cool_until = 0.0

    def setup(self) -> None:
        import ray

        from pipeline.workers import Placement, init_ray, start_actors

        init_ray()
        self.ray = ray
        opts = self.spec.ray
        name = f"plugin {self.spec.name} ({self.spec.module})"
        try:
            self.spec.plugin.before_actors()
        except Exception as exc:  # noqa: BLE001 - whatever a plugin raises is one line naming it
            raise PluginError(f"{name}: setup failed: {error_words(exc)}") from None
        remote = ray.remote(max_restarts=-1, max_task_retries=0)(PluginHost)
        plan = [Placement(num_cpus=opts.num_cpus, num_gpus=opts.num_gpus)] * opts.replicas
        try:  # placed as the model workers are (never a silent wait); a setup failure surfaces now
            self.actors = start_actors(ray, remote, plan, lambda _: (self.spec.plugin,), f"{self.spec.name} plugin actors",
                                       PLACE_S, limit="a plugin's placement limit")
        except WorkerError as exc:  # no node has the cores it asks: the model workers took them
            raise PluginError(f"{name}: {exc}; give it ray: {{num_cpus: 0}} to share the cores, or run it in "
                              "the pipeline's process (no ray: key)") from None
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None)
            words = error_words(cause) if isinstance(cause, Exception) else _last_line(exc)
            raise PluginError(f"{name}: setup failed: {words}") from None
        self.load = [0] * len(self.actors)
        self.generation = [0] * len(self.actors)

    def submit(self, batch: FrameBatch, tries: int = 0) -> Ticket:
        now = time.monotonic()
        if now < self._cool_until:
            return Ticket(batch, tries=tries, error=PluginTimeout(
                f"skipped: paused {self._cool_until - now:.0f} s more after {self._streak} timeout(s) in a row"))
        stopping = self.stopping_error()
        if stopping is not None:
            return Ticket(batch, tries=tries, error=stopping)
        idx = min(range(len(self.actors)), key=self.load.__getitem__)
        self.load[idx] += 1
        # A call queued behind others on its actor gets their time too.
        return Ticket(batch, self.actors[idx].process.remote(batch), idx, tries,
                      deadline=now + self.timeout_s * self.load[idx], generation=self.generation[idx])

    def poll(self, ticket: Ticket, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not ticket.done:
            now = time.monotonic()
            deadline = min(ticket.deadline, self.cap)
            if now >= deadline:
                self._timed_out(ticket, stopping=deadline < ticket.deadline)
                return True
            wait = max(0.0, min(end, deadline) - now)
            ready, _ = self.ray.wait([ticket.ref], timeout=min(wait, SLICE_S))
            if ready:
                self._collect(ticket)  # done, or resubmitted after its actor died
                continue
            if time.monotonic() >= end:
                return False
        return True

    def _collect(self, ticket: Ticket) -> None:
        self.load[ticket.actor] -= 1
        try:
            ticket.value = self.ray.get(ticket.ref)
            self._streak = 0
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.ActorUnavailableError) as exc:
            self._redo(ticket, exc)
        except self.ray.exceptions.RayTaskError as exc:
            ticket.error = exc.cause if isinstance(exc.cause, BaseException) else exc

    def _timed_out(self, ticket: Ticket, stopping: bool) -> None:
        self.load[ticket.actor] -= 1
        self.timeouts += 1
        self._streak += 1
        pause = 0.0 if stopping else min(MAX_COOLDOWN_S, self.timeout_s * 2 ** (self._streak - 1))
        self._cool_until = time.monotonic() + pause
        why = "the run is stopping" if stopping else "timeout_s"
        ticket.error = PluginTimeout(f"no answer from its actor in time ({why}); the actor is restarted"
                                     + (f" and the plugin paused for {pause:.0f} s" if pause else ""))
        try:  # the only way to stop a running call of a synchronous actor; Ray restarts it
            self.ray.kill(self.actors[ticket.actor], no_restart=False)
        except Exception as exc:  # noqa: BLE001
            log.warning("plugin %s: could not restart actor %d: %r", self.spec.name, ticket.actor, exc)
        self.generation[ticket.actor] += 1
        self.restarts += 1

    def _redo(self, ticket: Ticket, exc: Exception) -> None:
        b = ticket.batch
        ours = ticket.generation < self.generation[ticket.actor]  # queued behind a call we timed out
        if not ours:
            self.restarts += 1
            if ticket.tries + 1 >= self.max_tries:
                ticket.error = PluginError(f"its actor died {ticket.tries + 1} times ({type(exc).__name__})")
                return
        log.log(logging.DEBUG if ours else logging.WARNING,
                "plugin %s: actor %d died on source %s seq %d..%d (%s); Ray restarts it, batch redone",
                self.spec.name, ticket.actor, b.source_id, b.seq[0], b.seq[-1], type(exc).__name__)
        fresh = self.submit(b, ticket.tries + (not ours))
        ticket.ref, ticket.actor, ticket.tries = fresh.ref, fresh.actor, fresh.tries
        ticket.deadline, ticket.error, ticket.generation = fresh.deadline, fresh.error, fresh.generation

    def close(self) -> None:
        if not self.actors:
            return
        limit = max(0.5, min(30.0, self.timeout_s, self.cap - time.monotonic()))
        try:
            self.ray.get([a.close.remote() for a in self.actors], timeout=limit)
        except Exception as exc:  # noqa: BLE001 - closing must not hide the run's outcome
            log.warning("plugin %s: close failed: %s", self.spec.name, error_words(exc))
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


def _last_line(exc: BaseException) -> str:
    """What a Ray error's remote traceback ends with ("FileNotFoundError: ... 'model.onnx'"),
    without its colour codes: its message is the whole traceback."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def error_words(exc: BaseException) -> str:
    """An error as a line says it: its type and its own words, which for an OSError include the
    file (repr() gave OSError(30, 'Read-only file system') and no path)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
