"""`--preview HOST:PORT`: a small web page with the rainy and derained pictures side by side.

    /                 the page: per camera, rainy | derained, and the live figures
    /frame/CAM/KIND.jpg   the latest picture (KIND: rainy or derained)
    /mjpeg/CAM/KIND   the pictures as an MJPEG stream (multipart/x-mixed-replace)
    /stats.json       the figures as JSON
    /metrics          the figures in Prometheus text format

The page first shows still JPEGs (so it finishes loading) and then switches each
picture to its MJPEG stream. Pictures are JPEG-encoded at most `fps` times a second,
off the video path's critical work, so watching costs the model little.
"""
from __future__ import annotations

import html
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import cv2
import numpy as np

from .errors import OutputError
from .frames import FrameBatch
from .live_metrics import Metrics

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
  fetch('/stats.json').then(function (r) {{ return r.json(); }}).then(function (s) {{
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
<figure><img alt="rainy" src="/frame/{q}/rainy.jpg" data-stream="/mjpeg/{q}/rainy"><figcaption>rainy</figcaption></figure>
<figure><img alt="derained" src="/frame/{q}/derained.jpg" data-stream="/mjpeg/{q}/derained">
<figcaption>derained</figcaption></figure></div><pre id="stats-{name}">{stats}</pre></div>"""


class Preview:
    """The preview server; also a consumer (call it with each derained batch).

    Args:
        address: "HOST:PORT" (port 0 picks a free one; see `.url`).
        metrics: the figures to show and export.
        fps: most pictures per second encoded per camera and kind.
    """

    def __init__(self, address: str, metrics: Metrics, fps: float = 5.0, cameras: tuple[str, ...] = ()):
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            raise OutputError(f"--preview {address}: expected HOST:PORT")
        self.metrics, self.min_gap = metrics, 1.0 / fps
        self.cameras = list(cameras)
        self.jpegs: dict[tuple[str, str], bytes] = {}
        self.cond = threading.Condition()
        self._last: dict[str, float] = {}
        self.closed = False
        try:
            self.server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), self._handler())
        except OSError as exc:
            raise OutputError(f"--preview {address}: cannot listen ({exc.strerror})") from None
        self.server.daemon_threads = True
        self.url = f"http://{host or '127.0.0.1'}:{self.server.server_address[1]}/"
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
        cams = "".join(CAM.format(name=html.escape(n), q=html.escape(n), stats="") for n in names)
        return PAGE.format(cams=cams)

    def _handler(self):
        preview = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                parts = [unquote(p) for p in self.path.split("?")[0].split("/") if p]
                if not parts:
                    return self._send(200, "text/html; charset=utf-8", preview.page().encode())
                if parts == ["metrics"]:
                    return self._send(200, "text/plain; version=0.0.4; charset=utf-8",
                                      preview.metrics.prometheus().encode())
                if parts == ["stats.json"]:
                    return self._send(200, "application/json", json.dumps(preview.metrics.snapshot()).encode())
                if len(parts) == 3 and parts[0] == "frame" and parts[2] in ("rainy.jpg", "derained.jpg"):
                    data = preview.jpegs.get((parts[1], parts[2][:-4])) or _jpeg(np.zeros((90, 160, 3), np.uint8))
                    return self._send(200, "image/jpeg", data)
                if len(parts) == 3 and parts[0] == "mjpeg" and parts[2] in ("rainy", "derained"):
                    return self._mjpeg(parts[1], parts[2])
                self._send(404, "text/plain", b"not found\n")

            def _send(self, code: int, kind: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                self.wfile.write(body)

            def _mjpeg(self, cam: str, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                last = None
                try:
                    while True:
                        with preview.cond:
                            preview.cond.wait_for(lambda: preview.closed or
                                                  preview.jpegs.get((cam, kind)) is not last, timeout=5)
                            if preview.closed:
                                return
                            data = preview.jpegs.get((cam, kind))
                        if data is None or data is last:
                            continue
                        last = data
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
                except OSError:
                    return

        return Handler


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes() if ok else b""
