"""Derain one video file or image folder into one output: the job behind `derain run`.

Archive workers call the same function where the file lives, with a pool of their own.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .errors import OutputError
from .runner import Input, Runner
from .settings import RunSettings
from .stats import LaneStats
from .sinks.files import open_sink
from .sources.files import open_source
from .workers import make_pool


def derain_file(src: str | Path, dst: str | Path, settings: RunSettings = RunSettings(), pool=None,
                overwrite: bool = False, progress: bool = False, consumers=(), plugins=None,
                token: str | None = None) -> LaneStats:
    """Derain `src` (video file or image folder) into `dst` (video file or image folder).

    Every frame is kept (policy `block`), in order, with its timestamps; audio is remuxed.
    Plugins (`settings.plugins`, or a ready `plugins.PluginChain` that the caller sets up
    and closes) see every derained batch in order before the sink encodes it, so what
    they draw is encoded. Raises InputError / OutputError naming the path, PluginError
    naming the plugin before any frame is read; a partial output is removed. `token` names
    the temporary output (default: this process's pid and a random part). The returned
    stats carry `warnings`: what the output could not keep (bit depth, streams, size).
    """
    _check_paths(Path(src), Path(dst))
    own_chain = plugins is None
    chain = _plugin_chain(settings) if own_chain else plugins
    source = open_source(src, threads=settings.decode.threads, fps=settings.decode.fps)
    sink = open_sink(dst, source.info, settings.encode, overwrite=overwrite, token=token)
    own_pool = pool is None
    try:
        if own_pool:
            pool = make_pool(settings.model, settings.workers)
        if own_chain and chain is not None:
            chain.setup()  # detectors load (in their actors) before the first frame
    except BaseException:
        sink.close(ok=False)
        if own_chain and chain is not None:
            chain.close()
        if own_pool and pool is not None:
            pool.close()
        raise
    try:
        # One strict lane: the queue blocks (every frame kept), the first error ends the run.
        # The chain sits in front of the sink: the sink encodes what plugins drew, and actor-pool
        # plugins run while the next batches derain.
        lane = Input(str(src), open=lambda stop: source, outputs=lambda info: [sink], uri=str(src),
                     consumers=consumers, plugins=chain)
        batching = replace(settings.batching.for_input(settings.model, live=False), policy="block")
        try:
            metrics = Runner([lane], pool, batching, strict=True, progress=progress).run()
        finally:
            sink.close(ok=False)  # a no-op once the run closed it; removes the partial file if it did not
        stats = metrics.lanes[lane.name]
        stats.warnings = [*getattr(source, "warnings", ()), *getattr(sink, "warnings", ())]
        return stats
    finally:
        if own_pool:
            pool.close()
        if own_chain and chain is not None:
            chain.close()


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
