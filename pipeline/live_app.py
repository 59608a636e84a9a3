"""The live job behind `derain run URL` and `derain run --config configs/cameras.yaml`.

Wires the parts from settings: one `LiveSource` per camera (pipeline.live), its outputs
(pipeline.streams), the shared worker pool, the preview server (pipeline.preview), and
the `LiveRunner` that drives them until SIGINT/SIGTERM, `duration_s`, or the sources end.
Camera passwords are masked in everything shown or logged (pipeline.live_redact).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Sequence

from .errors import ConfigError, PluginError
from .live import open_live
from .live_metrics import Metrics
from .live_redact import install_log_redaction
from .live_runner import Camera, LiveRunner
from .settings import CameraSettings, LiveSettings, RunSettings
from .sinks import EncodeSettings, VideoFileSink
from .streams import SegmentRecorder, SnapshotSink, restream_sink
from .workers import make_pool

log = logging.getLogger(__name__)


def cameras_of(inputs: Sequence[str], live: LiveSettings) -> list[CameraSettings]:
    """The cameras to run: the config's `live.cameras`, else one per input with the global outputs."""
    if live.cameras and inputs:
        raise ConfigError("give either input URLs or live.cameras in the config, not both")
    if live.cameras:
        return [c if c.name else dataclasses.replace(c, name=f"cam{i}") for i, c in enumerate(live.cameras)]
    if not inputs:
        raise ConfigError("no input: give a URL, a /dev/video device, a file with --realtime, "
                          "or live.cameras in --config")
    solo = len(inputs) == 1
    return [CameraSettings(url=u, name=f"cam{i}", record=live.record, snapshot=live.snapshot,
                           restream=list(live.restream) if solo else []) for i, u in enumerate(inputs)]


def live_encode(settings: RunSettings) -> EncodeSettings:
    """The configured codec and quality with the live preset (low delay) and one thread."""
    return dataclasses.replace(settings.encode, preset=settings.live.preset, threads=settings.encode.threads or 1)


def outputs_factory(cam: CameraSettings, settings: RunSettings, output: str | None = None):
    """Build a camera's sinks once its size is known."""
    live, enc = settings.live, live_encode(settings)

    def build(info) -> list:
        sinks: list = []
        try:
            if output:
                sink = VideoFileSink(output, info, enc, overwrite=True)
                sink.video.codec_context.gop_size = max(1, round(float(info.rate or 25)))
                sinks.append(sink)
            if cam.record:
                sinks.append(SegmentRecorder(cam.record, info, name=cam.name, segment_s=live.segment_s,
                                             fmt=live.segment_format, keep=live.keep_segments, encode=enc))
            for url in cam.restream:
                sinks.append(restream_sink(url, info, enc))
            if cam.snapshot:
                sinks.append(SnapshotSink(cam.snapshot, name=cam.name, every_s=live.snapshot_every_s))
        except BaseException:
            for sink in sinks:
                sink.close(ok=True)
            raise
        return [PluggedOutputs(settings.plugins, sinks, cam.name)] if settings.plugins else sinks

    return build


