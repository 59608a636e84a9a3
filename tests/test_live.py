"""Live cameras end to end, against a real GStreamer RTSP server on 127.0.0.1 (no mocks).

Small frames (160x120) and the identity model keep the CPU use low; `delay_ms` stands in
for a model slower than the camera.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import pytest

from probe import ffprobe, frame_pts, video_stream

from pipeline.config import load_settings
from pipeline.errors import InputError, OutputError, SourceConnectionError
from pipeline.cameras import run_live
from pipeline.bench.cameras import RtspCamera, free_port
from pipeline.settings import LiveSettings, RunSettings
from plugins import Plugin

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs Debian python3-gi")


def settings(**live) -> RunSettings:
    flags = {"model.profile": "identity", "workers.backend": "local", "batching.max_batch": 1}
    flags.update({(k if "." in k else f"live.{k}"): v for k, v in live.items()})
    return load_settings(RunSettings, None, flags)


@pytest.fixture
def camera():
    with RtspCamera(size="160x120", fps=25, mounts=("cam", "cam2")) as cam:
        yield cam


class Background:
    """run_live in a thread, with a handle on the runner to stop it, and each output's time."""

    def __init__(self, inputs, s: RunSettings, **kwargs):
        self.runner = None
        self.result = None
        self.error = None
        self.out_times: list[tuple[float, int]] = []  # (monotonic, pts) per output frame
        started = threading.Event()

        def record(batch):
            now = time.monotonic()
            self.out_times.extend((now, p) for p in batch.pts)

        def on_start(runner):
            self.runner = runner
            started.set()

        def main():
            try:
                self.result = run_live(inputs, s, signals=False, on_start=on_start, consumers=[record], **kwargs)
            except BaseException as exc:  # noqa: BLE001
                self.error = exc
                started.set()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        started.wait(30)

    def wait_frames(self, n: int, timeout: float = 20) -> None:
        end = time.monotonic() + timeout
        while len(self.out_times) < n and time.monotonic() < end:
            time.sleep(0.05)
        assert len(self.out_times) >= n, f"only {len(self.out_times)} frames out after {timeout} s"

    def stop(self) -> dict:
        self.runner.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the live runner did not stop"
        if self.error:
            raise self.error
        return self.result


def exact(cam: dict) -> None:
    assert cam["frames_in"] == cam["frames_out"] + cam["dropped"], cam


def test_stream_derained_end_to_end_with_every_output(camera, tmp_path):
    tcp_port = free_port()
    s = settings(record=str(tmp_path / "rec"), segment_s=1.0, snapshot=str(tmp_path / "snap"),
                 snapshot_every_s=0.5, restream=[f"tcp://127.0.0.1:{tcp_port}"])
    run = Background([camera.url()], s, output=str(tmp_path / "out.mp4"))
    run.wait_frames(10)
    received = []
    with av.open(f"tcp://127.0.0.1:{tcp_port}", timeout=(5, 5)) as viewer:  # a restream client
        for frame in viewer.decode(video=0):
            received.append(frame.to_ndarray(format="rgb24").shape)
            if len(received) >= 25:
                break
    time.sleep(0.5)
    result = run.stop()
    cam = result["cameras"][0]
    exact(cam)
    assert cam["frames_out"] >= 40 and cam["error"] is None
    assert received[0] == (120, 160, 3)
    info = ffprobe(tmp_path / "out.mp4")
    assert int(video_stream(info)["nb_read_frames"]) == cam["frames_out"]
    pts = frame_pts(tmp_path / "out.mp4")
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    segments = sorted((tmp_path / "rec").glob("cam0-*.mp4"))
    assert len(segments) >= 2
    assert sum(int(video_stream(ffprobe(p))["nb_read_frames"]) for p in segments) == cam["frames_out"]
    assert (tmp_path / "snap" / "cam0-latest.jpg").stat().st_size > 0
    assert not list((tmp_path / "rec").glob(".*partial*"))


