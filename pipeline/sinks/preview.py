"""`--preview HOST:PORT`: a small web page with the rainy and derained pictures side by side.

    /                 the page: per camera, rainy | derained, and the live figures
    /frame/CAM/KIND.jpg   the latest picture (KIND: rainy or derained)
    /mjpeg/CAM/KIND   the pictures as an MJPEG stream (multipart/x-mixed-replace)
    /stats.json       the figures as JSON
    /metrics          the figures in Prometheus text format

The page first shows still JPEGs (so it finishes loading) and then switches each
picture to its MJPEG stream. Pictures are JPEG-encoded at most `fps` times a second,
off the video path's critical work, so watching costs the model little.

Exposure is bounded: a connection that sends nothing (or a client that reads nothing) for
`idle_timeout_s` (5 s, as uvicorn's keep-alive), or whose request head takes longer than that
in all (a slowloris), is closed, one request per connection; at
most `max_clients` connections are served at once, and the next ones get a 503 and are
closed at once, so idle sockets cannot use up threads or file handles. MJPEG viewers, which
hold their connection as long as they watch, may take three quarters of them (from two on,
at least one is kept for the rest): open preview tabs never lock a Prometheus scraper out of /metrics. A
camera with no new picture gets its last one sent again every `idle_timeout_s`, so a viewer
that left is found and its place freed while the camera is down. With a `token`
every request needs `?token=TOKEN` or `Authorization: Bearer TOKEN` (else 401). Camera
URLs are shown without their passwords; listening beyond loopback logs a warning. A
client that goes away costs one debug line, never a traceback.
"""
from __future__ import annotations

import functools
import hmac
import html
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

import cv2
import numpy as np

from ..errors import OutputError
from ..frames import FrameBatch
from ..stats import Metrics
from ..redact import redact

log = logging.getLogger(__name__)

MAX_CLIENTS = 32  # connections served at once (each holds a thread and a file handle)
IDLE_TIMEOUT_S = 5.0  # a connection silent (or not reading) this long is closed
REFUSED = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 25\r\n"
           b"Retry-After: 5\r\nConnection: close\r\n\r\ntoo many preview clients\n")


