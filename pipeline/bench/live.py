"""`derain bench --live`: delay p50/p95, output fps and drop rate against a real local RTSP camera.

Starts a GStreamer RTSP camera at --size and --fps on 127.0.0.1, derains it for
--duration-s with the chosen profile, and reports the figures. The delay of a frame is
the time from its arrival (decoded by the reader) to its output (encoded and muxed).
"""
from __future__ import annotations

import os
import resource
import sys
import threading

from ..cameras import run_live
from ..settings import RunSettings
from .cameras import RtspCamera


def run_live_bench(settings: RunSettings, size: str = "640x360", fps: int = 25) -> dict:
    """Run the live pipeline against a local camera at `size` and `fps` for `live.duration_s`;
    returns the figures (one JSON object)."""
    samples: list[float] = []
    done = threading.Event()

    def sample_memory(_runner) -> None:
        # Every 5 s after a 10 s warm-up (model loaded, encoders open): flat means no leak.
        def loop() -> None:
            if not done.wait(10):
                samples.append(_rss_mb())
                while not done.wait(5):
                    samples.append(_rss_mb())
        threading.Thread(target=loop, daemon=True).start()

    with RtspCamera(size=size, fps=fps) as camera:
        rss_start = _rss_mb()
        try:
            result = run_live([camera.url()], settings, signals=False, on_start=sample_memory)
        finally:
            done.set()
    cam = result["cameras"][0]
    lat = cam["latency"]
    frames_in = cam["frames_in"]
    return {
        "mode": "live", "profile": settings.model.profile, "size": size, "camera_fps": fps,
        "duration_s": cam["seconds"], "frames_in": frames_in, "frames_out": cam["frames_out"],
        "dropped": cam["dropped"], "exact": frames_in == cam["frames_out"] + cam["dropped"],
        "drop_rate": round(cam["dropped"] / frames_in, 4) if frames_in else 0.0,
        "output_fps": cam["mean_fps"], "delay_p50_s": lat.get("p50"), "delay_p95_s": lat.get("p95"),
        "delay_p99_s": lat.get("p99"), "reconnects": cam["reconnects"],
        "rss_mb_start": rss_start, "rss_mb_end": _rss_mb(),
        "rss_mb_growth_after_warmup": round(samples[-1] - samples[0], 1) if len(samples) > 1 else None,
        "cpu_cores": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
