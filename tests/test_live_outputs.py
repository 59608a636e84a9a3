"""Live outputs and figures: the preview page in headless Chromium, /metrics, UDP/HTTP/RTSP restreams,
and the small parts (backoff, settings, timestamps) on their own."""
from __future__ import annotations

import http.client
import logging
import random
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.config import from_dict, load_settings
from pipeline.errors import ConfigError, OutputError
from pipeline.frames import FrameBatch
from pipeline.sources.live import CLOCK, Backoff, is_live
from pipeline.cameras import run_live
from pipeline.bench.cameras import RtspCamera, free_port
from pipeline.stats import Metrics
from pipeline.settings import RunSettings
from pipeline.sources.files import SourceInfo
from pipeline.sinks.streams import restream_sink

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "runs" / "test-output"  # git-ignored; the screenshot is kept here to look at
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def settings(**flags) -> RunSettings:
    base = {"model.profile": "identity", "workers.backend": "local", "batching.max_batch": 1}
    base.update(flags)
    return load_settings(RunSettings, None, base)


def run_in_thread(inputs, s):
    box = {}

    def main():
        box["result"] = run_live(inputs, s, signals=False, on_start=lambda r: box.setdefault("runner", r))

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while "runner" not in box and time.monotonic() < end:
        time.sleep(0.05)
    return thread, box


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium")
def test_preview_page_in_headless_chromium_and_metrics(tmp_path):
    port = free_port()
    with RtspCamera(size="160x120", fps=25) as camera:
        thread, box = run_in_thread([camera.url()], settings(**{"live.preview": f"127.0.0.1:{port}"}))
        base = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 20
        while time.monotonic() < end:
            text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
            if 'derain_frames_out_total{camera="cam0"}' in text and " 0\n" not in text.split("frames_out_total")[1][:30]:
                break
            time.sleep(0.2)
        shot = tmp_path / "preview.png"
        profile = tmp_path / "chromium-profile"
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--window-size=900,560", f"--screenshot={shot}",
                        "--virtual-time-budget=3000", f"{base}/"],
                       capture_output=True, timeout=90)
        jpeg = urllib.request.urlopen(f"{base}/frame/cam0/derained.jpg", timeout=5).read()
        with urllib.request.urlopen(f"{base}/mjpeg/cam0/rainy", timeout=5) as mjpeg:
            head = mjpeg.read(200)
        page = urllib.request.urlopen(f"{base}/", timeout=5).read().decode()
        box["runner"].stop()
        thread.join(30)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, OUTPUT / "preview.png")
    for needle in ("derain_frames_in_total", "derain_frames_dropped_total", "derain_fps",
                   "derain_latency_seconds_bucket", "derain_queue_depth", "derain_reconnects_total",
                   "derain_workers_alive 1"):
        assert needle in text
    assert shot.stat().st_size > 5000
    assert jpeg[:2] == b"\xff\xd8" and b"--frame" in head and b"image/jpeg" in head
    assert "rainy" in page and "derained" in page
    # The screenshot shows the two pictures: the image area is not a blank page.
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.std() > 10


def test_metrics_text_and_exact_counters():
    m = Metrics()
    lane = m.lane('a"b', "rtsp://x")
    lane.frames_in, lane.dropped = 10, 3
    lane.output([time.monotonic() - 0.04] * 7, time.monotonic())
    text = m.prometheus()
    assert 'derain_frames_out_total{camera="a\\"b"} 7' in text
    assert 'derain_latency_seconds_bucket{camera="a\\"b",le="0.05"} 7' in text
    assert 'derain_latency_seconds_count{camera="a\\"b"} 7' in text
    assert m.snapshot()["cameras"][0]["latency"]["p50"] == pytest.approx(0.04, abs=0.01)


def test_backoff_doubles_up_to_the_cap_with_jitter():
    b = Backoff(0.25, 1.0, jitter=0.2, rng=random.Random(1))
    delays = [b.next() for _ in range(6)]
    for d, nominal in zip(delays, [0.25, 0.5, 1.0, 1.0, 1.0, 1.0]):
        assert 0.8 * nominal <= d <= 1.2 * nominal
    assert len(set(delays)) == 6  # jitter spreads cameras that dropped together


