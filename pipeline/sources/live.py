"""Live sources: RTSP, HTTP(S)/HLS, TCP/UDP MPEG-TS, v4l2 webcams, and files played in real time.

A `LiveSource` is an endless iterable of `Frame`s. Each connection is decoded by the
file reader of `pipeline.sources.files` (the one place that decodes), opened here with the
network options and `timeout=(open_s, read_s)`, so a stalled camera raises instead of
hanging. When a connection ends, fails or stalls, the source reopens it with
exponential backoff and jitter: forever once it has worked (unless limited), and a
first connection gets `first_tries` before a `SourceConnectionError` naming the URL.

Output timestamps are rebuilt on one clock (1/90000 s) that only moves forward: within a
connection the camera's own pts steps are kept; across a reconnect, or where the camera
sent no pts or jumped, the wall-clock gap is used.

A URL's password is never shown: logs and errors name the camera by `redact(uri)`.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av

from ..errors import InputError, SourceConnectionError
from ..frames import Frame
from ..redact import redact
from ..settings import LiveSettings
from .files import Decoder, SourceInfo, VideoFileSource, colour_tags

log = logging.getLogger(__name__)

CLOCK = Fraction(1, 90000)  # the output time base of every live source (MPEG-TS/RTP clock)
LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "tcp://", "udp://", "srt://")
MAX_PTS_STEP_S = 10.0  # a larger forward jump in the camera's pts is a discontinuity


def is_live(uri: str) -> bool:
    """True for a URL or a /dev/video* device (what `derain run` sends down the live path)."""
    return str(uri).startswith(LIVE_SCHEMES) or str(uri).startswith("/dev/video")


def open_options(uri: str, settings: LiveSettings) -> tuple[dict, str | None]:
    """FFmpeg demuxer options and format for `uri`."""
    if uri.startswith(("rtsp://", "rtsps://")):
        # TCP interleaving by default: UDP loses packets on busy links and smears the picture.
        return {"rtsp_transport": settings.transport, "rtsp_flags": "prefer_tcp"
                if settings.transport == "tcp" else ""}, None
    if uri.startswith("/dev/video"):
        return {}, "v4l2"
    if uri.startswith(("http://", "https://")):
        return {"reconnect": "0"}, None  # reconnects are ours: counted, logged, with backoff
    return {}, None


def connect(uri: str, settings: LiveSettings):
    """Open `uri` once; raises InputError (why, naming the URL) on failure.

    An RTSP camera is first opened without probing: its SDP already says the codec and size,
    and FFmpeg's probe (about 1.2 s of frames, for a frame-rate guess) would arrive in one burst
    the live queue must drop. A camera whose SDP leaves the size out is opened again, probed.
    """
    options, fmt = open_options(uri, settings)
    options = {k: v for k, v in options.items() if v}
    if uri.startswith(("rtsp://", "rtsps://")):
        container = _open(uri, fmt, {**options, "probesize": "32"}, settings, quick=True)
        if container is not None and _sized(container):
            return container
        if container is not None:
            container.close()
        log.debug("%s: the SDP gives no picture size; opening it again, probed", redact(uri))
    container = _open(uri, fmt, options, settings)
    if not container.streams.video:
        container.close()
        raise InputError(f"{redact(uri)}: has no video stream")
    if not _sized(container):
        s = container.streams.video[0]
        name = s.codec_context.name if s.codec_context else "unknown"
        container.close()
        raise InputError(f"{redact(uri)}: video stream has no size (unsupported codec {name}?)")
    return container


def _open(uri: str, fmt: str | None, options: dict, settings: LiveSettings, quick: bool = False):
    """The opened container; None where a `quick` (unprobed) open found too little to go on."""
    try:
        return av.open(uri, format=fmt, options=options, metadata_errors="ignore",
                       timeout=(settings.open_timeout_s, settings.read_timeout_s))
    except (av.FFmpegError, OSError) as exc:
        if quick and isinstance(exc, av.InvalidDataError):
            return None
        if isinstance(exc, av.ExitError):  # FFmpeg's words for our timeout: "Immediate exit requested"
            raise InputError(redact(f"{uri}: no answer within {settings.open_timeout_s:g} s "
                                    "(live.open_timeout_s)")) from None
        raise InputError(redact(f"{uri}: cannot open ({exc})")) from None


def _sized(container) -> bool:
    """Whether the first video stream's picture size is known."""
    streams = container.streams.video
    return bool(streams and streams[0].codec_context is not None and streams[0].codec_context.width)