def test_a_camera_opens_without_a_probe_burst_and_one_whose_sdp_lacks_the_size_is_probed(monkeypatch, caplog):
    """FFmpeg's probe read ~1.2 s of frames before the first was decoded; they came out in one
    burst that the live queue (4 frames) dropped, 14-23 frames at every connect. The camera's
    frames arrive in real time, so a probed open cannot take under ~1 s; an unprobed one does."""
    from pipeline.sources import live

    with RtspCamera(size="160x120", fps=25, mounts=("cam",), mjpeg_mounts=("mjpeg",)) as cam:
        for mount, codec in (("cam", "h264"), ("mjpeg", "mjpeg")):
            took = []
            for _ in range(3):
                start = time.monotonic()
                with live.connect(cam.url(mount), LiveSettings()) as container:
                    took.append(time.monotonic() - start)
                    ctx = container.streams.video[0].codec_context
                    assert (ctx.name, ctx.width, ctx.height) == (codec, 160, 120)
            assert min(took) < 0.7, (mount, took)
        real, asked = live._sized, []

        def sized_once_probed(container) -> bool:  # as a camera whose SDP leaves the size out
            asked.append(container)
            return len(asked) > 1 and real(container)

        monkeypatch.setattr(live, "_sized", sized_once_probed)
        with caplog.at_level("DEBUG", logger="pipeline.sources.live"):
            start = time.monotonic()
            with live.connect(cam.url("cam"), LiveSettings()) as container:
                assert container.streams.video[0].codec_context.width == 160
        assert "opening it again, probed" in caplog.text and time.monotonic() - start > 0.7


@pytest.mark.slow
def test_server_killed_and_restarted_reconnects_and_resumes_within_3s(camera):
    s = settings(read_timeout_s=2.0, open_timeout_s=2.0)
    run = Background([camera.url()], s)
    run.wait_frames(25)
    camera.kill()
    time.sleep(2.0)
    camera.start()
    back = time.monotonic()
    deadline = back + 10
    while time.monotonic() < deadline and not any(t > back for t, _ in run.out_times):
        time.sleep(0.05)
    resumed = next((t for t, _ in run.out_times if t > back), None)
    time.sleep(1.0)
    result = run.stop()
    cam = result["cameras"][0]
    assert resumed is not None, "no output after the server came back"
    assert resumed - back < 3.0, f"output resumed {resumed - back:.2f} s after the server's return"
    assert cam["reconnects"] >= 1
    pts = [p for _, p in run.out_times]
    assert all(b > a for a, b in zip(pts, pts[1:])), "output timestamps went backwards across the reconnect"
    exact(cam)


@pytest.mark.slow
def test_stalled_server_is_detected_by_the_read_timeout(camera):
    s = settings(read_timeout_s=1.0, open_timeout_s=1.0)
    run = Background([camera.url()], s)
    run.wait_frames(25)
    camera.pause()
    paused = time.monotonic()
    time.sleep(3.0)
    camera.resume()
    n = len(run.out_times)
    run.wait_frames(n + 25, timeout=15)
    result = run.stop()
    cam = result["cameras"][0]
    assert cam["stalls"] >= 1 and cam["reconnects"] >= 1, cam
    gap = max(b - a for (a, _), (b, _) in zip(run.out_times, run.out_times[1:]) if a >= paused - 0.5)
    assert gap >= 1.0  # the stall is real...
    exact(cam)  # ...and nothing went missing silently


def test_model_slower_than_camera_keeps_delay_bounded_and_counts_drops(camera):
    s = settings(**{"model.delay_ms": 100.0, "duration_s": 6.0})  # 10 fps model, 25 fps camera
    result = run_live([camera.url()], s, signals=False)
    cam = result["cameras"][0]
    exact(cam)
    assert cam["dropped"] > 0.3 * cam["frames_in"]
    # One frame waiting for the model plus one in it, plus the short queue: far under a second.
    assert cam["latency"]["p95"] < 2 * 0.1 + 0.3, cam["latency"]
    assert 6 <= cam["mean_fps"] <= 12


