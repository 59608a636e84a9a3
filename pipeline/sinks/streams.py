"""Live outputs: restream (RTSP push, MPEG-TS served over TCP/HTTP or sent over UDP), rolling
recordings and snapshots. Several at once from one camera; each is a sink (write/close).

Encoding stays in `pipeline.sinks.files`: every output here is its `Encoder` on another
target (a URL, a socket fan-out) or a `VideoFileSink`, so pts/time_base copying and the
encoder flush are the same code. Live
encoders use x264 `ultrafast` with one thread: no B-frames and no look-ahead, so a frame
leaves the encoder as soon as it enters, and a keyframe every second lets a viewer join.
"""
from __future__ import annotations

import logging
import os
import queue
import re
import socket
import socketserver
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import av

from ..errors import OutputError
from ..frames import FrameBatch
from ..redact import redact
from ..images import write_rgb
from ..locks import hold, release
from ..settings import EncodeSettings
from .files import Encoder, VideoFileSink
from ..sources.files import SourceInfo

log = logging.getLogger(__name__)

LIVE_ENCODE = EncodeSettings(codec="h264", crf=23, preset="ultrafast", threads=1, keyframe_s=1.0)


class StreamSink(Encoder):
    """Encode to a URL or a writable file object instead of a file renamed into place.

    Args:
        target: a URL (rtsp://, udp://) or an object with `write(bytes)`.
        fmt: the muxer (rtsp, mpegts).
        info: the camera's size and rate.
        label: how logs and errors name this output (a URL's password is masked).
    """

    AFTER_FAILURE = ""  # a stream leaves no partial file behind

    def __init__(self, target, fmt: str, info: SourceInfo, encode: EncodeSettings = LIVE_ENCODE,
                 options: dict | None = None, label: str | None = None):
        shown = redact(label or str(target))
        try:
            self.out = av.open(target, "w", format=fmt, options=options or {})
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise OutputError(redact(f"{shown}: cannot open this output ({exc})")) from None
        try:
            super().__init__(self.out, info, encode, shown)
            # Connect now (RTSP ANNOUNCE/RECORD), so a wrong server fails at start, naming the URL.
            self.out.start_encoding()
        except (av.FFmpegError, OSError) as exc:
            self.close(ok=False)
            raise OutputError(redact(f"{self.path}: cannot open this output ({exc})")) from None
        except BaseException:
            self.close(ok=False)
            raise

    def close(self, ok: bool = True) -> None:
        if getattr(self, "out", None) is None:
            return
        try:
            self.out.mux(self.video.encode(None))
        except (av.FFmpegError, OSError, ValueError):
            pass  # a client or server that went away cannot take the tail
        finally:
            try:
                self.out.close()
            except (av.FFmpegError, OSError):
                pass
            self.out = None


class Repushing:
    """A pushed stream (RTSP, UDP) that outlives its server: opened at once, so a wrong URL fails
    at start; a write that fails closes it and the next ones reopen it, at most every RETRY_S
    (doubling to RETRY_MAX_S while the server stays away). Until then each write fails at once,
    and the runner counts the batches lost and says the outage once (pipeline.runner)."""

    RETRY_S, RETRY_MAX_S = 1.0, 30.0

    def __init__(self, open_sink):
        self.open_sink = open_sink
        self.sink = open_sink()
        self.path = self.sink.path
        self.wait, self.retry_at = self.RETRY_S, 0.0
        self._written = 0  # frames the connections before this one took

    @property
    def frames_written(self) -> int:
        return self._written + (self.sink.frames_written if self.sink is not None else 0)

    def write(self, batch) -> None:
        if self.sink is None:
            if time.monotonic() < self.retry_at:
                raise OutputError(f"{self.path}: still away; trying again in {self.retry_at - time.monotonic():.0f} s")
            try:
                self.sink = self.open_sink()
            except OutputError:
                self._later()
                raise
        try:
            self.sink.write(batch)
        except Exception:
            self._drop(ok=False)
            self._later()
            raise
        self.wait = self.RETRY_S

    def _drop(self, ok: bool) -> None:
        self._written += self.sink.frames_written
        self.sink.close(ok)
        self.sink = None

    def _later(self) -> None:
        self.retry_at = time.monotonic() + self.wait
        self.wait = min(2 * self.wait, self.RETRY_MAX_S)

    def close(self, ok: bool = True) -> None:
        if self.sink is not None:
            self._drop(ok)


class _Fanout:
    """A write-only file object that copies MPEG-TS bytes to every connected client.

    A client that cannot keep up (its queue is full) is disconnected rather than allowed
    to slow the encoder, and so every camera.
    """

    def __init__(self):
        self.clients: list[queue.Queue] = []
        self.lock = threading.Lock()

    def write(self, data) -> int:
        chunk = bytes(data)
        with self.lock:
            for q in list(self.clients):
                try:
                    q.put_nowait(chunk)
                except queue.Full:  # too slow: cut it off, with its backlog, so its thread ends
                    self.clients.remove(q)
                    _clear(q)
                    q.put_nowait(None)
        return len(chunk)

    def add(self) -> queue.Queue:
        q: queue.Queue = queue.Queue(maxsize=512)
        with self.lock:
            self.clients.append(q)
        return q

    def remove(self, q: queue.Queue) -> None:
        with self.lock:
            if q in self.clients:
                self.clients.remove(q)