def max_viewers(max_clients: int) -> int:
    """MJPEG streams served at once: the rest of `max_clients` (a quarter, at least one where
    there are two) is kept for short requests."""
    return max(1, max_clients - max(1, max_clients // 4))


@functools.cache
def _no_picture() -> bytes:
    """What a camera without a picture yet shows: a dark JPEG."""
    return _jpeg(np.zeros((90, 160, 3), np.uint8))


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>derain live</title>
<style>
body {{ font-family: sans-serif; background: #111; color: #eee; margin: 16px; }}
.cam {{ margin-bottom: 18px; }} .pair {{ display: flex; gap: 8px; }}
figure {{ margin: 0; }} img {{ width: 320px; background: #333; image-rendering: pixelated; }}
figcaption {{ font-size: 13px; color: #aaa; }} pre {{ font-size: 13px; color: #9f9; }}
</style></head><body>
<h2>derain live</h2>
{cams}
<script>
window.addEventListener('load', function () {{
  document.querySelectorAll('img[data-stream]').forEach(function (img) {{ img.src = img.dataset.stream; }});
}});
function refresh() {{
  fetch('/stats.json{tq}').then(function (r) {{ return r.json(); }}).then(function (s) {{
    s.cameras.forEach(function (c) {{
      var el = document.getElementById('stats-' + c.name);
      if (el) el.textContent = 'in ' + c.frames_in + '  out ' + c.frames_out + '  dropped ' + c.dropped +
        '  fps ' + c.fps.toFixed(1) + '  p50 ' + (c.latency.p50 || 0) + ' s  p95 ' + (c.latency.p95 || 0) +
        ' s  queue ' + c.queue_depth + '  reconnects ' + c.reconnects + (c.error ? '  error: ' + c.error : '');
    }});
    document.getElementById('workers').textContent = 'workers alive ' + s.workers_alive;
  }}).catch(function () {{}});
}}
setInterval(refresh, 1000); refresh();
</script>
<pre id="workers"></pre></body></html>
"""

CAM = """<div class="cam"><h3>{name}</h3><div class="pair">
<figure><img alt="rainy" src="/frame/{q}/rainy.jpg{tq}" data-stream="/mjpeg/{q}/rainy{tq}">
<figcaption>rainy</figcaption></figure>
<figure><img alt="derained" src="/frame/{q}/derained.jpg{tq}" data-stream="/mjpeg/{q}/derained{tq}">
<figcaption>derained</figcaption></figure></div><pre id="stats-{name}">{stats}</pre></div>"""


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most `max_clients` at once; beyond that a 503 and close."""

    daemon_threads = True
    block_on_close = False  # closing never waits for a client's thread
    request_queue_size = 128  # a burst of connections is accepted (and answered), not left to SYN retries

    def __init__(self, address, handler, max_clients: int):
        self.slots = threading.BoundedSemaphore(max_clients)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.setblocking(False)  # the accept loop never waits on a client
                request.send(REFUSED)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client went away or stalled: nothing to report
            log.debug("preview: client %s: %r", client_address[0], exc)
        else:
            log.warning("preview: request from %s failed: %r", client_address[0], exc,
                        exc_info=log.isEnabledFor(logging.DEBUG))


class Preview:
    """The preview server; also a consumer (call it with each derained batch).

    Args:
        address: "HOST:PORT" (port 0 picks a free one; see `.url`).
        metrics: the figures to show and export.
        fps: most pictures per second encoded per camera and kind.
        token: when set, every request must carry it (`?token=` or `Authorization: Bearer`).
        max_clients: connections served at once; more get a 503 (MJPEG viewers: `max_viewers`).
        idle_timeout_s: a connection that sends (or reads) nothing this long is closed.
    """

    def __init__(self, address: str, metrics: Metrics, fps: float = 5.0, cameras: tuple[str, ...] = (),
                 token: str | None = None, max_clients: int = MAX_CLIENTS, idle_timeout_s: float = IDLE_TIMEOUT_S):
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            raise OutputError(f"--preview {address}: expected HOST:PORT")
        if max_clients < 1 or not idle_timeout_s > 0:
            raise OutputError(f"--preview: max_clients must be >= 1 and idle_timeout_s > 0 "
                              f"(got {max_clients}, {idle_timeout_s})")
        self.metrics, self.min_gap = metrics, 1.0 / fps
        self.cameras = list(cameras)
        self.token = token or None
        self.idle_timeout_s = idle_timeout_s
        self.viewers = threading.BoundedSemaphore(max_viewers(max_clients))
        self.jpegs: dict[tuple[str, str], bytes] = {}
        self.cond = threading.Condition()
        self._last: dict[str, float] = {}
        self.closed = False
        try:
            self.server = _Server((host or "127.0.0.1", int(port)), self._handler(), max_clients)
        except (OSError, OverflowError) as exc:
            raise OutputError(f"--preview {address}: cannot listen ({getattr(exc, 'strerror', None) or exc})") from None
        bound = self.server.server_address[0]
        self.url = f"http://{host or '127.0.0.1'}:{self.server.server_address[1]}/"
        if not _is_loopback(bound):
            log.warning("preview: listening on %s:%d, reachable from other machines%s", bound,
                        self.server.server_address[1], " (a token is required)" if self.token else
                        "; anyone who reaches it sees the cameras: set --preview-token to require a token")
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.2,), daemon=True, name="preview")
        self.thread.start()

    def __call__(self, batch: FrameBatch) -> None:
        now = time.monotonic()
        cam = batch.source_id
        if now - self._last.get(cam, 0.0) < self.min_gap:
            return
        self._last[cam] = now
        if cam not in self.cameras:
            self.cameras.append(cam)
        pictures = {"derained": batch.images[-1]}
        if batch.rainy is not None:
            pictures["rainy"] = batch.rainy[-1]
        encoded = {k: _jpeg(v) for k, v in pictures.items()}
        with self.cond:
            for kind, data in encoded.items():
                self.jpegs[(cam, kind)] = data
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()

    def page(self) -> str:
        snap = self.metrics.snapshot()
        names = self.cameras or [c["name"] for c in snap["cameras"]]
        tq = html.escape(f"?token={quote(self.token, safe='')}") if self.token else ""
        cams = "".join(CAM.format(name=html.escape(redact(n)), q=html.escape(quote(n, safe="")), tq=tq, stats="")
                       for n in names)
        return PAGE.format(cams=cams, tq=tq)

    def knows(self, camera: str) -> bool:
        with self.metrics.lock:
            return camera in self.cameras or camera in self.metrics.lanes

    def authorized(self, path: str, authorization: str | None) -> bool:
        """True without a token, else when the query's `token=` or a Bearer header matches it."""
        if self.token is None:
            return True
        given = parse_qs(urlsplit(path).query).get("token", [])
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "bearer":
            given.append(value.strip())
        want = self.token.encode()
        return any(hmac.compare_digest(g.encode(), want) for g in given)

    def _handler(self):
        preview = self

        class Handler(BaseHTTPRequestHandler):
            timeout = preview.idle_timeout_s  # socket timeout: an idle or non-reading client is cut off

            def setup(self) -> None:
                # The request's head within idle_timeout_s in all: the socket timeout is per read,
                # and a client trickling a byte at a time (slowloris) held its slot for ever, so
                # 32 of them locked everyone out, the token checked only after the head.
                super().setup()
                self._head = threading.Timer(preview.idle_timeout_s, self._cut)
                self._head.daemon = True
                self._head.start()

            def _cut(self) -> None:
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def parse_request(self) -> bool:
                ok = super().parse_request()
                self._head.cancel()  # the head is in
                return ok

            def finish(self) -> None:
                self._head.cancel()
                super().finish()

            def log_message(self, *args) -> None:
                pass

            head_only = False

            def do_HEAD(self) -> None:  # uptime checkers ask HEAD /metrics (it was 501)
                self.head_only = True
                self.do_GET()

            def do_GET(self) -> None:
                try:
                    self._get()
                except OSError as exc:  # the client went away mid-answer: one debug line, no traceback
                    log.debug("preview: client %s: %r", self.client_address[0], exc)
                    self.close_connection = True

            def _get(self) -> None:
                if not preview.authorized(self.path, self.headers.get("Authorization")):
                    return self._send(401, "text/plain", b"token required: ?token=... or Authorization: Bearer ...\n",
                                      {"WWW-Authenticate": 'Bearer realm="derain preview"'})
                parts = [unquote(p) for p in self.path.split("?")[0].split("/") if p]
                if not parts:
                    return self._send(200, "text/html; charset=utf-8", preview.page().encode())
                if parts == ["metrics"]:
                    return self._send(200, "text/plain; version=0.0.4; charset=utf-8",
                                      preview.metrics.prometheus().encode())
                if parts == ["stats.json"]:
                    return self._send(200, "application/json", json.dumps(preview.metrics.snapshot()).encode())
                if len(parts) == 3 and parts[0] == "frame" and parts[2] in ("rainy.jpg", "derained.jpg") \
                        and preview.knows(parts[1]):
                    data = preview.jpegs.get((parts[1], parts[2][:-4])) or _no_picture()
                    return self._send(200, "image/jpeg", data)
                if len(parts) == 3 and parts[0] == "mjpeg" and parts[2] in ("rainy", "derained") \
                        and preview.knows(parts[1]):
                    if self.head_only:
                        return self._send(200, "multipart/x-mixed-replace; boundary=frame", b"")
                    if not preview.viewers.acquire(blocking=False):
                        return self._send(503, "text/plain", b"too many MJPEG viewers; try again later\n",
                                          {"Retry-After": "5"})
                    try:
                        return self._mjpeg(parts[1], parts[2])
                    finally:
                        preview.viewers.release()
                self._send(404, "text/plain", b"not found\n")

            def _send(self, code: int, kind: str, body: bytes, headers: dict | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-cache")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if not self.head_only:
                    self.wfile.write(body)

            def _mjpeg(self, cam: str, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                seen = None  # the camera's picture last sent (None: none yet)
                try:
                    while True:
                        with preview.cond:
                            preview.cond.wait_for(lambda: preview.closed or preview.jpegs.get((cam, kind)) is not seen,
                                                  timeout=preview.idle_timeout_s)
                            if preview.closed:
                                return
                            data = preview.jpegs.get((cam, kind))
                        if data is seen:  # nothing new (a camera down): the last picture again, which
                            data = seen or _no_picture()  # finds a viewer that left
                        else:
                            seen = data
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
                except OSError as exc:  # the viewer left, or stopped reading for idle_timeout_s
                    log.debug("preview: MJPEG client %s: %r", self.client_address[0], exc)
                    self.close_connection = True

        return Handler


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes() if ok else b""