def test_two_cameras_share_the_pool_and_a_broken_one_stalls_nothing(camera, tmp_path):
    cams = [{"url": camera.url("cam"), "name": "north", "record": str(tmp_path / "north")},
            {"url": camera.url("cam2"), "name": "south", "record": str(tmp_path / "south")},
            {"url": camera.url("nope"), "name": "broken"}]
    s = load_settings(RunSettings, None, {
        "model.profile": "identity", "workers.backend": "local", "batching.max_batch": 2,
        "live.cameras": cams, "live.duration_s": 5.0, "live.first_tries": 2, "live.open_timeout_s": 2.0})
    result = run_live([], s, signals=False)
    by_name = {c["name"]: c for c in result["cameras"]}
    for name in ("north", "south"):
        cam = by_name[name]
        exact(cam)
        assert cam["frames_out"] >= 50 and cam["error"] is None, cam
        (segment,) = (tmp_path / name).glob(f"{name}-*.mp4")
        assert int(video_stream(ffprobe(segment))["nb_read_frames"]) == cam["frames_out"]
    assert "rtsp://127.0.0.1" in by_name["broken"]["error"] and "/nope" in by_name["broken"]["error"]


def test_sigterm_stops_cleanly_and_leaves_playable_files(camera, tmp_path):
    cmd = [sys.executable, "-m", "pipeline.cli", "run", camera.url(), "--profile", "identity", "--backend", "local",
           "-o", str(tmp_path / "out.mp4"), "--record", str(tmp_path / "rec"), "--segment-s", "1", "--json"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 30
        while len(list((tmp_path / "rec").glob("cam0-*.mp4"))) < 2 and time.monotonic() < end:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert err.count("SIGTERM: stopping; the outputs are closed and the figures follow") == 1, err  # why it ended

    cam = json.loads(out.strip().splitlines()[-1])["cameras"][0]
    exact(cam)
    assert int(video_stream(ffprobe(tmp_path / "out.mp4"))["nb_read_frames"]) == cam["frames_out"]
    segments = sorted((tmp_path / "rec").glob("cam0-*.mp4"))
    assert len(segments) >= 3  # the open segment was closed playable too
    assert sum(int(video_stream(ffprobe(p))["nb_read_frames"]) for p in segments) == cam["frames_out"]


def test_a_tcp_camera_that_never_sends_is_said_to_give_no_answer():
    """FFmpeg's words for the open timeout were 'Immediate exit requested'."""
    import socket

    from pipeline.sources.live import connect

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    url = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
    try:
        with pytest.raises(InputError, match=f"^{url}: no answer within 1 s \\(live.open_timeout_s\\)$"):
            connect(url, LiveSettings(open_timeout_s=1.0, read_timeout_s=1.0))
    finally:
        silent.close()


@pytest.mark.parametrize("what", ["never-answers", "wrong-path", "missing-camera"])
def test_bad_input_is_a_clear_error_naming_it_after_the_tries(what, camera, tmp_path):
    import socket

    silent = socket.socket()  # accepts TCP connections and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = {"never-answers": f"rtsp://127.0.0.1:{silent.getsockname()[1]}/cam",
           "wrong-path": camera.url("no-such-path"), "missing-camera": "/dev/video97"}[what]
    s = settings(first_tries=2, open_timeout_s=1.0, read_timeout_s=1.0, backoff_s=0.1)
    start = time.monotonic()
    try:
        with pytest.raises(SourceConnectionError, match=f"{url}: no connection after 2 tries"):
            run_live([url], s, signals=False, output=str(tmp_path / "out.mp4"))
    finally:
        silent.close()
    assert time.monotonic() - start < 10
    cli = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", url, "--profile", "identity",
                          "--backend", "local", "--tries", "1"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert cli.returncode == 1
    assert url in cli.stderr and "Traceback" not in cli.stderr
    assert sum("no connection after" in line for line in cli.stderr.splitlines()) == 1, cli.stderr  # said once