@pytest.mark.parametrize("uri, live", [("rtsp://h/x", True), ("http://h/a.m3u8", True), ("udp://127.0.0.1:5000", True),
                                       ("tcp://h:1", True), ("/dev/video0", True), ("clip.mp4", False)])
def test_is_live(uri, live):
    assert is_live(uri) is live


@pytest.mark.parametrize("live, match", [
    ({"first_tries": 0}, "live.first_tries: must be an integer >= 1"),
    ({"backoff_s": 2.0, "backoff_max_s": 1.0}, "live.backoff_max_s: must be >= backoff_s"),
    ({"queue_size": 4}, "live.queue_size: moved to batching.queue_size"),
    ({"transport": "sctp"}, "live.transport: must be one of"),
    ({"cameras": [{"name": "a"}]}, r"live.cameras\[0\].url: must be set"),
    ({"cameras": [{"url": "rtsp://a", "name": "x"}, {"url": "rtsp://b", "name": "x"}]}, "names must be unique"),
    ({"recconect_tries": 1}, "did you mean 'reconnect_tries'"),
])
def test_bad_live_settings_are_named(live, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(RunSettings, {"live": live}, source="configs/live.yaml")


@pytest.mark.parametrize("name", ["live.yaml", "cameras.yaml"])
def test_shipped_live_configs_load(name):
    s = load_settings(RunSettings, REPO / "configs" / name)
    assert s.batching.for_input(s.model, live=True).policy == "drop-oldest"


def _batch(i: int) -> FrameBatch:
    img = np.full((1, 64, 96, 3), (i * 7) % 255, np.uint8)
    return FrameBatch(img, (i,), (i * 3600,), (CLOCK,), "cam0", (time.monotonic(),))


def test_keep_segments_holds_across_restarts_and_a_restart_never_overwrites(tmp_path):
    """Only the run's own segments were counted: a camera service that restarted grew the folder
    without bound. Another camera's segments and other files stay."""
    from pipeline.sinks.streams import SegmentRecorder

    info = SourceInfo("test", 96, 64, CLOCK, rate=25)
    (tmp_path / "other-20260101-000000-00000.mp4").write_bytes(b"x")
    (tmp_path / "gate-notes.txt").write_text("mine")
    names = []
    for run in range(3):
        rec = SegmentRecorder(tmp_path, info, name="gate", segment_s=0.2, keep=2)
        for i in range(15):  # 0.6 s: three segments a run
            rec.write(_batch(i))
        rec.close()
        names.append(sorted(p.name for p in tmp_path.glob("gate-*.mp4")))
        assert len(names[-1]) == 2
    assert len(set(names[0]) | set(names[1]) | set(names[2])) == 6  # no run wrote over another's file
    assert (tmp_path / "other-20260101-000000-00000.mp4").exists() and (tmp_path / "gate-notes.txt").exists()


def test_a_second_recorder_of_one_camera_name_in_one_folder_is_refused(tmp_path):
    """Two runs recording `cam0` into one folder wrote over each other's segments (8 made, 6 left)."""
    from pipeline.sinks.streams import SegmentRecorder

    info = SourceInfo("test", 96, 64, CLOCK, rate=25)
    first = SegmentRecorder(tmp_path, info, name="cam0", segment_s=0.2)
    with pytest.raises(OutputError, match=f"{tmp_path}: another recorder is writing cam0's segments there"):
        SegmentRecorder(tmp_path, info, name="cam0", segment_s=0.2)
    SegmentRecorder(tmp_path, info, name="cam1", segment_s=0.2).close()  # another name is another recorder
    first.close()
    SegmentRecorder(tmp_path, info, name="cam0", segment_s=0.2).close()  # free again once closed


def test_segments_are_pruned_by_number_not_by_the_local_time_in_their_names(tmp_path):
    """When summer time ends the clock in the names goes back an hour: the newest segment's
    stamp sorts first, and pruning by name deleted it."""
    from pipeline.sinks.streams import SegmentRecorder

    info = SourceInfo("test", 96, 64, CLOCK, rate=25)
    older = tmp_path / "gate-20261025-025959-00007.mp4"  # written in summer time
    newer = tmp_path / "gate-20261025-020001-00008.mp4"  # an hour "earlier", after the change
    older.write_bytes(b"x")
    newer.write_bytes(b"x")
    SegmentRecorder(tmp_path, info, name="gate", segment_s=0.2, keep=1).close()
    assert newer.exists() and not older.exists()


def test_an_http_restream_holds_no_thread_for_a_trickling_or_extra_client(monkeypatch):
    """A client sending its request a byte at a time reset the per-read timeout for ever (a
    thread each, no cap: 300 clients, 200 threads); now the head has 5 s in all and the viewers
    are capped."""
    import socket

    from pipeline.sinks import streams

    monkeypatch.setattr(streams, "MAX_VIEWERS", 3)
    server = streams.MpegTsServer("127.0.0.1", 0, SourceInfo("test", 96, 64, CLOCK, rate=25), http=True)
    try:
        slow = socket.create_connection(("127.0.0.1", server.port))
        start, closed = time.monotonic(), False
        while not closed and time.monotonic() - start < 9:
            try:
                slow.sendall(b"G")
                slow.settimeout(1.0)
                closed = slow.recv(1) == b""
            except socket.timeout:
                pass
            except OSError:
                closed = True
        assert closed and 4 < time.monotonic() - start < 8
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
        time.sleep(0.5)
        refused = 0
        for c in idle:
            c.settimeout(0.5)
            try:
                refused += c.recv(1) == b""  # closed at once: no slot left
            except (socket.timeout, OSError):
                pass
        assert refused == 2
        for c in [slow, *idle]:
            c.close()
    finally:
        server.close()


def test_a_segment_of_a_stream_that_starts_late_keeps_its_first_frames(tmp_path):
    """A segment's clock starts at its first frame; the input's start (a TS's 1.4 s, played with
    --realtime) was taken off once more, so frames before it fell below zero and were lost."""
    from probe import ffprobe, video_stream

    from pipeline.sinks.streams import SegmentRecorder

    rec = SegmentRecorder(tmp_path, SourceInfo("test", 96, 64, CLOCK, rate=25, start=1.4), name="late", segment_s=60)
    for i in range(10):
        rec.write(_batch(i))
    rec.close()
    (segment,) = tmp_path.glob("late-*.mp4")
    v = video_stream(ffprobe(segment))
    assert v["nb_read_frames"] == "10" and float(v["start_time"]) < 0.05


def test_udp_and_http_restreams_reach_a_viewer():
    info = SourceInfo("test", 96, 64, CLOCK, rate=25)
    udp_port, http_port = free_port(), free_port()
    got: dict[str, int] = {}

    def view(name, url, **kw):
        try:
            with av.open(url, timeout=(5, 5), **kw) as c:
                got[name] = sum(1 for _ in zip(range(10), c.decode(video=0)))
        except av.FFmpegError as exc:
            got[name] = repr(exc)

    viewers = [threading.Thread(target=view, args=("udp", f"udp://127.0.0.1:{udp_port}"), daemon=True)]
    viewers[0].start()
    time.sleep(0.5)  # the UDP viewer listens before anything is sent
    udp = restream_sink(f"udp://127.0.0.1:{udp_port}", info)
    http = restream_sink(f"http://127.0.0.1:{http_port}", info)
    viewers.append(threading.Thread(target=view, args=("http", f"http://127.0.0.1:{http_port}/live.ts"), daemon=True))
    viewers[1].start()
    time.sleep(0.3)
    for i in range(150):
        udp.write(_batch(i))
        http.write(_batch(i))
        time.sleep(0.01)
        if len(got) == 2:
            break
    udp.close()
    http.close()
    for v in viewers:
        v.join(10)
    assert got == {"udp": 10, "http": 10}


def test_rtsp_push_restream_to_a_server():
    with RtspCamera(size="96x64", mounts=("cam",), record_mount="in") as server:
        info = SourceInfo("test", 96, 64, CLOCK, rate=25)
        sink = restream_sink(server.url("in"), info)
        for i in range(50):
            sink.write(_batch(i))
        assert sink.frames_written == 50
        sink.close()
    with pytest.raises(OutputError, match="rtsp://127.0.0.1:1/in"):
        restream_sink("rtsp://127.0.0.1:1/in", info)
    with pytest.raises(OutputError, match="unsupported restream URL"):
        restream_sink("ftp://x", info)


def test_an_rtsp_restream_whose_server_goes_away_is_pushed_again_when_it_is_back():
    """The server restarts: the writes in between fail at once (the runner counts them and says
    the outage once), and a write after it is back reconnects."""
    server = RtspCamera(size="96x64", mounts=("cam",), record_mount="in").start()
    try:
        info = SourceInfo("test", 96, 64, CLOCK, rate=25)
        sink = restream_sink(server.url("in"), info)
        for i in range(10):
            sink.write(_batch(i))
        server.kill()
        failed, i = 0, 10
        deadline = time.monotonic() + 10
        while failed < 3 and time.monotonic() < deadline:  # the push notices the server is gone
            try:
                sink.write(_batch(i))
            except OutputError as exc:
                failed += 1
                assert server.url("in") in str(exc)
            i += 1
            time.sleep(0.04)
        assert failed >= 3
        server.start()
        deadline, back = time.monotonic() + 20, False
        while not back and time.monotonic() < deadline:
            try:
                sink.write(_batch(i))
                back = True
            except OutputError:
                time.sleep(0.2)
            i += 1
        assert back and sink.frames_written > 10
        sink.close()
    finally:
        server.stop()


def test_a_live_run_says_a_failing_restream_once_counts_it_and_says_when_it_is_back(tmp_path, caplog):
    """It logged a traceback at every frame (gigabytes a day) and counted nothing."""
    from media import make_video

    clip = make_video(tmp_path / "in.mp4", frames=150, size=(96, 64), fps=25)
    server = RtspCamera(size="96x64", mounts=("cam",), record_mount="in").start()
    try:
        s = settings(**{"live.realtime": True, "live.restream": [server.url("in")], "live.duration_s": 5.5})
        thread, box = run_in_thread([str(clip)], s)
        time.sleep(1.5)
        server.kill()
        time.sleep(1.5)
        server.start()
        thread.join(30)
    finally:
        server.stop()
    lane = box["result"]["cameras"][0]
    said = [r.getMessage() for r in caplog.records if server.url("in") in r.getMessage()]
    assert len([m for m in said if " failed: " in m]) == 1 and len([m for m in said if "works again" in m]) == 1, said
    assert lane["output_errors"] > 0 and lane["frames_out"] > 100
    assert "Traceback" not in caplog.text and "partial output" not in caplog.text


def test_a_tcp_camera_that_goes_silent_is_a_stall_not_an_end(tmp_path):
    """Over TCP a read timeout ends the demuxer as a closed connection does: it was logged as
    'stream ended' and counted as no stall (RTSP's were)."""
    import socket
    import subprocess

    ts = tmp_path / "cam.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=25:duration=2",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mpegts", str(ts)], check=True)
    data = ts.read_bytes()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held = []

    def serve():  # half the stream, then silence on an open connection, each time it connects
        listener.settimeout(10)
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.sendall(data[:len(data) // 2 // 188 * 188])
            held.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    try:
        result = run_live([f"tcp://127.0.0.1:{port}"], settings(**{"live.read_timeout_s": 1.0, "live.duration_s": 4.0}),
                          signals=False)
    finally:
        listener.close()
        for c in held:
            c.close()
    cam = result["cameras"][0]
    assert cam["stalls"] >= 1 and cam["frames_in"] > 10, cam


class Feeder:
    """Our own restream output as the camera: a thread writing frames at 25 fps into it."""

    def __init__(self, url: str):
        self.sink = restream_sink(url, SourceInfo("test", 96, 64, CLOCK, rate=25))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stop.wait(0.04):
            self.sink.write(_batch(i))
            i += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sink.close()


@pytest.mark.parametrize("scheme", ["tcp", "http", "udp"])
def test_mpegts_inputs_over_tcp_http_udp(scheme):
    port = free_port()
    s = settings(**{"live.duration_s": 3.0, "live.open_timeout_s": 3.0})
    if scheme == "udp":  # the reader listens; the feeder sends datagrams to it
        box = {}
        thread = threading.Thread(target=lambda: box.setdefault("r", run_live(
            [f"udp://127.0.0.1:{port}"], s, signals=False)), daemon=True)
        thread.start()
        time.sleep(0.3)
        feeder = Feeder(f"udp://127.0.0.1:{port}")
        thread.join(30)
        result = box["r"]
    else:
        feeder = Feeder(f"{scheme}://127.0.0.1:{port}")
        result = run_live([f"{scheme}://127.0.0.1:{port}/live.ts"], s, signals=False)
    feeder.close()
    cam = result["cameras"][0]
    assert cam["frames_in"] == cam["frames_out"] + cam["dropped"]
    assert cam["frames_out"] >= 30 and cam["error"] is None, cam


def test_hls_over_http(tmp_path):
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=25", "-t", "3",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-f", "hls", "-hls_time", "1",
                    "-hls_list_size", "0", str(tmp_path / "index.m3u8")], check=True, timeout=60)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.m3u8"
        result = run_live([url], settings(**{"live.duration_s": 2.5, "batching.queue_size": 100}), signals=False)
    finally:
        server.shutdown()
        server.server_close()
    cam = result["cameras"][0]
    assert cam["frames_in"] == cam["frames_out"] + cam["dropped"]
    assert cam["frames_out"] >= 50, cam  # a finished playlist is read whole, then reopened like any live end


def test_live_clock_is_monotonic_through_missing_pts_reconnects_and_jumps():
    from fractions import Fraction

    from pipeline.frames import Frame
    from pipeline.sources.live import LiveClock

    img = np.zeros((4, 4, 3), np.uint8)
    tb = Fraction(1, 90000)
    clock = LiveClock(Fraction(25))

    def f(pts, arrival):
        return Frame(img, 0, pts, tb if pts is not None else None, "cam", arrival)

    conn1 = [f(None, 10.00), f(None, 10.04), f(7_000_000, 10.08), f(7_003_600, 10.12)]
    conn2 = [f(0, 12.12), f(3600, 12.16), f(1800, 12.20), f(3600 + 90000 * 60, 12.24)]  # back, then +60 s
    out, prev = [], None
    for conn in (conn1, conn2):
        prev = None
        for frame in conn:
            out.append(clock.stamp(frame, prev).pts)
            prev = frame
    assert all(b > a for a, b in zip(out, out[1:])), out
    assert out[3] - out[2] == 3600  # the camera's own step is kept within a connection
    assert out[4] - out[3] == 2 * 90000  # the outage's wall-clock gap across the reconnect
    assert out[7] - out[6] == round(0.04 * 90000)  # a 60 s jump is a discontinuity: wall clock instead


# --- the preview server's exposure: idle connections, thread bound, disconnects, token, redaction -----------

def _get(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    import urllib.error

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


class Streaming:
    """A Preview fed with fresh pictures by a thread, as a live run feeds it."""

    def __init__(self, **kwargs):
        from pipeline.sinks.preview import Preview

        self.metrics = Metrics()
        self.lane = self.metrics.lane("cam0", "rtsp://admin:s3cret@192.0.2.10/stream1")
        self.preview = Preview("127.0.0.1:0", self.metrics, fps=50, **kwargs)
        self.base = self.preview.url.rstrip("/")
        self.fed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self):
        while not self.stop.wait(0.02):
            batch = _batch(self.fed)
            self.preview(FrameBatch(batch.images, batch.seq, batch.pts, batch.time_base, "cam0", batch.arrival,
                                    rainy=batch.images))
            with self.metrics.lock:
                self.lane.output(batch.arrival, time.monotonic())
            self.fed += 1

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.preview.close()


def _handler_threads() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def test_preview_closes_idle_connections_and_bounds_its_threads():
    import socket

    s = Streaming(max_clients=8, idle_timeout_s=1.0)
    socks = []
    try:
        for _ in range(40):  # connect and say nothing, as a port scanner or a stuck client
            c = socket.create_connection(("127.0.0.1", s.preview.server.server_address[1]), timeout=5)
            socks.append(c)
        time.sleep(0.3)
        assert _handler_threads() <= 8  # never one thread per idle socket
        start = time.monotonic()
        refused = closed = 0
        for c in socks:
            data = c.recv(200)  # every socket is answered: 503 beyond the bound, closed when idle
            refused += data.startswith(b"HTTP/1.0 503")
            closed += data == b""
        took = time.monotonic() - start
        assert refused + closed == 40 and refused >= 16, (refused, closed)
        assert took < 4, f"idle connections were closed after {took:.1f} s (limit 1 s)"
        assert _handler_threads() <= 8
        fed = s.fed
        status, body, _ = _get(f"{s.base}/stats.json")  # served again once the idle ones are gone
        assert status == 200 and json_loads(body)["cameras"][0]["frames_out"] > 0
        time.sleep(0.2)
        assert s.fed > fed  # the stream ran on
        with urllib.request.urlopen(f"{s.base}/mjpeg/cam0/derained", timeout=5) as viewer:
            assert b"--frame" in viewer.read(300)  # a viewer that reads is not idle
            time.sleep(1.5)
            assert b"--frame" in viewer.read(3000)
        assert _get(f"{s.base}/mjpeg/nosuch/rainy")[0] == 404  # no thread parked on a camera that is not there
    finally:
        for c in socks:
            c.close()
        s.close()


def test_preview_cuts_a_client_that_trickles_its_request(tmp_path):
    """A byte every 0.3 s reset the per-read timeout for ever: 32 such clients locked everyone
    out of /metrics, the token notwithstanding. The head now has idle_timeout_s in all."""
    import socket

    s = Streaming(max_clients=8, idle_timeout_s=1.0)
    try:
        slow = socket.create_connection(("127.0.0.1", s.preview.server.server_address[1]), timeout=5)
        start, closed = time.monotonic(), False
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: yyyyyyyyyyyyyyyyyy":
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.3)
            slow.settimeout(0.01)
            try:
                if slow.recv(1) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
        assert closed and time.monotonic() - start < 3
        slow.close()
        assert _get(f"{s.base}/stats.json")[0] == 200
    finally:
        s.close()