class PluggedOutputs:
    """A camera's outputs behind its own plugin chain: plugins see every batch once, in order,
    and every output encodes what they drew. A failing output is logged; the others go on.

    When a plugin with `on_error: stop` fails, the PluginError goes up (the runner stops) and
    the batches still in the chain, and any after, are written without plugins, so the
    outputs hold every frame counted out."""

    def __init__(self, plugin_entries: list, sinks: list, camera: str):
        from plugins import PluginChain

        self.chain = PluginChain.from_config(plugin_entries)
        self.sinks, self.camera = sinks, camera
        self.failed = False
        try:
            self.chain.setup()
        except BaseException:
            self.chain.close()
            raise

    def _write(self, batches) -> None:
        for batch in batches:
            for sink in self.sinks:
                try:
                    sink.write(batch)
                except Exception:  # noqa: BLE001 - a broken output never stops the others
                    log.exception("camera %s: output %r failed", self.camera, sink)

    def write(self, batch) -> None:
        if self.failed:
            return self._write([batch])
        try:
            self._write(self.chain.feed(batch))
        except PluginError:
            self.failed = True
            self._write(self.chain.abandon())
            raise

    def interrupt(self, grace_s: float = 3.0) -> None:
        """The run is stopping: plugin calls get `grace_s` more at most (signal-safe)."""
        self.chain.interrupt(grace_s)

    def close(self, ok: bool = True) -> None:
        try:
            if not self.failed:
                try:
                    self._write(self.chain.flush())
                except PluginError as exc:
                    log.error("camera %s: %s", self.camera, exc)
                    self.failed = True
                    self._write(self.chain.abandon())
        finally:
            for sink in self.sinks:
                sink.close(ok=ok)
            self.chain.close()


def live_pool(settings: RunSettings):
    """The shared pool, with `live.inflight` batches per worker (1: none waits queued behind another)."""
    # A temporal model looks at past frames only here: a live camera gets no added delay.
    return make_pool(dataclasses.replace(settings.model, causal=True),
                     dataclasses.replace(settings.workers, inflight=settings.live.inflight))


def build_runner(inputs: Sequence[str], settings: RunSettings, pool, output: str | None = None,
                 consumers=(), metrics: Metrics | None = None) -> LiveRunner:
    live = settings.live
    cams = []
    for cam in cameras_of(inputs, live):
        def opener(stop, cam=cam):
            return open_live(cam.url, live, source_id=cam.name, threads=settings.decode.threads, stop=stop)
        cams.append(Camera(cam.name, cam.url, opener, outputs_factory(cam, settings, output)))
    return LiveRunner(cams, pool, max_batch=live.max_batch, max_wait_ms=live.max_wait_ms,
                      queue_size=live.queue_size, policy=live.policy, consumers=consumers,
                      metrics=metrics, duration_s=live.duration_s)


def run_live(inputs: Sequence[str], settings: RunSettings = RunSettings(), output: str | None = None,
             pool=None, consumers=(), signals: bool = True, on_start=None) -> dict:
    """Derain live cameras until stopped; returns the figures (see LiveRunner.run).

    Args:
        inputs: URLs/devices (or files with live.realtime); empty to use live.cameras.
        output: one plain video file for a single camera (besides the live outputs).
        pool: a shared worker pool (made from settings when None, closed at the end).
        signals: SIGINT/SIGTERM stop cleanly (main thread only).
        on_start: called with the runner once it is built (tests, bench).
    """
    if settings.plugins:  # a bad plugin name, module or `with:` key fails before any camera opens
        from plugins import PluginChain

        if any(spec.ray for spec in PluginChain.from_config(settings.plugins).specs) and signals:
            from .workers import init_ray

            init_ray()  # here, in the main thread: the signal handlers installed below then stay ours
    install_log_redaction()  # no camera password in any log line, whoever writes it
    metrics = Metrics()
    preview = None
    own_pool = pool is None
    if own_pool:
        pool = live_pool(settings)
    try:
        consumers = list(consumers)
        if settings.live.preview:
            from .preview import Preview

            token = settings.live.preview_token or os.environ.get("DERAIN_PREVIEW_TOKEN") or None
            preview = Preview(settings.live.preview, metrics, token=token)
            print(f"preview: {preview.url}  metrics: {preview.url}metrics" + ("  (token required)" if token else ""),
                  flush=True)
            consumers.append(preview)
        runner = build_runner(inputs, settings, pool, output=output, consumers=consumers, metrics=metrics)
        if signals:
            runner.install_signals()
        if on_start:
            on_start(runner)
        return runner.run()
    finally:
        if preview is not None:
            preview.close()
        if own_pool:
            pool.close()