def test_when_every_camera_fails_each_error_is_said_once(tmp_path):
    urls = [f"rtsp://127.0.0.1:9/cam{i}" for i in range(2)]  # port 9 (discard): refused at once
    config = tmp_path / "cameras.yaml"
    config.write_text(json.dumps({"live": {"cameras": [{"name": f"c{i}", "url": u} for i, u in enumerate(urls)]}}))
    cli = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--config", str(config), "--profile",
                          "identity", "--backend", "local", "--tries", "1"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert cli.returncode == 1 and "Traceback" not in cli.stderr
    for url in urls:
        assert sum(f"{url}: no connection" in line for line in cli.stderr.splitlines()) == 1, cli.stderr
    assert cli.stderr.strip().splitlines()[-1].endswith("none of the 2 cameras gave a frame (each one's error is above)")


def test_realtime_file_plays_at_its_own_rate(tmp_path):
    from media import make_video

    clip = make_video(tmp_path / "cam.mp4", frames=50, size=(96, 64), fps=25)
    s = settings(realtime=True)
    start = time.monotonic()
    result = run_live([str(clip)], s, signals=False)
    took = time.monotonic() - start
    cam = result["cameras"][0]
    exact(cam)
    assert cam["frames_in"] == 50 and took >= 1.9  # 50 frames at 25 fps: two seconds, not at once


def test_stop_while_still_connecting_is_prompt_and_clean(tmp_path):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/cam"
    s = settings(first_tries=10, open_timeout_s=1.0, backoff_s=0.5, backoff_max_s=0.5)
    try:
        run = Background([url], s)
        time.sleep(1.5)
        start = time.monotonic()
        result = run.stop()
    finally:
        silent.close()
    assert time.monotonic() - start < 3  # not 10 tries later
    assert result["cameras"][0]["frames_in"] == 0 and result["cameras"][0]["error"] is None


def test_a_limited_camera_gives_up_naming_the_url_and_keeps_what_was_recorded(camera, tmp_path):
    s = settings(reconnect_tries=2, open_timeout_s=1.0, read_timeout_s=1.0, backoff_s=0.1, backoff_max_s=0.2,
                 record=str(tmp_path / "rec"), segment_s=60.0)
    run = Background([camera.url()], s)
    run.wait_frames(25)
    camera.kill()
    run.thread.join(20)
    assert not run.thread.is_alive(), "the camera did not give up"
    cam = run.result["cameras"][0]
    assert f"{camera.url()}: lost, and no reconnection after 2 tries" in cam["error"]
    exact(cam)
    (segment,) = (tmp_path / "rec").glob("cam0-*.mp4")
    assert int(video_stream(ffprobe(segment))["nb_read_frames"]) == cam["frames_out"] >= 25


def test_plugins_see_every_live_frame_in_order(camera, tmp_path):

    lines = tmp_path / "dets.jsonl"
    s = load_settings(RunSettings, {"plugins": [{"use": "jsonl", "with": {"path": str(lines)}}]},
                      {"model.profile": "identity", "workers.backend": "local", "batching.max_batch": 2})
    run = Background([camera.url()], s, output=str(tmp_path / "out.mp4"))
    run.wait_frames(20)
    cam = run.stop()["cameras"][0]
    rows = [json.loads(line) for line in lines.read_text().splitlines()]
    assert len(rows) == cam["frames_out"] == int(video_stream(ffprobe(tmp_path / "out.mp4"))["nb_read_frames"])
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(seqs) and rows[0]["source"] == "cam0"


FOREVER_SRC = '''
import time
from pathlib import Path
from plugins import Plugin

class Forever(Plugin):
    """A detector that never answers: sleeps forever in process() (marks when it starts)."""

    def __init__(self, marker):
        self.marker = marker

    def process(self, batch):
        Path(self.marker).touch()
        while True:
            time.sleep(3600)
'''


