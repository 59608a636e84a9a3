"""A run's figures, one `LaneStats` per input (a file, a camera): counters, a latency
histogram, and their Prometheus text form. The same type for `derain run --json`, the
archive report, /stats.json and /metrics.

Memory stays flat for runs of days: the histogram has fixed buckets, and the samples
kept for percentiles are a bounded window of the most recent frames.
"""
from __future__ import annotations

import bisect
import collections
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .redact import redact

BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
WINDOW = 100_000  # latency samples kept for p50/p95/p99 (~5.5 min at 300 fps in all)


class LatencyHistogram:
    """Arrival-to-output delays: cumulative buckets (Prometheus) and a recent window (percentiles)."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS_S, window: int = WINDOW):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.count, self.sum = 0, 0.0
        self.recent: collections.deque[float] = collections.deque(maxlen=window)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.count += 1
        self.sum += seconds
        self.recent.append(seconds)

    def percentiles(self) -> dict[str, float]:
        if not self.recent:
            return {}
        p = np.percentile(np.fromiter(self.recent, float), [50, 95, 99])
        return {"p50": round(float(p[0]), 4), "p95": round(float(p[1]), 4), "p99": round(float(p[2]), 4)}


@dataclass
class LaneStats:
    """One input's figures. in = out + dropped holds exactly once the lane has stopped."""

    name: str
    uri: str
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    reconnects: int = 0
    stalls: int = 0
    queue_depth: int = 0
    connected: bool = False
    error: str | None = None
    plugin_errors: int = 0  # plugin calls that failed (skipped for their batch, or the one that stopped the run)
    output_errors: int = 0  # live: batches an output (a restream, a recording) failed to take
    worker_restarts: int = 0  # model workers restarted while this input ran (the pool is shared)
    truncated: bool = False  # the input ended early (a cut file): what it held was derained
    warnings: list[str] = field(default_factory=list)  # what the output could not keep
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    latency: LatencyHistogram = field(default_factory=LatencyHistogram, repr=False)
    _fps_window: collections.deque = field(default_factory=lambda: collections.deque(maxlen=50), repr=False)

    def output(self, arrivals, now: float) -> None:
        for t in arrivals:
            self.latency.observe(now - t)
        self.frames_out += len(arrivals)
        self._fps_window.append((now, self.frames_out))

    @property
    def fps(self) -> float:
        """Output frames per second: over the last ~50 outputs while running, over the run once ended."""
        if self.ended is not None:
            return self.frames_out / self.seconds if self.seconds else 0.0
        w = self._fps_window
        if len(w) < 2 or w[-1][0] <= w[0][0]:
            return 0.0
        return (w[-1][1] - w[0][1]) / (w[-1][0] - w[0][0])

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def as_dict(self) -> dict:
        return {"name": redact(self.name), "uri": redact(self.uri), "frames_in": self.frames_in,
                "frames_out": self.frames_out, "dropped": self.dropped, "reconnects": self.reconnects,
                "stalls": self.stalls, "queue_depth": self.queue_depth, "connected": self.connected,
                "error": None if self.error is None else redact(self.error),
                "plugin_errors": self.plugin_errors, "output_errors": self.output_errors,
                "worker_restarts": self.worker_restarts,
                "truncated": self.truncated,
                "seconds": round(self.seconds, 3), "fps": round(self.fps, 3),
                "mean_fps": round(self.frames_out / self.seconds, 3) if self.seconds else 0.0,
                "latency": self.latency.percentiles()}


class Metrics:
    """Every lane's figures plus the pool's, guarded by one lock (read by the preview server)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.lanes: dict[str, LaneStats] = {}
        self.workers_alive = 0
        self.worker_restarts = 0

    def lane(self, name: str, uri: str) -> LaneStats:
        with self.lock:  # what is shown (/stats.json, the page) never holds a password
            return self.lanes.setdefault(name, LaneStats(name, redact(uri)))

    def snapshot(self) -> dict:
        with self.lock:
            return {"cameras": [s.as_dict() for s in self.lanes.values()],
                    "workers_alive": self.workers_alive, "worker_restarts": self.worker_restarts}

    def prometheus(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        out: list[str] = []

        def family(name: str, kind: str, help_: str, values) -> None:
            out.append(f"# HELP derain_{name} {help_}")
            out.append(f"# TYPE derain_{name} {kind}")
            for labels, value in values:
                out.append(f"derain_{name}{labels} {value}")

        with self.lock:
            lanes = list(self.lanes.values())
            lab = {s.name: f'{{camera="{_escape(s.name)}"}}' for s in lanes}
            family("frames_in_total", "counter", "Frames read from the camera.",
                   [(lab[s.name], s.frames_in) for s in lanes])
            family("frames_out_total", "counter", "Frames derained and written.",
                   [(lab[s.name], s.frames_out) for s in lanes])
            family("frames_dropped_total", "counter", "Frames dropped because the model fell behind.",
                   [(lab[s.name], s.dropped) for s in lanes])
            family("fps", "gauge", "Output frames per second (recent).",
                   [(lab[s.name], round(s.fps, 3)) for s in lanes])
            family("queue_depth", "gauge", "Frames waiting for the model.",
                   [(lab[s.name], s.queue_depth) for s in lanes])
            family("reconnects_total", "counter", "Reconnections after a drop or stall.",
                   [(lab[s.name], s.reconnects) for s in lanes])
            family("connected", "gauge", "1 while the camera delivers frames.",
                   [(lab[s.name], int(s.connected)) for s in lanes])
            family("plugin_errors_total", "counter", "Plugin calls that failed.",
                   [(lab[s.name], s.plugin_errors) for s in lanes])
            family("output_errors_total", "counter", "Batches an output (restream, recording) failed to take.",
                   [(lab[s.name], s.output_errors) for s in lanes])
            out.append("# HELP derain_latency_seconds Delay from a frame's arrival to its output.")
            out.append("# TYPE derain_latency_seconds histogram")
            for s in lanes:
                name = _escape(s.name)
                cum = 0
                for bound, n in zip(s.latency.buckets, s.latency.counts):
                    cum += n
                    out.append(f'derain_latency_seconds_bucket{{camera="{name}",le="{bound}"}} {cum}')
                out.append(f'derain_latency_seconds_bucket{{camera="{name}",le="+Inf"}} {s.latency.count}')
                out.append(f'derain_latency_seconds_sum{{camera="{name}"}} {s.latency.sum:.6f}')
                out.append(f'derain_latency_seconds_count{{camera="{name}"}} {s.latency.count}')
            family("workers_alive", "gauge", "Model workers alive.", [("", self.workers_alive)])
            family("worker_restarts_total", "counter", "Model workers restarted.", [("", self.worker_restarts)])
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return redact(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