def json_loads(body: bytes):
    import json

    return json.loads(body)


def test_a_client_that_disconnects_prints_no_traceback(capfd, caplog):
    import socket
    import struct

    s = Streaming()
    port = s.preview.server.server_address[1]
    try:
        for i in range(30):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
            path = ["/", "/frame/cam0/rainy.jpg", "/metrics", "/mjpeg/cam0/rainy"][i % 4]
            c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            if i % 2:
                c.recv(10)
            c.close()
        time.sleep(1.0)
        assert _get(f"{s.base}/stats.json")[0] == 200
    finally:
        s.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err, err
    assert "Traceback" not in caplog.text


def test_preview_token_is_required_on_every_request():
    s = Streaming(token="t0k-3n")
    try:
        for path in ("/", "/stats.json", "/metrics", "/frame/cam0/rainy.jpg", "/mjpeg/cam0/rainy"):
            status, _, headers = _get(f"{s.base}{path}")
            assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer"), path
            assert _get(f"{s.base}{path}?token=wrong")[0] == 401
            assert _get(f"{s.base}{path}", {"Authorization": "Bearer wrong"})[0] == 401
        status, page, _ = _get(f"{s.base}/?token=t0k-3n")
        assert status == 200 and b"/frame/cam0/rainy.jpg?token=t0k-3n" in page and b"/stats.json?token=t0k-3n" in page
        assert _get(f"{s.base}/metrics", {"Authorization": "Bearer t0k-3n"})[0] == 200
        assert _get(f"{s.base}/frame/cam0/derained.jpg?token=t0k-3n")[1][:2] == b"\xff\xd8"
        with urllib.request.urlopen(f"{s.base}/mjpeg/cam0/rainy?token=t0k-3n", timeout=5) as viewer:
            assert b"--frame" in viewer.read(300)
    finally:
        s.close()