@pytest.mark.parametrize("case", ["inline-1s", "inline-default-sigterm-while-hanging", "actor-1s"])
def test_a_plugin_that_sleeps_forever_cannot_hold_a_live_run(case, tmp_path):
    """Frames keep coming past a hanging plugin, and SIGTERM ends the run within 10 s, playable."""

    import yaml

    from media import make_video

    (tmp_path / "forever.py").write_text(FOREVER_SRC)
    clip = make_video(tmp_path / "cam.mp4", frames=750, size=(96, 64), fps=25)  # 30 s as a camera
    marker = tmp_path / "hanging"
    entry = {"use": "forever:Forever", "with": {"marker": str(marker)}}
    if case.endswith("1s"):
        entry["timeout_s"] = 1.0
    if case.startswith("actor"):
        entry["ray"] = {"num_cpus": 0}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({"plugins": [entry]}))
    rec = tmp_path / "rec"
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(clip), "--realtime", "--config", str(tmp_path / "cfg.yaml"),
           "--profile", "identity", "--backend", "local", "-o", str(tmp_path / "out.mp4"), "--record", str(rec),
           "--segment-s", "1", "--json"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "RAY_ADDRESS": "local"}  # a fresh Ray, not a cluster
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        end = time.monotonic() + 90
        while not marker.exists() and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.1)
        assert marker.exists(), "the plugin was never called"
        if case.endswith("1s"):  # frames keep being written past the hang: 3 more 1-s segments
            hung = time.monotonic()
            while len(list(rec.glob("cam0-*.mp4"))) < 3 and time.monotonic() < hung + 30:
                time.sleep(0.1)
            assert len(list(rec.glob("cam0-*.mp4"))) >= 3, "no frames written past the hanging plugin"
        else:
            time.sleep(1.0)  # SIGTERM while the plugin's first call hangs (its limit is 10 s)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert took < 10, f"SIGTERM took {took:.1f} s to end the run"
    assert proc.returncode == 0, err
    cam = json.loads(out.strip().splitlines()[-1])["cameras"][0]
    exact(cam)
    assert cam["frames_out"] >= {"inline-1s": 50, "actor-1s": 25}.get(case, 1), cam
    assert int(video_stream(ffprobe(tmp_path / "out.mp4"))["nb_read_frames"]) == cam["frames_out"]
    segments = sorted(rec.glob("cam0-*.mp4"))
    assert sum(int(video_stream(ffprobe(p))["nb_read_frames"]) for p in segments) == cam["frames_out"]
    assert not list(tmp_path.rglob("*partial*"))
    assert "PluginTimeout" in err and "Traceback" not in err


class FailsAt(Plugin):
    """Raises on the batch holding frame `seq`."""

    def __init__(self, seq: int):
        self.seq = seq

    def process(self, batch):
        if self.seq in batch.seq:
            raise RuntimeError("detector crashed")
        return [None] * len(batch)


class AlwaysFails(Plugin):
    def process(self, batch):
        raise RuntimeError("detector down")


def test_a_plugin_that_always_fails_is_counted_in_stats_and_metrics(tmp_path):
    """on_error: skip: every frame still goes out; the failures reach /stats.json and /metrics."""
    from media import make_video

    clip = make_video(tmp_path / "cam.mp4", frames=30, size=(96, 64), fps=25)
    s = load_settings(RunSettings, {"plugins": [{"use": "test_live:AlwaysFails"}]},
                      {"model.profile": "identity", "workers.backend": "local", "live.realtime": True})
    box = {}
    result = run_live([str(clip)], s, signals=False, output=str(tmp_path / "out.mp4"),
                      on_start=lambda runner: box.setdefault("runner", runner))
    cam = result["cameras"][0]
    exact(cam)
    assert cam["frames_out"] == 30 and cam["plugin_errors"] >= 1 and cam["error"] is None
    assert int(video_stream(ffprobe(tmp_path / "out.mp4"))["nb_read_frames"]) == 30
    line = next(l for l in box["runner"].metrics.prometheus().splitlines()
                if l.startswith('derain_plugin_errors_total{camera="cam0"}'))
    assert int(line.split()[-1]) == cam["plugin_errors"]


