"""Derain video files or image folders into outputs: the job behind `derain run`.

`derain_file` is one file (archive workers call it where the file lives, with a pool of their
own); `derain_files` is several at once through one pool, a lane each, so one model worker
(a GPU's) serves them all.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from .errors import OutputError
from .runner import Input, Runner
from .colour import I420, fits_i420
from .settings import RunSettings, codec_processes, on_cuda, usable_cores, with_codec_threads
from .stats import LaneStats
from .sinks.files import VIDEO_SUFFIXES, check_output_name, open_sink
from .sources.files import SourceInfo, open_source
from .workers import make_pool

log = logging.getLogger(__name__)


def derain_file(src: str | Path, dst: str | Path, settings: RunSettings = RunSettings(), pool=None,
                overwrite: bool = False, progress: bool = False, consumers=(), plugins=None,
                token: str | None = None) -> LaneStats:
    """Derain `src` (video file or image folder) into `dst` (video file or image folder).

    Every frame is kept (policy `block`), in order, with its timestamps; audio is copied (or
    re-encoded where the output's container cannot hold it, said in the warnings).
    Plugins (`settings.plugins`, or a ready `plugins.PluginChain` that the caller sets up
    and closes) see every derained batch in order before the sink encodes it, so what
    they draw is encoded. Raises InputError / OutputError naming the path, PluginError
    naming the plugin before any frame is read; a partial output is removed. `token` names
    the temporary output (default: this process's pid and a random part). The returned
    stats carry `warnings`: what the output could not keep (bit depth, streams, size).
    """
    own_chain = plugins is None
    chain = _plugin_chain(settings) if own_chain else plugins
    try:
        (stats,) = _derain([(src, dst)], settings, pool, overwrite, token=token, chain=chain,
                           setup_chain=own_chain, consumers=consumers, progress=progress)
        return stats
    finally:
        if own_chain and chain is not None:
            chain.close()


def derain_files(pairs: Sequence[tuple[str | Path, str | Path]], settings: RunSettings = RunSettings(),
                 pool=None, overwrite: bool = False) -> list[LaneStats]:
    """Derain each (src, dst) pair, all at once through one pool; returns each lane's stats.

    As `derain_file` for each (every frame, in order, timestamps and audio kept), without
    plugins. Strict: an error in any input ends them all, and no partial output is left."""
    return _derain(pairs, settings, pool, overwrite)


def _derain(pairs: Sequence[tuple[str | Path, str | Path]], settings: RunSettings, pool, overwrite: bool,
            token: str | None = None, chain=None, setup_chain: bool = False, consumers=(),
            progress: bool = False) -> list[LaneStats]:
    """Open every input and output first (a bad path fails before any work, naming it), then
    run them as strict lanes of one Runner: the queue blocks (every frame kept) and the first
    error ends the run. A chain sits in front of the sinks (they encode what plugins drew)."""
    for src, dst in pairs:
        check_output_name(str(dst))
        _check_paths(Path(src), Path(dst))
    sources, sinks = [], []
    own_pool = pool is None
    # each input's name in frames (source_id: plugins' lines say which file), logs and figures
    names = [f"{src}#{i}" if [str(p[0]) for p in pairs].count(str(src)) > 1 else str(src)
             for i, (src, _) in enumerate(pairs)]
    try:
        _open(pairs, names, settings, overwrite, token, sources, sinks,
              rgb_needed=chain is not None or bool(consumers))
        pixels = max(s.info.width * s.info.height for s in sources)
        batching = replace(settings.batching.for_input(settings.model, live=False, pixels=pixels), policy="block")
        if own_pool:
            pool = make_pool(settings.model, settings.workers, _plugin_cpus(settings) if chain is not None else 0.0)
        if setup_chain and chain is not None:
            chain.setup()  # detectors load (in their actors) before the first frame
        lanes = [Input(name, open=lambda stop, s=source: s, outputs=lambda info, k=sink: [k], uri=str(src),
                       consumers=consumers, plugins=chain, frames=source.info.frames)
                 for name, source, sink, (src, _) in zip(names, sources, sinks, pairs)]
        metrics = Runner(lanes, pool, batching, strict=True, progress=progress).run()
        stats = [metrics.lanes[name] for name in names]
        for s, source, sink in zip(stats, sources, sinks):
            s.warnings = [*getattr(source, "warnings", ()), *getattr(sink, "warnings", ())]
        return stats
    finally:
        interrupted = None
        for sink in sinks:  # each one, whatever another raised (a second Ctrl-C included)
            try:
                sink.close(ok=False)  # a no-op once the run closed it; removes a partial file if it did not
            except Exception:  # noqa: BLE001 - the run's own error (or result) is what is said
                pass
            except BaseException as exc:  # noqa: BLE001 - raised once every output is closed
                interrupted = interrupted or exc
        if interrupted is not None:
            raise interrupted
        if own_pool and pool is not None:
            pool.close()


def _open(pairs, names: list[str], settings: RunSettings, overwrite: bool, token: str | None, sources: list,
          sinks: list, rgb_needed: bool = False) -> None:
    """Each pair's source and sink, in this process or (`workers.codec_processes`) in a codec
    process of its own; appended as they open, so the caller closes what did. `rgb_needed`:
    plugins or consumers read the frames (else they may stay yuv420p, `frame_layout`)."""
    d = settings.decode
    if not codec_processes(settings.model, settings.workers):
        for (src, dst), name in zip(pairs, names):
            source = open_source(src, threads=d.thread_count(), fps=d.fps, hardware=d.hardware, source_id=name)
            sources.append(source)
            if frame_layout(settings, source.info, dst, rgb_needed) == I420:  # a video file's frames
                source.layout = I420
            sinks.append(open_sink(dst, source.info, settings.encode, overwrite=overwrite, token=token))
        return
    from .codec_process import CodecProcess

    cores, auto = usable_cores(), "auto" in (d.threads, settings.encode.threads)
    settings = stream_settings(settings, len(pairs), cores)  # an archive's worker did already
    d, e = settings.decode, settings.encode
    if auto:
        log.info("codec processes: %d file%s on %d cores, each decoded with %s and encoded with %s", len(pairs),
                 "s" if len(pairs) > 1 else "", cores, _threads(d.thread_count()), _threads(e.thread_count()))
    codecs = []
    for (src, dst), name in zip(pairs, names):
        probe = open_source(src, threads=1, fps=d.fps, source_id=name, hardware="off")
        pixels = probe.info.width * probe.info.height
        max_batch = settings.batching.for_input(settings.model, live=False, pixels=pixels).max_batch
        codecs.append(CodecProcess(src, dst, d, e, overwrite, token, max_batch, name, probe=probe,
                                   layout=frame_layout(settings, probe.info, dst, rgb_needed)))
        sources.append(codecs[-1].source)
        sinks.append(codecs[-1].sink)
    for codec in codecs:  # they open side by side; the first that cannot is raised
        codec.ready()


def codec_share(files: int, cores: int | None = None) -> int:
    """The cores each of `files` codec processes may use (`threads: auto`): a share of `cores`,
    this machine's by default."""
    return max(1, (usable_cores() if cores is None else cores) // files)


def stream_settings(settings: RunSettings, files: int, cores: int | None = None) -> RunSettings:
    """`settings` for each of `files` streams run side by side here: `threads: auto` sized to a share."""
    return with_codec_threads(settings, codec_share(files, cores))


def _threads(n: int) -> str:
    return "FFmpeg's own count of threads" if n == 0 else f"{n} thread{'s' if n > 1 else ''}"


def frame_layout(settings: RunSettings, info: SourceInfo, dst: str | Path, rgb_needed: bool = False) -> str:
    """How a file's frames travel (`decode.yuv`): as yuv420p planes, converted on the model's
    device (pipeline.colour), where only the model and a video encoder see them (no plugins,
    consumers or deflicker), the input and the output are 8-bit 4:2:0 in limited range and the
    size is even; RGB everywhere else."""
    from .workers import model_deflicker

    want = on_cuda(settings.model) if settings.decode.yuv == "auto" else bool(settings.decode.yuv)
    if not want or rgb_needed or model_deflicker(settings.model):
        return "rgb"
    planes = (info.pix_fmt == I420 and settings.encode.pix_fmt == I420 and fits_i420(info.width, info.height)
              and info.colour[1] != 2  # full (JPEG) range: the matrix here is limited range
              and Path(dst).suffix.lower() in VIDEO_SUFFIXES)
    return I420 if planes else "rgb"


def _check_paths(src: Path, dst: Path) -> None:
    """Refuse an output that is the input (as ffmpeg does)."""
    try:
        same = dst.exists() and src.exists() and dst.samefile(src)
    except OSError:
        same = False
    if same or dst.resolve() == src.resolve():
        raise OutputError(f"{dst}: is the input; give another output")


def _plugin_chain(settings: RunSettings):
    """The configured plugins, loaded and checked (None when there are none)."""
    if not settings.plugins:
        return None
    from plugins import PluginChain

    return PluginChain.from_config(settings.plugins)


def _plugin_cpus(settings: RunSettings) -> float:
    from plugins.loader import actor_cpus  # here: plugins import the pipeline

    return actor_cpus(settings.plugins)