def test_preview_warns_once_when_reachable_beyond_loopback(caplog):
    from pipeline.sinks.preview import Preview

    with caplog.at_level(logging.WARNING, logger="pipeline.sinks.preview"):
        Preview("127.0.0.1:0", Metrics()).close()
        assert "reachable" not in caplog.text
        Preview("0.0.0.0:0", Metrics()).close()
    lines = [r.getMessage() for r in caplog.records if "reachable from other machines" in r.getMessage()]
    assert len(lines) == 1 and "--preview-token" in lines[0]


@pytest.mark.parametrize("text, shown", [
    ("rtsp://admin:s3cret@192.0.2.10:554/stream1", "rtsp://admin:***@192.0.2.10:554/stream1"),
    ("rtsp://admin:p@ss@cam/x", "rtsp://admin:***@cam/x"),
    ("cannot open ([Errno 5] I/O error: 'rtsp://u:pw@h/p')", "cannot open ([Errno 5] I/O error: 'rtsp://u:***@h/p')"),
    ("http://cam/snap.cgi?user=admin&password=hunter2", "http://cam/snap.cgi?user=admin&password=***"),
    ("rtsp://cam:554/stream1", "rtsp://cam:554/stream1"),
    ("rtsp://a:b@h/1 and udp://c:d@h:5", "rtsp://a:***@h/1 and udp://c:***@h:5"),
])
def test_redact_masks_url_passwords(text, shown):
    from pipeline.redact import redact

    assert redact(text) == shown