def _clear(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


PUSH_TIMEOUT_US = 2_000_000  # an RTSP push's connect and I/O timeout
MAX_VIEWERS = 64  # clients of one tcp:// or http:// restream (each holds a thread)
HEAD_S = 5.0  # an HTTP viewer's request head must arrive within this, in all


class MpegTsServer:
    """Serve the derained MPEG-TS to any number of clients, over raw TCP or HTTP.

    Args:
        host, port: where to listen (port 0 picks a free one; see `.port`).
        http: answer HTTP GETs with `video/mp2t` instead of sending raw TS on connect.
    """

    def __init__(self, host: str, port: int, info: SourceInfo, http: bool = False,
                 encode: EncodeSettings = LIVE_ENCODE):
        self.fanout = _Fanout()
        fanout = self.fanout
        slots = threading.BoundedSemaphore(MAX_VIEWERS)

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                if http:  # the request's head within HEAD_S in all: a client trickling bytes holds no thread
                    deadline, head = time.monotonic() + HEAD_S, b""
                    while b"\r\n\r\n" not in head and len(head) < 8192:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return
                        sock.settimeout(left)
                        part = sock.recv(1024)
                        if not part:
                            return
                        head += part
                    sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: video/mp2t\r\nCache-Control: no-cache\r\n\r\n")
                sock.settimeout(10)
                q = fanout.add()
                try:
                    while (chunk := q.get()) is not None:
                        sock.sendall(chunk)
                except OSError:
                    pass
                finally:
                    fanout.remove(q)

            def finish(self) -> None:
                slots.release()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 64  # a burst of viewers is queued, not refused (the default is 5)

            def verify_request(self, request, client_address) -> bool:
                return slots.acquire(blocking=False)  # at most MAX_VIEWERS threads: the rest are closed

            def handle_error(self, request, client_address) -> None:
                exc = sys.exc_info()[1]
                if isinstance(exc, OSError):  # a viewer that timed out or left: it printed a traceback each
                    log.debug("restream viewer %s: %s", client_address, exc)
                else:
                    log.exception("restream viewer %s", client_address)

        try:
            self.server = Server((host, port), Handler)
        except OSError as exc:
            raise OutputError(f"{'http' if http else 'tcp'}://{host}:{port}: cannot listen ({exc.strerror})") from None
        self.port = self.server.server_address[1]
        self.url = self.path = f"{'http' if http else 'tcp'}://{host}:{self.port}"  # path: as logs name outputs
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.2,), daemon=True,
                                       name=f"serve-{self.port}")
        self.thread.start()
        self.sink = StreamSink(self.fanout, "mpegts", info, encode, label=self.url)

    def write(self, batch: FrameBatch) -> None:
        self.sink.write(batch)

    def close(self, ok: bool = True) -> None:
        self.sink.close(ok)
        with self.fanout.lock:
            for q in self.fanout.clients:
                _clear(q)
                q.put_nowait(None)
        self.server.shutdown()
        self.server.server_close()