def test_a_plugin_with_stop_policy_ends_a_live_run_cleanly(tmp_path):
    from media import make_video

    clip = make_video(tmp_path / "cam.mp4", frames=250, size=(96, 64), fps=25)
    s = load_settings(RunSettings, {"plugins": [{"use": "test_live:FailsAt", "with": {"seq": 20},
                                                 "on_error": "stop"}]},
                      {"model.profile": "identity", "workers.backend": "local", "live.realtime": True,
                       "live.record": str(tmp_path / "rec")})
    start = time.monotonic()
    result = run_live([str(clip)], s, signals=False, output=str(tmp_path / "out.mp4"))
    assert time.monotonic() - start < 5  # stopped at frame 20, not at the clip's end (10 s)
    cam = result["cameras"][0]
    exact(cam)
    assert "plugin failsat" in cam["error"] and "seq 20..20" in cam["error"] and "detector crashed" in cam["error"]
    assert 20 <= cam["frames_out"] < 100
    assert int(video_stream(ffprobe(tmp_path / "out.mp4"))["nb_read_frames"]) == cam["frames_out"]
    (segment,) = (tmp_path / "rec").glob("cam0-*.mp4")
    assert int(video_stream(ffprobe(segment))["nb_read_frames"]) == cam["frames_out"]


def test_cameras_sharing_a_jsonl_file_each_keep_their_lines(tmp_path):
    """Each camera's plugin chain opened the file afresh at its own offset: the longer camera's
    lines overwrote the other's (20 + 30 frames left 30 lines, all of one camera)."""
    from media import make_video

    clips = {"a": make_video(tmp_path / "a.mp4", frames=10, size=(64, 48), fps=25),
             "b": make_video(tmp_path / "b.mp4", frames=15, size=(64, 48), fps=25)}
    lines_path = tmp_path / "cams.jsonl"
    lines_path.write_text("an older run's line\n")  # replaced, once
    s = load_settings(RunSettings, {"plugins": [{"use": "jsonl", "with": {"path": str(lines_path)}}]},
                      {"model.profile": "identity", "workers.backend": "local", "live.realtime": True,
                       "live.cameras": [{"name": n, "url": str(c)} for n, c in clips.items()]})
    result = run_live([], s, signals=False)
    lines = [json.loads(line) for line in lines_path.read_text().splitlines()]
    for cam in result["cameras"]:
        assert [x["seq"] for x in lines if x["source"] == cam["name"]] == list(range(cam["frames_out"]))
    assert len(lines) == sum(cam["frames_out"] for cam in result["cameras"]) == 25


def test_camera_passwords_are_never_shown(camera, tmp_path, caplog):
    import urllib.request

    from pipeline.bench.cameras import free_port

    good = camera.url("cam").replace("rtsp://", "rtsp://admin:s3cret@")
    bad = camera.url("nope").replace("rtsp://", "rtsp://admin:s3cret@")
    port = free_port()
    cams = [{"url": good, "name": "north", "record": str(tmp_path / "rec")}, {"url": bad, "name": "broken"}]
    s = load_settings(RunSettings, None, {
        "model.profile": "identity", "workers.backend": "local", "live.cameras": cams, "live.first_tries": 1,
        "live.open_timeout_s": 2.0, "live.preview": f"127.0.0.1:{port}"})
    run = Background([], s)
    run.wait_frames(10)
    time.sleep(0.5)
    bodies = {p: urllib.request.urlopen(f"http://127.0.0.1:{port}{p}", timeout=5).read().decode()
              for p in ("/", "/stats.json", "/metrics")}
    result = run.stop()
    by_name = {c["name"]: c for c in result["cameras"]}
    assert by_name["north"]["frames_out"] >= 10  # the password reached the camera; it just is not shown
    for shown in (*bodies.values(), json.dumps(result), caplog.text):
        assert "s3cret" not in shown
    assert "rtsp://admin:***@127.0.0.1" in bodies["/stats.json"]
    assert by_name["broken"]["error"].startswith(bad.replace("s3cret", "***"))
    cli = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", bad, "--profile", "identity",
                          "--backend", "local", "--tries", "1", "--json"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert cli.returncode == 1 and "s3cret" not in cli.stderr + cli.stdout
    assert bad.replace("s3cret", "***") in cli.stderr