def test_preview_page_stats_and_metrics_never_show_a_password():
    s = Streaming()
    try:
        s.lane.error = "rtsp://admin:s3cret@192.0.2.10/stream1: lost"
        name = "rtsp://admin:s3cret@192.0.2.10/x"  # even a camera named by its URL
        s.metrics.lane(name, name)
        bodies = [_get(f"{s.base}{p}")[1] for p in ("/", "/stats.json", "/metrics")]
    finally:
        s.close()
    for body in bodies:
        assert b"s3cret" not in body, body[:2000]
    assert b"rtsp://admin:***@192.0.2.10/stream1" in bodies[1]


def test_idle_preview_sockets_are_closed_while_a_live_run_records_on(tmp_path):
    """200 idle sockets on the preview of a real run: closed after the idle timeout (5 s), recording goes on."""
    import socket

    from media import make_video

    clip = make_video(tmp_path / "cam.mp4", frames=500, size=(96, 64), fps=25)
    port = free_port()
    s = settings(**{"live.realtime": True, "live.preview": f"127.0.0.1:{port}", "live.record": str(tmp_path / "rec"),
                    "live.segment_s": 1.0})
    thread, box = run_in_thread([str(clip)], s)
    socks = []
    try:
        time.sleep(1.0)
        for _ in range(200):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        opened = time.monotonic()
        segments = len(list((tmp_path / "rec").glob("cam0-*.mp4")))
        answered = 0
        for c in socks:
            try:
                c.recv(100)  # b"": closed after the idle timeout; or a 503 beyond the client bound
                answered += 1
            except socket.timeout:  # still open after 10 s
                pass
        took = time.monotonic() - opened
        assert answered == 200 and took < 8, (answered, took)  # every idle socket closed within ~5 s
        assert _handler_threads() <= 32
        assert len(list((tmp_path / "rec").glob("cam0-*.mp4"))) >= segments + 3  # recording went on meanwhile
        assert _get(f"http://127.0.0.1:{port}/stats.json")[0] == 200
    finally:
        for c in socks:
            c.close()
        box["runner"].stop()
        thread.join(30)
    cam = box["result"]["cameras"][0]
    assert cam["frames_in"] == cam["frames_out"] + cam["dropped"]


