"""The live job behind `derain run URL` and `derain run --config configs/cameras.yaml`.

Wires the parts from settings: one `LiveSource` per camera (pipeline.sources.live), its outputs
(pipeline.sinks.streams), the shared worker pool, the preview server (pipeline.sinks.preview), and
the `Runner` (pipeline.runner, live policy) that drives them until SIGINT/SIGTERM,
`duration_s`, or the sources end.
Camera passwords are masked in everything shown or logged (pipeline.redact).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from .errors import ConfigError
from .sources.live import open_live
from .redact import install_log_redaction
from .runner import Input, Runner
from .settings import CameraSettings, EncodeSettings, LiveSettings, RunSettings
from .stats import Metrics
from .sinks.files import VideoFileSink, check_output_name, claim_file
from .sinks.streams import SegmentRecorder, SnapshotSink, restream_sink
from .workers import make_pool

log = logging.getLogger(__name__)


def cameras_of(inputs: Sequence[str], live: LiveSettings) -> list[CameraSettings]:
    """The cameras to run: the config's `live.cameras`, else one per input. A camera's empty
    record and snapshot folders take `live.*`'s (--record, --snapshot: files are named by camera);
    `live.restream` (--restream) serves one camera only, a URL carrying one stream."""
    if live.cameras and inputs:
        raise ConfigError("give either input URLs or live.cameras in the config, not both")
    if not live.cameras and not inputs:
        raise ConfigError("no input: give a URL, a /dev/video device, a file with --realtime, "
                          "or live.cameras in --config")
    cams = live.cameras or [CameraSettings(url=u) for u in inputs]
    if live.restream and len(cams) > 1:
        raise ConfigError(f"live.restream (--restream): one URL carries one camera, and there are {len(cams)}; "
                          "give each its own in live.cameras[].restream")
    return [dataclasses.replace(c, name=c.name or f"cam{i}", record=c.record or live.record,
                                snapshot=c.snapshot or live.snapshot, restream=c.restream or list(live.restream))
            for i, c in enumerate(cams)]


def live_encode(settings: RunSettings) -> EncodeSettings:
    """The configured codec and quality with the live preset (low delay), one thread, and a
    keyframe every second (a viewer or a cut segment starts within a second)."""
    return dataclasses.replace(settings.encode, preset=settings.live.preset, threads=settings.encode.thread_count() or 1,
                               keyframe_s=settings.encode.keyframe_s or 1.0)


def outputs_factory(cam: CameraSettings, settings: RunSettings, output: str | None = None,
                    overwrite: bool = False):
    """Build a camera's sinks once its size is known."""
    live, enc = settings.live, live_encode(settings)

    def build(info) -> list:
        sinks: list = []
        try:
            if output:
                sinks.append(VideoFileSink(output, info, enc, overwrite=overwrite))
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
        return sinks

    return build


def live_pool(settings: RunSettings, cameras: int = 1):
    """The shared pool, with `live.inflight` batches per worker (1: none waits queued behind another),
    leaving the cores the plugin actors of `cameras` lanes ask (each lane has its own chain)."""
    from plugins.loader import actor_cpus  # here: plugins import the pipeline

    # A temporal model looks at past frames only here: a live camera gets no added delay.
    return make_pool(dataclasses.replace(settings.model, causal=True),
                     dataclasses.replace(settings.workers, inflight=settings.live.inflight),
                     actor_cpus(settings.plugins) * cameras)


def build_runner(inputs: Sequence[str], settings: RunSettings, pool, output: str | None = None,
                 consumers=(), metrics: Metrics | None = None, overwrite: bool = False) -> Runner:
    """One live lane per camera, each with its own plugin chain (set up here: the caller closes
    them, see `close_plugins`) in front of its outputs."""
    live = settings.live
    lanes = []
    try:
        for cam in cameras_of(inputs, live):
            def opener(stop, cam=cam):
                return open_live(cam.url, live, source_id=cam.name, threads=settings.decode.thread_count(), stop=stop)
            lanes.append(Input(cam.name, opener, outputs_factory(cam, settings, output, overwrite), uri=cam.url,
                               plugins=_plugin_chain(settings)))
    except BaseException:
        close_plugins(lanes)
        raise
    batching = settings.batching.for_input(settings.model, live=True)
    return Runner(lanes, pool, batching, strict=False, consumers=consumers, metrics=metrics,
                  duration_s=live.duration_s)


def _plugin_chain(settings: RunSettings):
    if not settings.plugins:
        return None
    from plugins import PluginChain

    chain = PluginChain.from_config(settings.plugins)
    try:
        chain.setup()
    except BaseException:
        chain.close()
        raise
    return chain


def close_plugins(lanes: Sequence[Input]) -> None:
    for lane in lanes:
        if lane.plugins is not None:
            lane.plugins.close()


def run_live(inputs: Sequence[str], settings: RunSettings = RunSettings(), output: str | None = None,
             pool=None, consumers=(), signals: bool = True, on_start=None, overwrite: bool = False) -> dict:
    """Derain live cameras until stopped; returns the figures (`Metrics.snapshot()`).

    Args:
        inputs: URLs/devices (or files with live.realtime); empty to use live.cameras.
        output: one plain video file for a single camera (besides the live outputs); an
            existing one is replaced only with `overwrite` (checked before any camera opens).
        pool: a shared worker pool (made from settings when None, closed at the end).
        signals: SIGINT/SIGTERM stop cleanly (main thread only).
        on_start: called with the runner once it is built (tests, bench).
    """
    if output:
        if len(cameras := cameras_of(inputs, settings.live)) > 1:  # both would write the one file
            raise ConfigError(f"{output}: one file holds one camera, and there are {len(cameras)}; record them "
                              "instead (--record DIR: files named by camera)")
        check_output_name(output)
        claim_file(Path(output), overwrite)
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
        pool = live_pool(settings, len(cameras_of(inputs, settings.live)))
    try:
        consumers = list(consumers)
        if settings.live.preview:
            from .sinks.preview import Preview

            token = settings.live.preview_token or os.environ.get("DERAIN_PREVIEW_TOKEN") or None
            preview = Preview(settings.live.preview, metrics, token=token)
            print(f"preview: {preview.url}  metrics: {preview.url}metrics" + ("  (token required)" if token else ""),
                  file=sys.stderr,  # stdout is --json's
                  flush=True)
            consumers.append(preview)
        runner = build_runner(inputs, settings, pool, output=output, consumers=consumers, metrics=metrics,
                              overwrite=overwrite)
        try:
            if signals:
                runner.install_signals()
            if on_start:
                on_start(runner)
            return runner.run().snapshot()
        finally:
            close_plugins([lane.input for lane in runner.lanes])
    finally:
        if preview is not None:
            preview.close()
        if own_pool:
            pool.close()
