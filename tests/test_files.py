"""`derain run` on real encoded media: faithful output checked with ffprobe, and every failure mode."""
import os
import signal
import subprocess
import sys
import threading
import time

import av
import numpy as np
import pytest
from media import make_video
from probe import audio_streams, ffprobe, frame_pts, video_stream

from pipeline.cli import main
from pipeline.config import load_settings
from pipeline.files import derain_file
from pipeline.settings import RunSettings
from pipeline.sinks import partial_path

LOCAL = load_settings(RunSettings, None, {"model.profile": "identity", "workers.backend": "local"})


def decode_all(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_round_trip_keeps_frames_timestamps_audio_and_metadata(tmp_path, ray_session):
    src = make_video(tmp_path / "in.mp4", frames=30, audio=True, vfr=True, rotation=90,
                     metadata={"title": "rainy street", "comment": "camera 7"})
    out = tmp_path / "out.mp4"
    code = main(["run", str(src), "-o", str(out), "--profile", "identity"])  # real Ray actors
    assert code == 0
    a, b = ffprobe(src), ffprobe(out)
    va, vb = video_stream(a), video_stream(b)
    assert vb["nb_read_frames"] == va["nb_read_frames"] == "30"
    assert (vb["width"], vb["height"]) == (va["width"], va["height"])
    assert frame_pts(out) == frame_pts(src)  # variable frame rate survives, frame by frame
    assert vb["time_base"] == va["time_base"]
    assert float(b["format"]["duration"]) == pytest.approx(float(a["format"]["duration"]), abs=0.05)
    (aa,), (ab,) = audio_streams(a), audio_streams(b)
    assert (ab["codec_name"], ab["nb_read_frames"], ab["duration"]) == (aa["codec_name"], aa["nb_read_frames"],
                                                                       aa["duration"])
    assert b["format"]["tags"]["title"] == "rainy street" and b["format"]["tags"]["comment"] == "camera 7"
    rot = [sd for sd in vb.get("side_data_list", []) if "rotation" in sd]
    assert rot and abs(rot[0]["rotation"]) == 90


def test_frames_come_back_in_order_through_ray(tmp_path, ray_session):
    src = make_video(tmp_path / "in.mkv", frames=40)
    out = tmp_path / "out.mkv"
    settings = load_settings(RunSettings, None, {"model.profile": "identity", "batching.max_batch": 3})
    stats = derain_file(src, out, settings)
    assert stats.frames_out == 40 and stats.dropped == 0
    before, after = decode_all(src), decode_all(out)
    assert len(after) == 40
    # identity model: each output frame matches its own input frame better than any neighbour
    for i in range(1, 39):
        err = [np.abs(after[i].astype(int) - before[j]).mean() for j in (i - 1, i, i + 1)]
        assert err[1] < min(err[0], err[2])


def test_a_killed_worker_is_replaced_and_no_frame_is_lost(tmp_path, ray_session):
    from pipeline.workers import ModelSettings, RayPool, WorkerSettings

    src = make_video(tmp_path / "in.mp4", frames=48)
    pool = RayPool(ModelSettings(profile="identity", delay_ms=40), WorkerSettings(count=1, threads=1))
    pid = pool.pids()[0]
    killer = threading.Timer(0.6, os.kill, (pid, signal.SIGKILL))
    killer.start()
    try:
        stats = derain_file(src, tmp_path / "out.mp4", LOCAL, pool=pool)
        assert pool.pids()[0] != pid  # Ray started a new actor
    finally:
        killer.cancel()
        pool.close()
    assert stats.worker_restarts >= 1
    assert stats.frames_out == 48
    assert frame_pts(tmp_path / "out.mp4") == frame_pts(src)


@pytest.mark.parametrize("codec,name", [("h265", "hevc"), ("av1", "av1")])
def test_codec_is_configurable(tmp_path, codec, name):
    src = make_video(tmp_path / "in.mp4", frames=8)
    settings = load_settings(RunSettings, None, {"model.profile": "identity", "workers.backend": "local",
                                                 "encode.codec": codec, "encode.crf": 30})
    derain_file(src, tmp_path / "out.mp4", settings)
    v = video_stream(ffprobe(tmp_path / "out.mp4"))
    assert v["codec_name"] == name and v["nb_read_frames"] == "8"


def test_image_folder_to_video_and_back(tmp_path, shared_data):
    frames = shared_data / "ntu_realrain_video" / "rb2_Rain"
    video = tmp_path / "rb2.mp4"
    derain_file(frames, video, LOCAL)
    v = video_stream(ffprobe(video))
    assert v["nb_read_frames"] == "60" and (v["width"], v["height"]) == (640, 360)
    back = tmp_path / "frames"
    derain_file(video, back, LOCAL)
    assert len(list(back.glob("*.png"))) == 60
    named = tmp_path / "named"
    derain_file(frames, named, LOCAL)
    assert sorted(p.name for p in named.iterdir())[:2] == ["00001.png", "00002.png"]


def test_truncated_file_keeps_every_decodable_frame_and_says_so(tmp_path, capsys):
    src = make_video(tmp_path / "in.mp4", frames=60, size=(160, 120))
    # Move the index to the front (as cameras and faststart do), then cut the file short.
    fast = tmp_path / "fast.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-c", "copy", "-movflags", "faststart", str(fast)],
                   check=True)
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    out = tmp_path / "out.mp4"
    code = main(["run", str(cut), "-o", str(out), "--profile", "identity", "--backend", "local"])
    captured = capsys.readouterr()
    assert code == 0
    assert "cut.mp4: the input looks truncated" in captured.err
    n = int(video_stream(ffprobe(out))["nb_read_frames"])
    assert 20 < n < 60


