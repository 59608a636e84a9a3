"""Derain one video file or image folder into one output: the job behind `derain run`.

Archive workers call the same function where the file lives, with a pool of their own.
"""
from __future__ import annotations

from pathlib import Path

from .batching import Batcher
from .runner import Runner, RunStats
from .settings import RunSettings
from .sinks import open_sink
from .sources import open_source
from .workers import make_pool


def derain_file(src: str | Path, dst: str | Path, settings: RunSettings = RunSettings(), pool=None,
                overwrite: bool = False, progress: bool = False, consumers=()) -> RunStats:
    """Derain `src` (video file or image folder) into `dst` (video file or image folder).

    Every frame is kept (policy `block`), in order, with its timestamps; audio is remuxed.
    Raises InputError / OutputError naming the path; a partial output is removed.
    """
    source = open_source(src, threads=settings.decode.threads, fps=settings.decode.fps)
    sink = open_sink(dst, source.info, settings.encode, overwrite=overwrite)
    own_pool = pool is None
    try:
        if own_pool:
            pool = make_pool(settings.model, settings.workers)
    except BaseException:
        sink.close(ok=False)
        raise
    b = settings.batching
    try:
        runner = Runner(source, [sink], pool, Batcher(b.max_batch, b.max_wait_ms), queue_size=b.queue_size,
                        policy="block", consumers=consumers, progress=progress)
        return runner.run()
    finally:
        if own_pool:
            pool.close()