def test_a_temporal_profile_derains_a_live_camera_from_past_frames(camera, tmp_path):
    """temporal-fast live: causal windows (the two frames before), aligned, deflickered in the
    lane, with every frame accounted for."""
    s = load_settings(RunSettings, None, {"model.profile": "temporal-fast", "model.runtime": "torch",
                                          "model.deflicker": True, "workers.backend": "local",
                                          "workers.threads": 1, "batching.max_batch": 1})
    run = Background([camera.url("cam")], s)
    run.wait_frames(20, timeout=60)
    assert run.runner.pool.halo == (2, 0) and run.runner.pool.deflicker
    assert run.runner.pool.worker.derainer.align == "fast"
    cam = run.stop()["cameras"][0]
    exact(cam)
    assert cam["frames_out"] >= 20


def test_a_live_output_file_is_replaced_only_with_overwrite_and_audio_is_said_dropped(tmp_path, caplog):
    """A live run's -o claims the file before any camera opens, as a file run does; the source's
    audio, which live outputs do not carry, is said once instead of vanishing silently."""
    from media import make_video

    clip = make_video(tmp_path / "cam.mp4", frames=10, size=(96, 64), fps=25, audio=True)
    out = tmp_path / "keep.mp4"
    out.write_text("precious")
    s = load_settings(RunSettings, None, {"model.profile": "identity", "workers.backend": "local",
                                          "live.realtime": True})
    with pytest.raises(OutputError, match="keep.mp4: already exists"):
        run_live([str(clip)], s, signals=False, output=str(out))
    assert out.read_text() == "precious"
    with caplog.at_level("WARNING", logger="pipeline.sources.live"):
        result = run_live([str(clip)], s, signals=False, output=str(out), overwrite=True)
    assert result["cameras"][0]["frames_out"] == 10
    assert int(video_stream(ffprobe(out))["nb_read_frames"]) == 10
    assert [r.message for r in caplog.records if "carry the derained video only" in r.message] == \
        [f"{clip}: has audio; live outputs (recordings, restreams, -o) carry the derained video only"]


def test_the_global_outputs_reach_the_cameras_of_a_config_or_are_refused(tmp_path):
    """--record with live.cameras recorded nothing, without a word; -o with two cameras had both
    write one file; --restream with two inputs was dropped; a name with a slash made folders."""
    from pipeline.cameras import cameras_of
    from pipeline.errors import ConfigError

    cams = [{"url": "rtsp://h/a", "name": "a"}, {"url": "rtsp://h/b", "name": "b", "record": str(tmp_path / "own")}]
    live = load_settings(RunSettings, None, {"live.cameras": cams, "live.record": str(tmp_path / "rec"),
                                             "live.snapshot": str(tmp_path / "snaps")}).live
    got = cameras_of([], live)
    assert [(c.record, c.snapshot) for c in got] == [(str(tmp_path / "rec"), str(tmp_path / "snaps")),
                                                      (str(tmp_path / "own"), str(tmp_path / "snaps"))]
    two = load_settings(RunSettings, None, {"live.restream": ["rtsp://h/out"]}).live
    with pytest.raises(ConfigError, match="live.restream .*one URL carries one camera, and there are 2"):
        cameras_of(["rtsp://h/a", "rtsp://h/b"], two)
    assert cameras_of(["rtsp://h/a"], two)[0].restream == ["rtsp://h/out"]
    s = load_settings(RunSettings, None, {"live.cameras": cams})
    with pytest.raises(ConfigError, match="one file holds one camera, and there are 2"):
        run_live([], s, output=str(tmp_path / "one.mp4"), signals=False)
    with pytest.raises(Exception, match=r"name: 'gate/north' names the camera's files"):
        load_settings(RunSettings, None, {"live.cameras": [{"url": "rtsp://h/a", "name": "gate/north"}]})