@pytest.mark.parametrize("kind,match", [
    ("missing", "file not found"),
    ("empty", "file is empty"),
    ("text", "not a readable video"),
    ("audio-only", "has no video stream"),
])
def test_bad_inputs_name_the_file_and_leave_no_output(tmp_path, capsys, kind, match):
    src = tmp_path / "in.mp4"
    if kind == "empty":
        src.write_bytes(b"")
    elif kind == "text":
        src.write_text("hello, not a video")
    elif kind == "audio-only":
        src = tmp_path / "in.m4a"
        with av.open(str(src), "w") as c:
            s = c.add_stream("aac", rate=48000)
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 48000, 0
            c.mux(s.encode(f))
            c.mux(s.encode(None))
    out = tmp_path / "out.mp4"
    code = main(["run", str(src), "-o", str(out), "--profile", "identity", "--backend", "local"])
    err = capsys.readouterr().err
    assert code == 1 and str(src) in err and match in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not partial_path(out).exists()


def test_existing_output_needs_overwrite(tmp_path, capsys):
    src = make_video(tmp_path / "in.mp4", frames=4)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    args = ["run", str(src), "-o", str(out), "--profile", "identity", "--backend", "local"]
    assert main(args) == 1
    assert "already exists (use --overwrite" in capsys.readouterr().err and out.read_bytes() == b"precious"
    assert main(args + ["--overwrite"]) == 0
    assert video_stream(ffprobe(out))["nb_read_frames"] == "4"


def test_unwritable_output_is_named(tmp_path, capsys):
    src = make_video(tmp_path / "in.mp4", frames=4)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "out.mp4"
    assert main(["run", str(src), "-o", str(out), "--profile", "identity", "--backend", "local"]) == 1
    assert str(out) in capsys.readouterr().err


def test_ctrl_c_removes_the_partial_output(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=200)
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(src), "-o", str(out),
                             "--config", str(_slow_config(tmp_path))], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not partial_path(out).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert not out.exists() and not partial_path(out).exists()


def _slow_config(tmp_path):
    path = tmp_path / "slow.yaml"
    path.write_text("model: {profile: identity, delay_ms: 30}\nworkers: {backend: local}\n")
    return path