class LiveClock:
    """Output timestamps on CLOCK (1/90000 s) that only move forward, across reconnects.

    Within a connection the camera's own pts steps are kept (its timing is better than
    ours). A frame that starts a connection, has no pts, or jumps back or by more than
    MAX_PTS_STEP_S is placed by the wall-clock time since the previous output frame.
    """

    def __init__(self, rate: Fraction):
        self.step = max(1, round(1 / (rate * CLOCK)))
        self.last_out: int | None = None
        self.last_wall: float | None = None

    def stamp(self, frame: Frame, prev: Frame | None) -> Frame:
        """`frame` on the output clock; `prev` is the previous frame of the same connection (or None)."""
        if self.last_out is None:
            out = 0
        else:
            delta_s = None
            if prev is not None and frame.seconds is not None and prev.seconds is not None:
                delta_s = frame.seconds - prev.seconds
            if delta_s is None or not 0 < delta_s <= MAX_PTS_STEP_S:
                delta_s = frame.arrival - (prev.arrival if prev is not None else self.last_wall)
            out = self.last_out + max(1, round(delta_s / CLOCK)) if delta_s > 0 else self.last_out + self.step
        self.last_out, self.last_wall = out, frame.arrival
        return replace(frame, pts=out, time_base=CLOCK)