def test_preview_token_flag_of_the_cli(tmp_path):
    import sys

    from media import make_video

    clip = make_video(tmp_path / "cam.mp4", frames=250, size=(96, 64), fps=25)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(clip), "--realtime", "--profile",
                             "identity", "--backend", "local", "--preview", f"0.0.0.0:{port}", "--preview-token", "s3",
                             "--duration-s", "8"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        codes = None
        end = time.monotonic() + 30
        while codes is None and time.monotonic() < end:
            try:
                codes = (_get(f"http://127.0.0.1:{port}/stats.json")[0],
                         _get(f"http://127.0.0.1:{port}/stats.json?token=s3")[0],
                         _get(f"http://127.0.0.1:{port}/metrics", {"Authorization": "Bearer s3"})[0])
            except OSError:
                time.sleep(0.2)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert codes == (401, 200, 200)
    assert proc.returncode == 0 and "(token required)" in err  # the preview line: stderr, stdout is --json's
    assert err.count("reachable from other machines") == 1


def test_a_recorder_that_cannot_prune_says_so_and_holds_no_lock(tmp_path):
    """A folder named like a segment made pruning raise IsADirectoryError (a traceback), and the
    lock stayed held: the next try said another recorder was writing there."""
    from pipeline.sinks.streams import SegmentRecorder

    info = SourceInfo("test", 96, 64, CLOCK, rate=25)
    (tmp_path / "cam-20260101-000000-00001.mp4").mkdir()
    (tmp_path / "cam-20260101-000000-00002.mp4").write_bytes(b"x")
    for _ in range(2):
        with pytest.raises(OutputError, match=f"{tmp_path}: cannot keep its segments"):
            SegmentRecorder(tmp_path, info, name="cam", keep=1)