class SegmentRecorder:
    """Rolling recordings: one closed, playable file per `segment_s` of video.

    Each segment is a `VideoFileSink` (written under a hidden partial name, renamed when
    closed), so a crash loses at most the open segment. Timestamps restart at 0 in each
    segment; the wall-clock start is in the file name.

    Args:
        folder: where segments go, named NAME-YYYYmmdd-HHMMSS-NNNNN.EXT.
        keep: delete the oldest closed segments beyond this many (0 keeps all).
    """

    def __init__(self, folder: str | Path, info: SourceInfo, name: str = "cam", segment_s: float = 60.0,
                 fmt: str = "mp4", keep: int = 0, encode: EncodeSettings = LIVE_ENCODE):
        self.folder, self.info, self.name = Path(folder), info, name
        self.segment_s, self.fmt, self.keep, self.encode = segment_s, fmt, keep, encode
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.folder}: cannot create it ({exc.strerror})") from None
        # two recorders of one name would write over each other's segments and prune them
        self._lock = hold(self.folder / f".{name}.lock", f"{self.folder}: another recorder is writing {name}'s "
                          "segments there; give this camera another name or folder", create=True)
        self.frames_written = 0
        self._sink: VideoFileSink | None = None
        self._start_pts: int | None = None
        try:
            self._take_stock()
        except BaseException as exc:
            release(self._lock)  # a recorder that never started holds no lock
            if isinstance(exc, OSError):
                raise OutputError(f"{self.folder}: cannot keep its segments ({exc.strerror}: {exc.filename})") from None
            raise

    def _take_stock(self) -> None:
        """The camera's segments already there count: a service that restarts (or crash-loops)
        must not grow the folder past `keep`. They sort by number, which each run continues (so a
        restart within the same second neither reuses a name nor sorts before what it follows):
        the local-time stamp in the name goes back an hour when summer time ends."""
        own = re.compile(rf"{re.escape(self.name)}-(\d{{8}}-\d{{6}})-(\d{{5,}})\.{re.escape(self.fmt)}")
        found = [(int(m[2]), m[1], p) for p in self.folder.iterdir() if (m := own.fullmatch(p.name))]
        self.closed: list[Path] = [p for *_, p in sorted(found)]
        self._index = 1 + max((index for index, _, _ in found), default=-1)
        self._prune()

    def write(self, batch: FrameBatch) -> None:
        for i in range(len(batch)):
            pts, tb = batch.pts[i], batch.time_base[i] or self.info.time_base
            if self._sink is not None and (pts - self._start_pts) * tb >= self.segment_s:
                self._roll()
            if self._sink is None:
                self._open(pts)
            one = replace(batch, images=batch.images[i:i + 1], seq=batch.seq[i:i + 1],
                          pts=(pts - self._start_pts,), time_base=(tb,), arrival=batch.arrival[i:i + 1],
                          rainy=None, rain_intensity=None)
            self._sink.write(one)
            self.frames_written += 1

    def _open(self, pts: int) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.folder / f"{self.name}-{stamp}-{self._index:05d}.{self.fmt}"
        self._index += 1
        # each segment's clock starts at its first frame (pts - _start_pts): no input start to take off too
        self._sink = VideoFileSink(path, replace(self.info, start=0.0), self.encode, overwrite=True)
        self._start_pts = pts

    def _roll(self) -> None:
        sink, self._sink = self._sink, None
        sink.close(ok=True)
        self.closed.append(sink.path)
        self._prune()

    def _prune(self) -> None:
        while self.keep > 0 and len(self.closed) > self.keep:
            self.closed.pop(0).unlink(missing_ok=True)

    def close(self, ok: bool = True) -> None:
        """Close the open segment playable (a stopped camera keeps its last minute)."""
        try:
            if self._sink is not None:
                self._roll()
        finally:
            release(self._lock)
            self._lock = None


class SnapshotSink:
    """A JPEG of the derained picture every `every_s` seconds, plus `NAME-latest.jpg`.

    Each file is written under a temporary name and renamed, so a reader never sees half a JPEG.
    """

    def __init__(self, folder: str | Path, name: str = "cam", every_s: float = 10.0):
        self.folder, self.name, self.every_s = Path(folder), name, every_s
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.folder}: cannot create it ({exc.strerror})") from None
        self._last = -float("inf")
        self.written: list[Path] = []

    def write(self, batch: FrameBatch) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        path = self.folder / f"{self.name}-{time.strftime('%Y%m%d-%H%M%S')}-{batch.seq[-1]:08d}.jpg"
        self._atomic(path, batch.images[-1])
        self._atomic(self.folder / f"{self.name}-latest.jpg", batch.images[-1])
        self.written.append(path)

    @staticmethod
    def _atomic(path: Path, image) -> None:
        tmp = path.with_name(f".{path.stem}.partial.jpg")
        write_rgb(tmp, image)
        os.replace(tmp, path)

    def close(self, ok: bool = True) -> None:
        pass


def restream_sink(url: str, info: SourceInfo, encode: EncodeSettings = LIVE_ENCODE):
    """The output for a restream URL.

    rtsp://HOST:PORT/PATH pushes to an RTSP server (ANNOUNCE/RECORD, over TCP);
    udp://HOST:PORT sends MPEG-TS datagrams; tcp://HOST:PORT and http://HOST:PORT listen
    there and serve MPEG-TS to every client that connects.
    """
    if url.startswith(("rtsp://", "rtsps://")):
        # a socket timeout (µs): a reconnect runs on the runner's loop, and a host that does not
        # answer must not hold every camera's outputs for the system's connect timeout
        return Repushing(lambda: StreamSink(url, "rtsp", info, encode,
                                            options={"rtsp_transport": "tcp", "timeout": str(PUSH_TIMEOUT_US)}))
    if url.startswith("udp://"):
        target = url if "pkt_size" in url else url + ("&" if "?" in url else "?") + "pkt_size=1316"
        return Repushing(lambda: StreamSink(target, "mpegts", info, encode, label=url))
    if url.startswith(("tcp://", "http://")):
        hostport = url.split("://", 1)[1].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        if not port.isdigit():
            raise OutputError(f"{redact(url)}: expected {url.split(':')[0]}://HOST:PORT")
        return MpegTsServer(host or "0.0.0.0", int(port), info, http=url.startswith("http://"), encode=encode)
    raise OutputError(f"{redact(url)}: unsupported restream URL (use rtsp://, udp://, tcp:// or http://)")
