"""The Python API for embedders: build a pipeline, then run it into a file or iterate over it.

    from pipeline.api import Pipeline
    pipe = Pipeline.from_config("configs/detect.yaml", profile="fast")
    pipe.run("in.mp4", "out.mp4")                # derain + plugins into a file
    for frame in pipe.frames("in.mp4"):          # or take the frames yourself
        print(frame.seq, frame.seconds, frame.rain_intensity, frame.results)

`frames()` takes a path or any source object the runner takes (an iterable of
`pipeline.frames.Frame` with an `info`), so a live source from `pipeline.sources.live` plugs in
as is, with a camera's batching defaults (drop-oldest unless `batching.policy` is set).
"""
from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import DerainError
from .files import derain_file
from .frames import FrameBatch
from .runner import Input, Runner
from .run_config import load_run_settings
from .settings import RunSettings
from .sources.files import open_source
from .stats import LaneStats
from .workers import make_pool

__all__ = ["Pipeline", "DerainedFrame"]


@dataclass(frozen=True)
class DerainedFrame:
    """One output frame with everything known about it.

    Attributes:
        image: (H, W, 3) uint8 RGB as it would be encoded (derained, plugin drawings on).
        rainy: (H, W, 3) uint8 RGB original.
        seq, pts, time_base, source_id: as the source gave them.
        rain_intensity: the model's rain estimate for the frame (mean |R|).
        results: each plugin's Result (or None) for this frame, by plugin name.
    """

    image: np.ndarray
    rainy: np.ndarray | None
    seq: int
    pts: int | None
    time_base: Fraction | None
    source_id: str
    rain_intensity: float | None
    results: dict[str, Any]

    @property
    def seconds(self) -> float | None:
        return None if self.pts is None or self.time_base is None else float(self.pts * self.time_base)


class Pipeline:
    """Derain model + plugins, reusable across inputs.

    Args:
        settings: model, workers, batching, encoding (`RunSettings`).
        plugins: Plugin instances and/or YAML-style entries; None takes `settings.plugins`.
    """

    def __init__(self, settings: RunSettings = RunSettings(), plugins: Sequence | None = None):
        from plugins import Plugin, PluginChain

        self.settings = settings
        if isinstance(plugins, (str, dict, Plugin)):  # one plugin (a str was iterated letter by letter)
            plugins = [plugins]
        entries = [{"use": e} if isinstance(e, str) else e for e in (settings.plugins if plugins is None else plugins)]
        self.chain = PluginChain.from_config(entries) if entries else None  # checked now, before any frame
        self._in_use = threading.Lock()  # the chain serves one run at a time

    @classmethod
    def from_config(cls, config: str | Path | dict | None = None, plugins: Sequence | None = None,
                    **overrides: Any) -> "Pipeline":
        """Build from a YAML file or a dict; `overrides` are dotted keys, e.g. {"model.profile": "fast"}.

        Keyword shortcuts: profile=, weights=, backend= set model.profile, model.weights, workers.backend.
        """
        short = {"profile": "model.profile", "weights": "model.weights", "backend": "workers.backend"}
        flags = {short.get(k, k): v for k, v in overrides.items()}
        return cls(load_run_settings(config, flags), plugins)

    def run(self, src: str | Path, dst: str | Path, overwrite: bool = False, progress: bool = False) -> LaneStats:
        """Derain `src` into `dst` with the plugins; returns the run's statistics."""
        with self._plugins():
            return derain_file(src, dst, self.settings, overwrite=overwrite, progress=progress,
                               plugins=self.chain)

    def frames(self, source: Any, max_buffered: int = 8) -> Iterator[DerainedFrame]:
        """Yield derained frames in order; closing the generator early stops the run cleanly.

        Args:
            source: a file/folder path, or a source object (iterable of Frames, e.g. a live one).
            max_buffered: batches held for a slow consumer before the pipeline waits.
        """
        from .sources.live import LiveSource, RealtimeFileSource

        path = isinstance(source, (str, Path))
        if not path and not hasattr(source, "info"):
            raise TypeError(f"source: a file or folder path, or a source object (pipeline.sources); "
                            f"got {type(source).__name__}")
        if path:
            d = self.settings.decode
            source = open_source(source, threads=d.thread_count(), fps=d.fps, hardware=d.hardware)
        info = getattr(source, "info", None)
        pixels = info.width * info.height if info is not None and getattr(info, "width", None) else None
        batching = self.settings.batching.for_input(self.settings.model,
                                                    isinstance(source, (LiveSource, RealtimeFileSource)), pixels)
        if path:
            batching = replace(batching, policy="block")  # a file never drops a frame
        out: queue.Queue = queue.Queue(max_buffered)
        done = object()
        errors: list[BaseException] = []
        with self._plugins():
            pool = make_pool(self.settings.model, self.settings.workers)
            try:
                sink = _QueueSink(out, done)
                lane = Input(str(getattr(source, "source_id", "api")), open=lambda stop: source,
                             outputs=lambda info: [sink], plugins=self.chain)
                runner = Runner([lane], pool, batching, strict=True)
                thread = threading.Thread(target=_run, args=(runner, sink, errors), name="derain-api", daemon=True)
                thread.start()
                try:
                    while (batch := out.get()) is not done:
                        yield from _split(batch)
                finally:
                    runner.stop()
                    sink.closed = True
                    while thread.is_alive():  # unblock a runner waiting on a full queue
                        try:
                            out.get(timeout=0.1)
                        except queue.Empty:
                            pass
                if errors:
                    raise errors[0]
            finally:
                pool.close()

    @contextlib.contextmanager
    def _plugins(self):
        """The plugins, set up for one run. Two at once (threads, or a frames() generator not yet
        finished) broke each other's runs with internal errors and cut the plugins' files short."""
        if self.chain is None:
            yield
            return
        if not self._in_use.acquire(blocking=False):
            raise DerainError("this Pipeline's plugins serve another run (another thread, or a frames() "
                              "generator not yet finished): give each thread its own Pipeline")
        try:
            with self.chain:
                yield
        finally:
            self._in_use.release()


class _QueueSink:
    """A sink that hands batches to the iterating caller."""

    def __init__(self, out: queue.Queue, done: object):
        self.out, self.done, self.closed = out, done, False
        self._ended = False

    def write(self, batch: FrameBatch) -> None:
        if not self.closed:
            self.out.put(batch)

    def close(self, ok: bool = True) -> None:
        """The end: once, whether the run closed its outputs or failed before it had any."""
        if not self.closed and not self._ended:
            self._ended = True
            self.out.put(self.done)


def _run(runner: Runner, sink: _QueueSink, errors: list) -> None:
    try:
        runner.run()
    except BaseException as exc:  # noqa: BLE001 - re-raised in the iterating thread
        errors.append(exc)
    finally:
        sink.close()  # the iterating thread waits for the end, even of a run that failed to start


def _split(batch: FrameBatch) -> Iterator[DerainedFrame]:
    from plugins.base import upstream

    found = upstream(batch)
    for i in range(len(batch)):
        yield DerainedFrame(
            image=batch.images[i], rainy=None if batch.rainy is None else batch.rainy[i], seq=batch.seq[i],
            pts=batch.pts[i], time_base=batch.time_base[i], source_id=batch.source_id,
            rain_intensity=None if batch.rain_intensity is None else float(batch.rain_intensity[i]),
            results={name: results[i] for name, results in found.items()})