def test_preview_answers_head_and_no_picture_for_an_unknown_camera():
    """HEAD (uptime checkers) was 501; /frame/<any name>/... answered 200 with a placeholder."""
    s = Streaming()
    try:
        for path in ("/metrics", "/frame/cam0/rainy.jpg", "/mjpeg/cam0/rainy"):
            request = urllib.request.Request(f"{s.base}{path}", method="HEAD")
            with urllib.request.urlopen(request, timeout=5) as answer:
                assert answer.status == 200 and answer.read() == b"", path
        assert _get(f"{s.base}/frame/nosuch/rainy.jpg")[0] == 404
    finally:
        s.close()


def test_open_preview_tabs_never_lock_out_metrics():
    """Every MJPEG viewer holds its connection while it watches: 16 open tabs (two streams
    each) took all 32 connections and /metrics answered 503. Viewers now get three quarters."""
    from pipeline.sinks.preview import max_viewers

    s = Streaming(max_clients=8)
    viewers = []
    try:
        for _ in range(max_viewers(8)):
            viewer = urllib.request.urlopen(f"{s.base}/mjpeg/cam0/derained", timeout=5)
            assert b"--frame" in viewer.read(300)
            viewers.append(viewer)
        assert len(viewers) == 6
        assert _get(f"{s.base}/mjpeg/cam0/rainy")[0] == 503  # one more viewer: not now
        for path in ("/metrics", "/stats.json", "/"):
            assert _get(f"{s.base}{path}")[0] == 200, path
        viewers.pop().close()
        _until_a_viewer_is_let_in(s)  # its handler sees the closed socket at a picture or two
    finally:
        for viewer in viewers:
            viewer.close()
        s.close()


