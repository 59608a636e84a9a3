"""Plugins as their own Ray actor pool, so a heavy detector overlaps deraining.

Each replica holds one set-up copy of the plugin. Actors restart on death
(`max_restarts=-1`, which reruns `setup`); the stage resubmits the lost batch, like the
derain worker pool does, so a dead plugin actor loses no frame.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Any

from pipeline.errors import PluginError
from pipeline.frames import FrameBatch

from .base import Plugin
from .loader import PluginSpec

log = logging.getLogger(__name__)


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


class InlineStage:
    """Runs the plugin in the frame loop itself: no copies, no IPC (right for cheap plugins)."""

    def __init__(self, spec: PluginSpec):
        self.spec, self.restarts = spec, 0

    def setup(self) -> None:
        self.spec.plugin.setup()

    def submit(self, batch: FrameBatch) -> Ticket:
        ticket = Ticket(batch)
        try:
            ticket.value = (self.spec.plugin.process(batch), None)
        except Exception as exc:  # noqa: BLE001 - the chain applies the plugin's error policy
            ticket.error = exc
        return ticket

    def poll(self, ticket: Ticket, timeout: float) -> bool:
        return True

    def close(self) -> None:
        self.spec.plugin.close()


class ActorStage:
    """Runs the plugin in `replicas` Ray actors with their own CPUs/GPUs."""

    def __init__(self, spec: PluginSpec, max_tries: int = 3):
        self.spec, self.max_tries = spec, max_tries
        self.actors: list = []
        self.load: list[int] = []
        self.restarts = 0

    def setup(self) -> None:
        import ray

        from pipeline.workers import init_ray

        init_ray()
        self.ray = ray
        opts = self.spec.ray
        remote = ray.remote(num_cpus=opts.num_cpus, num_gpus=opts.num_gpus, max_restarts=-1,
                            max_task_retries=0)(PluginHost)
        self.actors = [remote.remote(self.spec.plugin) for _ in range(opts.replicas)]
        self.load = [0] * len(self.actors)
        try:  # a setup failure surfaces now, before any frame, naming the plugin
            ray.get([a.pid.remote() for a in self.actors])
        except ray.exceptions.RayError as exc:
            self.close()
            cause = getattr(exc, "cause", None) or exc
            raise PluginError(f"plugin {self.spec.name} ({self.spec.module}): setup failed: {cause!r}") from None

    def submit(self, batch: FrameBatch, tries: int = 0) -> Ticket:
        idx = min(range(len(self.actors)), key=self.load.__getitem__)
        self.load[idx] += 1
        return Ticket(batch, self.actors[idx].process.remote(batch), idx, tries)

    def poll(self, ticket: Ticket, timeout: float) -> bool:
        if ticket.value is not None or ticket.error is not None:
            return True
        ready, _ = self.ray.wait([ticket.ref], timeout=timeout)
        if not ready:
            return False
        self.load[ticket.actor] -= 1
        try:
            ticket.value = self.ray.get(ticket.ref)
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.ActorUnavailableError) as exc:
            self._redo(ticket, exc)
            return ticket.error is not None
        except self.ray.exceptions.RayTaskError as exc:
            ticket.error = exc.cause if isinstance(exc.cause, BaseException) else exc
        return True

    def _redo(self, ticket: Ticket, exc: Exception) -> None:
        self.restarts += 1
        b = ticket.batch
        if ticket.tries + 1 >= self.max_tries:
            ticket.error = PluginError(f"its actor died {ticket.tries + 1} times ({type(exc).__name__})")
            return
        log.warning("plugin %s: actor %d died on source %s seq %d..%d (%s); Ray restarts it, batch redone",
                    self.spec.name, ticket.actor, b.source_id, b.seq[0], b.seq[-1], type(exc).__name__)
        fresh = self.submit(b, ticket.tries + 1)
        ticket.ref, ticket.actor, ticket.tries = fresh.ref, fresh.actor, fresh.tries

    def close(self) -> None:
        if not self.actors:
            return
        try:
            self.ray.get([a.close.remote() for a in self.actors], timeout=30)
        except Exception as exc:  # noqa: BLE001 - closing must not hide the run's outcome
            log.warning("plugin %s: close failed: %r", self.spec.name, exc)
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
