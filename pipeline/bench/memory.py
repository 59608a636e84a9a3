"""`derain bench --memory`: a long clip through the whole pipeline, watching every process's RSS.

Flat memory is what lets a job run for hours: the driver's and the workers' resident
memory are sampled once a second while a long generated clip (1080p by default) goes
through decode -> Ray worker -> encode with the identity model, and the report compares
the peak of the first tenth of the run with the peak of the rest.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def write_long_clip(path: Path, seconds: float, w: int, h: int, fps: int = 25) -> int:
    """A moving pattern, encoded fast (ultrafast) so generating it is not the slow part."""
    rng = np.random.default_rng(0)
    base = (rng.random((h // 16 + 2, w // 16 + 2, 3)) * 255).astype(np.uint8)
    base = np.kron(base, np.ones((16, 16, 1), np.uint8))
    n = int(seconds * fps)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "30"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.thread_count = 2
        for i in range(n):
            off = i % 16
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[off:off + h, off:off + w]), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    return n


MIN_SAMPLES = 30  # one a second: a shorter run's first tenth is a sample or two, and growth means nothing


def run_memcheck(minutes: float = 10.0, size: str = "1920x1080", backend: str = "ray") -> dict:
    from ..config import load_settings
    from ..files import derain_file
    from ..settings import RunSettings
    from ..workers import make_pool

    w, h = map(int, size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="derain-mem-"))
    try:
        clip = tmp / "long.mp4"
        frames = write_long_clip(clip, minutes * 60, w, h)
        settings = load_settings(RunSettings, None, {"model.profile": "identity", "workers.backend": backend,
                                                     "encode.preset": "ultrafast"})
        pool = make_pool(settings.model, settings.workers)
        pids = [os.getpid(), *(pool.pids() if hasattr(pool, "pids") else [])]
        samples: list[tuple[float, float]] = []
        done = threading.Event()

        def sample() -> None:
            start = time.monotonic()
            while not done.is_set():
                samples.append((time.monotonic() - start, sum(rss_mib(p) for p in pids)))
                done.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            stats = derain_file(clip, tmp / "out.mp4", settings, pool=pool)
        finally:
            done.set()
            sampler.join()
            pool.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rss = [r for _, r in samples]
    tenth = max(1, len(rss) // 10)
    early, late = max(rss[:tenth]), max(rss[tenth:] or rss[:tenth])
    result = {"minutes": minutes, "size": size, "frames": frames, "frames_out": stats.frames_out,
              "seconds": round(stats.seconds, 1), "fps": round(stats.fps, 1),
              "rss_mib_first_tenth_peak": round(early, 1), "rss_mib_rest_peak": round(late, 1),
              "rss_growth_mib": round(late - early, 1), "samples": len(rss), "processes": len(pids),
              "too_short": len(rss) < MIN_SAMPLES}
    print(f"{frames} frames of {size} ({minutes} min) in {stats.seconds:.0f} s: RSS peak (driver + workers) "
          f"{early:.0f} MiB in the first tenth, {late:.0f} MiB after it ({late - early:+.0f} MiB)", flush=True)
    if result["too_short"]:
        print(f"too short to tell growth: {len(rss)} samples, one a second (at least {MIN_SAMPLES}: a longer "
              "--minutes)", flush=True)
    return result