def _until_a_viewer_is_let_in(s, within_s: float = 8.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        try:
            with urllib.request.urlopen(f"{s.base}/mjpeg/cam0/rainy", timeout=5) as viewer:
                assert b"--frame" in viewer.read(300)
                return time.monotonic() - start
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            time.sleep(0.1)
        except (OSError, http.client.HTTPException):  # refused at the door (all connections held) or reset
            time.sleep(0.1)
    raise AssertionError(f"no viewer let in within {within_s} s")


def test_viewers_that_left_a_camera_that_is_down_free_their_places():
    """A viewer waited for the camera's next picture to write, and only a write finds one that
    left: with the camera down, tabs closed since kept every place. The last picture is sent
    again every idle_timeout_s."""
    from pipeline.sinks.preview import max_viewers

    s = Streaming(max_clients=4, idle_timeout_s=0.5)
    try:
        viewers = [urllib.request.urlopen(f"{s.base}/mjpeg/cam0/derained", timeout=5) for _ in range(max_viewers(4))]
        for viewer in viewers:
            assert b"--frame" in viewer.read(300)
        s.stop.set()  # the camera goes down
        s.thread.join(5)
        for viewer in viewers:
            viewer.close()
        assert _until_a_viewer_is_let_in(s) < 5  # 1-2 resent pictures each, not the camera's return
    finally:
        s.close()