class Backoff:
    """Exponential backoff with jitter: base, 2*base, ... up to `cap`, each +-`jitter`."""

    def __init__(self, base: float, cap: float, jitter: float = 0.2, rng: random.Random | None = None):
        self.base, self.cap, self.jitter = base, cap, jitter
        self.rng = rng or random.Random()
        self.tries = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2 ** self.tries)
        self.tries += 1
        return max(0.0, delay * (1 + self.rng.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        self.tries = 0


class LiveSource:
    """Frames from a live URL or device, reconnecting as long as the settings allow.

    Args:
        uri: rtsp://, http(s)://, tcp://, udp://, /dev/videoN, or a file (with `settings.realtime`).
        settings: timeouts, tries and backoff.
        source_id: the camera's name in frames, logs and metrics.
        stop: an event that ends the source (also while it is still trying to connect).

    Attributes:
        info: what a sink needs (size, rate); time_base is always CLOCK.
        reconnects: successful reconnections after the first connection.
        stalls: connections that ended by the read timeout.
    """

    def __init__(self, uri: str, settings: LiveSettings = LiveSettings(), source_id: str = "0",
                 threads: int = 1, stop: threading.Event | None = None):
        self.uri, self.settings, self.source_id, self.threads = str(uri), settings, source_id, threads
        self.shown = redact(self.uri)  # how logs and errors name it: no password
        self.truncated = False
        self.reconnects = 0
        self.stalls = 0
        self.connected = False
        self._stop = stop or threading.Event()
        self._first = self._connect_first()  # fail now, naming the URL, if it never answers
        s = self._first.streams.video[0]
        rate = s.average_rate or s.guessed_rate
        self.info = SourceInfo(uri=self.shown, width=s.codec_context.width, height=s.codec_context.height,
                               time_base=CLOCK, rate=rate if rate and 1 <= rate <= 240 else Fraction(25),
                               colour=colour_tags(s.codec_context))
        self.clock = LiveClock(self.info.rate)
        if self._first.streams.audio:
            _say_video_only(self.shown)

    def stop(self) -> None:
        """Ask the reader to end after the current frame (or the read timeout, if blocked)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _connect_first(self):
        backoff = Backoff(self.settings.backoff_s, self.settings.backoff_max_s, self.settings.jitter)
        last = None
        for attempt in range(1, self.settings.first_tries + 1):
            try:
                container = connect(self.uri, self.settings)  # the real URL
                self.connected = True
                return container
            except InputError as exc:
                last = exc
                log.warning("%s: connection try %d/%d failed: %s", self.shown, attempt,
                            self.settings.first_tries, exc)
                if attempt < self.settings.first_tries and self._stop.wait(backoff.next()):
                    break
        if self._stop.is_set():
            raise SourceConnectionError(f"{self.shown}: stopped before it connected ({_reason(last)})")
        n = self.settings.first_tries
        raise SourceConnectionError(f"{self.shown}: no connection after {n} tr{'y' if n == 1 else 'ies'} "
                                    f"({_reason(last)})")

    def _reconnect(self):
        """Reopen after an outage; None when stopped or out of tries."""
        backoff = Backoff(self.settings.backoff_s, self.settings.backoff_max_s, self.settings.jitter)
        limit = self.settings.reconnect_tries
        attempt = 0
        while not self._stop.wait(backoff.next()):
            attempt += 1
            try:
                container = connect(self.uri, self.settings)  # the real URL
            except InputError as exc:
                log.warning("%s: reconnect try %d%s failed: %s", self.shown, attempt,
                            f"/{limit}" if limit else "", _reason(exc))
                if limit and attempt >= limit:
                    raise SourceConnectionError(f"{self.shown}: lost, and no reconnection after {limit} "
                                                f"tr{'y' if limit == 1 else 'ies'} "
                                                f"({_reason(exc)})") from None
                continue
            self.reconnects += 1
            self.connected = True
            log.warning("%s: reconnected (reconnect #%d)", self.shown, self.reconnects)
            return container
        return None

    def __iter__(self) -> Iterator[Frame]:
        container, seq = self._first, 0
        self._first = None
        while container is not None and not self._stop.is_set():
            conn = Decoder(container, self.source_id, self.threads, name=self.shown)
            started = time.monotonic()
            prev: Frame | None = None
            for frame in conn:
                out = self.clock.stamp(frame, prev)
                prev = frame
                yield replace(out, seq=seq)
                seq += 1
                if self._stop.is_set():
                    break
            container.close()
            self.connected = False
            if self._stop.is_set():
                return
            # PyAV's read timeout interrupts the read (ExitError): over TCP and HTTP the frames
            # the demuxer still held come out just before it, so the silence before the end does
            # not show there what it shows for RTSP.
            stalled = conn.error is not None and (
                isinstance(conn.error, av.error.ExitError)
                or time.monotonic() - (prev.arrival if prev else started) >= self.settings.read_timeout_s * 0.9)
            self.stalls += stalled
            why = "stalled (no data for the read timeout)" if stalled else "ended"
            log.warning("%s: stream %s after %d frames; reconnecting", self.shown, why, seq)
            container = self._reconnect()


class RealtimeFileSource:
    """A video file sent at its own frame rate, to stand in for a camera (`--realtime`).

    Frames are released when their pts comes due on the wall clock, so a model slower
    than the file's rate makes the live queue drop, exactly as with a camera.
    """

    def __init__(self, path: str | Path, source_id: str = "0", threads: int = 1, speed: float = 1.0):
        self.file = VideoFileSource(path, threads=threads, source_id=source_id)
        self.source_id, self.speed = source_id, speed
        if self.file.info.has_audio:
            _say_video_only(str(path))
        self.info = replace(self.file.info, path=None, has_audio=False)
        self.reconnects = self.stalls = 0
        self._stop = threading.Event()

    @property
    def truncated(self) -> bool:
        return self.file.truncated

    def stop(self) -> None:
        self._stop.set()

    def __iter__(self) -> Iterator[Frame]:
        start, first = time.monotonic(), None
        for frame in self.file:
            t = frame.seconds or 0.0
            first = t if first is None else first
            if self._stop.wait(max(0.0, start + (t - first) / self.speed - time.monotonic())):
                return
            yield replace(frame, arrival=time.monotonic())


def open_live(uri: str, settings: LiveSettings = LiveSettings(), source_id: str = "0", threads: int = 1,
              stop: threading.Event | None = None):
    """The live source for `uri`: a real-time file when `settings.realtime` and `uri` is a file."""
    if not is_live(uri):
        if not settings.realtime:
            raise InputError(f"{redact(uri)}: not a live URL or device (use --realtime to play a file as a camera)")
        return RealtimeFileSource(uri, source_id=source_id, threads=threads)
    return LiveSource(uri, settings, source_id=source_id, threads=threads, stop=stop)


def _say_video_only(shown: str) -> None:
    """Live outputs carry video only: a camera's audio would have to be cut wherever frames are
    dropped to keep the delay bounded. Said, so that no one finds it out from a silent recording."""
    log.warning("%s: has audio; live outputs (recordings, restreams, -o) carry the derained video only", shown)


def _reason(exc: BaseException | None) -> str:
    text = str(exc or "unknown")
    return text.split(": ", 1)[1] if ": " in text else text
