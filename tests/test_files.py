"""`derain run` on real encoded media: faithful output checked with ffprobe, and every failure mode."""
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from media import cut_file, make_video
from probe import audio_streams, ffprobe, frame_pts, video_stream

from pipeline.cli import main
from pipeline.config import load_settings
from pipeline.errors import OutputError
from pipeline.files import derain_file
from pipeline.frames import FrameBatch
from pipeline.settings import RunSettings
from pipeline.sinks.files import MARKER, VideoFileSink, partial_path, partials, temp_token
from pipeline.sources.files import open_source

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
    from pipeline.settings import ModelSettings, WorkerSettings
    from pipeline.workers import RayPool

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
    assert sorted(p.name for p in named.glob("*.png"))[:2] == ["00001.png", "00002.png"]


def test_truncated_file_keeps_every_decodable_frame_and_says_so(tmp_path, caplog):
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
    assert code == 0
    said = [r.getMessage() for r in caplog.records if "looks truncated" in r.getMessage()]
    assert len(said) == 1 and "cut.mp4: " in said[0] and "every frame that decodes is kept" in said[0], said
    n = int(video_stream(ffprobe(out))["nb_read_frames"])
    assert 20 < n < 60


def test_damaged_packets_mid_file_are_passed_over_as_ffmpeg_does(tmp_path, caplog):
    """Garbage in the middle of the video data: ffmpeg decodes on past it; derain stopped at the
    first refused packet and lost the rest of the file."""
    src = make_video(tmp_path / "in.mp4", frames=60, size=(160, 120))
    data = bytearray(src.read_bytes())
    mdat = data.find(b"mdat")
    middle = mdat + (len(data) - mdat) // 2
    data[middle:middle + 400] = bytes((b * 7 + 13) & 255 for b in data[middle:middle + 400])
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    crc = subprocess.run(["ffmpeg", "-v", "error", "-i", str(bad), "-f", "framecrc", "-"], capture_output=True,
                         text=True).stdout
    ffmpeg_frames = sum(line.startswith("0,") for line in crc.splitlines())
    out = tmp_path / "out.mp4"
    assert _run(bad, out) == 0
    assert int(video_stream(ffprobe(out))["nb_read_frames"]) == ffmpeg_frames > 45
    said = [r.getMessage() for r in caplog.records if "damaged packet" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"{bad}: ") and "passed over (" in said[0]


@pytest.mark.parametrize("kind,match", [
    ("missing", "file not found"),
    ("empty", "file is empty"),
    ("text", "not a readable video"),
    ("audio-only", "has no video stream"),
    ("videos", "no images found; it holds videos: derain archive"),
])
def test_bad_inputs_name_the_file_and_leave_no_output(tmp_path, capsys, kind, match):
    src = tmp_path / "in.mp4"
    if kind == "videos":  # `run` on a folder of videos, where `archive` was meant
        src = tmp_path / "clips"
        make_video(src / "a.mp4", frames=2)
    elif kind == "empty":
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
    assert not out.exists() and not partials(out)


def test_an_output_name_that_is_only_an_extension_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `-o .mp4` made a hidden folder of PNGs named .mp4
    assert _run(make_video(tmp_path / "in.mp4", frames=2), ".mp4") == 1
    assert ".mp4: a name that is only an extension; give the file a name, as out.mp4" in \
        _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / ".mp4").exists()


def test_a_pipe_or_standard_input_is_refused_in_one_line_not_waited_on(tmp_path, capsys):
    """A pipe gives its bytes once; the input is read more than once (a second open waited for a
    writer that was gone, for ever)."""
    fifo = tmp_path / "stream.fifo"
    os.mkfifo(fifo)
    for name, what in ((str(fifo), "a pipe"), ("-", "standard input")):
        assert _run(name, tmp_path / "out.mp4") == 1
        line = _one_error_line(capsys.readouterr().err)
        assert f"{name}: is {what}; derain reads a video file more than once, so save the stream" in line
    assert not (tmp_path / "out.mp4").exists()


def test_a_folder_of_images_from_a_video_with_audio_says_the_audio_is_not_there(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=3, audio=True)
    stats = derain_file(src, tmp_path / "pngs", LOCAL)
    assert len(list((tmp_path / "pngs").glob("*.png"))) == 3
    assert [w for w in stats.warnings if "pngs: a folder of images holds frames only; the input's audio" in w]


def test_interlaced_input_is_said(tmp_path):
    src = tmp_path / "fields.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x96:rate=25:duration=0.2",
                    "-c:v", "libx264", "-flags", "+ildct+ilme", "-x264opts", "tff=1", "-pix_fmt", "yuv420p", str(src)],
                   check=True)
    stats = derain_file(src, tmp_path / "out.mp4", LOCAL)
    assert [w for w in stats.warnings if "fields.mp4: interlaced video; derained and written as progressive" in w]
    plain = derain_file(make_video(tmp_path / "plain.mp4", frames=3), tmp_path / "plain-out.mp4", LOCAL)
    assert not [w for w in plain.warnings if "interlaced" in w]


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
    while not partials(out) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert not out.exists() and not partials(out)


def test_a_killed_runs_partial_output_is_removed_by_the_next_run(tmp_path, capsys):
    """SIGKILL leaves no chance to clean up; the next run to that output removes what was left,
    and says so. A partial whose writer may be alive, or lived elsewhere, stays."""
    src = make_video(tmp_path / "in.mp4", frames=200)
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(src), "-o", str(out),
                             "--config", str(_slow_config(tmp_path))], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not partials(out) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.kill()
    proc.wait(timeout=30)
    (left,) = partials(out)
    elsewhere = partial_path(out, f"{proc.pid}-000000{'0' * 8}")  # the same pid, another machine's
    elsewhere.touch()
    alive = partial_path(out, temp_token().replace(str(os.getpid()), "1", 1))  # pid 1 is alive here
    alive.touch()
    assert _run(src, out, "--json") == 0
    (said,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["warnings"]
    assert said == f"{out}: removed {left.name}, the partial output of a run that was killed (pid {proc.pid})"
    assert video_stream(ffprobe(out))["nb_read_frames"] == "200"
    assert partials(out) == sorted([elsewhere, alive])


def _slow_config(tmp_path):
    path = tmp_path / "slow.yaml"
    path.write_text("model: {profile: identity, delay_ms: 30}\nworkers: {backend: local}\n")
    return path


def _run(src, out, *extra, backend="local"):
    return main(["run", str(src), "-o", str(out), "--profile", "identity", "--backend", backend, *extra])


def _one_error_line(err):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_overwrite_keeps_a_folder_derain_did_not_write(tmp_path, capsys):
    src = make_video(tmp_path / "in.mp4", frames=4)
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("three years of work")
    assert _run(src, thesis, "--overwrite") == 1
    line = _one_error_line(capsys.readouterr().err)
    assert str(thesis) in line and "did not write" in line and "kept" in line
    assert [p.name for p in thesis.iterdir()] == ["chapter1.tex"]
    assert (thesis / "chapter1.tex").read_text() == "three years of work"
    assert not partials(thesis)


def test_overwrite_replaces_a_png_folder_derain_wrote_and_nothing_else(tmp_path, capsys):
    src = make_video(tmp_path / "in.mp4", frames=4)
    out = tmp_path / "frames"
    assert _run(src, out) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:06d}.png" for i in range(4)]
    assert json.loads((out / MARKER).read_text())["files"] == [f"{i:06d}.png" for i in range(4)]
    assert _run(src, out, "--overwrite") == 0  # derain's own folder: replaced
    assert len(list(out.glob("*.png"))) == 4
    (out / "my-notes.txt").write_text("mine")  # now the folder holds a file of the user's
    capsys.readouterr()
    assert _run(src, out, "--overwrite") == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "my-notes.txt" in line and "kept" in line
    assert (out / "my-notes.txt").read_text() == "mine" and len(list(out.glob("*.png"))) == 4
    assert not partials(out)


def test_an_existing_file_with_an_unknown_extension_fails_before_any_work(tmp_path, capsys, monkeypatch):
    import pipeline.files

    def no_pool(*a, **k):
        raise AssertionError("the model pool was started: the output should have been refused first")

    monkeypatch.setattr(pipeline.files, "make_pool", no_pool)
    src = make_video(tmp_path / "in.mp4", frames=4)
    notes = tmp_path / "notes.xyz"
    notes.write_text("my notes")
    assert _run(src, notes, "--overwrite") == 1
    line = _one_error_line(capsys.readouterr().err)
    assert str(notes) in line and "'.xyz' is not a video extension" in line
    assert notes.read_text() == "my notes"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_unknown_extension_or_a_dash_is_refused_and_a_slash_asks_for_a_folder(tmp_path, capsys):
    """`-o out.xyz` was written as a folder of PNGs named out.xyz without a word (and the audio
    dropped); `-o -` as a folder named "-". A trailing slash still asks for a folder."""
    src = make_video(tmp_path / "in.mp4", frames=3)
    assert _run(src, tmp_path / "out.xyz") == 1
    assert "'.xyz' is not a video extension" in _one_error_line(capsys.readouterr().err)
    assert _run(src, "-") == 1
    assert "derain writes files, not a pipe to stdout" in _one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"] and not Path("-").exists()
    assert _run(src, f"{tmp_path / 'frames.v2'}/") == 0
    assert len(list((tmp_path / "frames.v2").glob("*.png"))) == 3


def test_the_output_may_not_be_the_input(tmp_path, capsys):
    src = make_video(tmp_path / "in.mp4", frames=4)
    before = src.read_bytes()
    assert _run(src, src, "--overwrite") == 1
    assert "is the input" in _one_error_line(capsys.readouterr().err)
    assert src.read_bytes() == before


def test_two_runs_to_one_output_never_share_a_temporary(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=6)
    out = tmp_path / "out.mp4"
    assert partial_path(out) != partial_path(out)
    info = open_source(src).info
    first, second = VideoFileSink(out, info), VideoFileSink(out, info)  # both started before either ended
    assert first.tmp != second.tmp and first.tmp.exists() and second.tmp.exists()
    frames = list(open_source(src))
    batch = FrameBatch.of(frames[:2])
    first.write(batch)
    second.write(FrameBatch.of(frames))
    first.close(ok=True)
    with pytest.raises(OutputError, match="appeared while this run was writing"):
        second.close(ok=True)  # without --overwrite the first result is kept, as ffmpeg -n
    assert video_stream(ffprobe(out))["nb_read_frames"] == "2"
    assert not partials(out)


ODD = [(641, 361), (853, 480), (321, 241)]


def _odd_clip(tmp_path, size, chroma):
    """4:2:0 at odd sizes needs a codec that stores them (ffv1); x264 stores 4:4:4 at any size."""
    w, h = size
    if chroma == "420":
        return make_video(tmp_path / f"in-{w}x{h}-420.mkv", frames=5, size=size, codec="ffv1", pix_fmt="yuv420p")
    return make_video(tmp_path / f"in-{w}x{h}-444.mkv", frames=5, size=size, pix_fmt="yuv444p")


@pytest.mark.parametrize("backend", ["local", "ray"])
@pytest.mark.parametrize("chroma", ["420", "444"])
@pytest.mark.parametrize("size", ODD, ids=[f"{w}x{h}" for w, h in ODD])
def test_odd_sizes_keep_every_frame_and_say_the_cut(tmp_path, capsys, caplog, request, size, chroma, backend):
    if backend == "ray":
        request.getfixturevalue("ray_session")
    src = _odd_clip(tmp_path, size, chroma)
    assert video_stream(ffprobe(src))["pix_fmt"] == f"yuv{chroma}p"
    out = tmp_path / "out.mp4"
    assert _run(src, out, backend=backend) == 0
    err = capsys.readouterr().err
    w, h = size
    v = video_stream(ffprobe(out))
    assert v["nb_read_frames"] == "5"
    assert (v["width"], v["height"]) == (w - w % 2, h - h % 2)
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "written as" in r.getMessage()]
    assert len(said) == 1 and f"{w}x{h} written as {w - w % 2}x{h - h % 2}" in said[0] and "even" in said[0]
    assert "Traceback" not in err and not partials(out)


def test_odd_sizes_are_kept_where_the_pixel_format_holds_them(tmp_path, caplog):
    src = _odd_clip(tmp_path, (641, 361), "420")
    cfg = tmp_path / "444.yaml"
    cfg.write_text("encode: {pix_fmt: yuv444p}\n")
    assert _run(src, tmp_path / "out.mp4", "--config", str(cfg)) == 0
    v = video_stream(ffprobe(tmp_path / "out.mp4"))
    assert (v["width"], v["height"], v["nb_read_frames"]) == (641, 361, "5")
    assert "written as" not in caplog.text
    assert _run(src, tmp_path / "frames") == 0  # PNGs keep any size
    assert cv2_size(tmp_path / "frames" / "000000.png") == (641, 361)


def cv2_size(path):
    import cv2

    img = cv2.imread(str(path))
    return img.shape[1], img.shape[0]


@pytest.mark.parametrize("backend", ["local", "ray"])
@pytest.mark.parametrize("output", ["out.mp4", "frames"])
def test_a_1x1_video_is_one_clear_line_and_leaves_nothing(tmp_path, capsys, request, backend, output):
    if backend == "ray":
        request.getfixturevalue("ray_session")
    src = make_video(tmp_path / "in.mkv", frames=3, size=(1, 1), codec="ffv1", pix_fmt="yuv444p")
    out = tmp_path / output
    assert _run(src, out, backend=backend) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert str(src) in line and "1x1" in line
    assert not out.exists() and not partials(out)


def test_a_2x2_video_is_derained_and_written(tmp_path):
    src = make_video(tmp_path / "in.mkv", frames=3, size=(2, 2), codec="ffv1", pix_fmt="yuv444p")
    assert _run(src, tmp_path / "out.mp4") == 0
    assert video_stream(ffprobe(tmp_path / "out.mp4"))["nb_read_frames"] == "3"


def _limit_file_size(limit):
    def apply():  # in the child: Python ignores SIGXFSZ, so a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("output,limit", [("out.mp4", 150_000), ("frames", 5_000)])
def test_a_full_disk_is_one_clear_line_and_leaves_nothing(tmp_path, output, limit):
    """A file-size limit fails writes as a full disk does, without needing root to mount a small one."""
    src = make_video(tmp_path / "in.mp4", frames=40, size=(320, 240))
    out = tmp_path / output
    cfg = tmp_path / "lossless.yaml"
    cfg.write_text("encode: {crf: 0}\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(src), "-o", str(out), "--profile",
                           "identity", "--backend", "local", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=120, preexec_fn=_limit_file_size(limit))
    assert proc.returncode == 1
    line = _one_error_line(proc.stderr)
    assert str(out) in line and "cannot write" in line and "removed" in line
    assert not out.exists() and not partials(out)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_really_full_disk_is_one_clear_line_and_leaves_nothing(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(small)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        src = make_video(tmp_path / "in.mp4", frames=40, size=(320, 240))
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(src), "-o", str(small / "out.mp4"),
                               "--profile", "identity", "--backend", "local", "--crf", "0"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1
        assert "the disk is full" in _one_error_line(proc.stderr)
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)


@pytest.mark.parametrize("audio", [False, True])
def test_a_video_of_which_no_frame_decodes_is_an_error_and_keeps_the_old_output(tmp_path, capsys, audio):
    """Every video packet zeroed: an output with audio and no video (or a 0-byte MP4) is no
    output. One line naming the input; an existing output stays as it was."""
    src = make_video(tmp_path / "in.mp4", frames=25, size=(160, 96), audio=audio)
    data = bytearray(src.read_bytes())
    at = data.find(b"mdat") + 4
    size = int.from_bytes(data[at - 8:at - 4], "big") - 8
    data[at:at + size] = bytes(size)  # the payload, audio included: no frame of it is video
    zeroed = tmp_path / "zeroed.mp4"
    zeroed.write_bytes(bytes(data))
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier good output")
    capsys.readouterr()
    assert _run(zeroed, out, "--overwrite") == 1
    line = [x for x in capsys.readouterr().err.splitlines() if "error" in x]
    assert len(line) == 1 and f"{zeroed}: no video frame could be decoded" in line[0], line
    assert out.read_bytes() == b"an earlier good output" and not partials(out)


def test_a_truncated_matroska_file_is_said(tmp_path):
    """The demuxer meets the end of a cut Matroska file without an error: the announced duration tells."""
    src = make_video(tmp_path / "in.mkv", frames=100, size=(160, 120))
    cut = cut_file(src, tmp_path / "cut.mkv", 0.6)
    out = tmp_path / "out.mp4"
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(cut), "-o", str(out), "--profile",
                           "identity", "--backend", "local"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    n = int(video_stream(ffprobe(out))["nb_read_frames"])
    assert 40 < n < 75
    said = [line for line in err.splitlines() if "truncated" in line]
    assert said and all("cut.mkv" in line for line in said)
    assert any(f"only {n} frames" in line and "about 100 frames" in line for line in said)


@pytest.mark.parametrize("ext", ["mkv", "avi", "mp4", "mov", "ts"])
def test_intact_variable_rate_files_with_audio_are_not_called_truncated(tmp_path, capsys, caplog, ext):
    src = make_video(tmp_path / f"in.{ext}", frames=30, audio=True, vfr=True)  # AVI counts empty chunks
    assert _run(src, tmp_path / "out.mkv") == 0
    assert "truncated" not in capsys.readouterr().err + caplog.text


def test_ten_bit_input_and_a_second_video_stream_are_said(tmp_path, caplog):
    src = make_video(tmp_path / "in.mkv", frames=6, pix_fmt="yuv420p10le", extra_video=True)
    out = tmp_path / "out.mp4"
    stats = derain_file(src, out, LOCAL)
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("10-bit input (yuv420p10le)" in m and "written as 8-bit" in m for m in said) == 1
    assert sum("#1 video (h264) not copied" in m for m in said) == 1
    assert stats.warnings == said
    assert video_stream(ffprobe(out))["nb_read_frames"] == "6"


def test_json_summary_lists_the_warnings(tmp_path, capsys):
    src = make_video(tmp_path / "in.mkv", frames=3, size=(65, 48), codec="ffv1", pix_fmt="yuv444p")
    assert _run(src, tmp_path / "out.mp4", "--json") == 0
    said = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["warnings"]
    assert len(said) == 2 and "65x48 written as 64x48 (the last column cut)" in said[0]
    assert "yuv444p input becomes yuv420p" in said[1]


def test_several_files_share_one_pool_each_in_order_with_its_timestamps(tmp_path):
    from pipeline.errors import InputError
    from pipeline.files import derain_files

    a = make_video(tmp_path / "a.mp4", frames=30, size=(96, 64))
    b = make_video(tmp_path / "b.mp4", frames=17, size=(64, 48), fps=30)
    settings = load_settings(RunSettings, None, {"model.profile": "identity", "workers.backend": "local",
                                                 "batching.max_batch": 4})
    stats = derain_files([(a, tmp_path / "a-out.mp4"), (b, tmp_path / "b-out.mp4")], settings)
    assert [s.frames_out for s in stats] == [30, 17] and all(s.dropped == 0 for s in stats)
    for src, out in ((a, "a-out.mp4"), (b, "b-out.mp4")):
        assert frame_pts(tmp_path / out) == frame_pts(src)  # each file's own clock, untouched
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    with pytest.raises(InputError, match="broken.mp4"):
        derain_files([(a, tmp_path / "c-out.mp4"), (broken, tmp_path / "d-out.mp4")], settings)
    assert not any(p.name.startswith((".c-out", "c-out", ".d-out", "d-out")) for p in tmp_path.iterdir())


def test_hardware_codecs_asked_for_where_there_is_no_gpu_fall_back_once(tmp_path, caplog):
    """decode.hardware: cuda and encode.hardware: nvenc on this GPU-less machine: every frame is
    derained on the CPU codecs, and the log says so once per process, not once per file."""
    from pipeline import hardware

    hardware._said.clear()
    clip = make_video(tmp_path / "in.mp4", frames=12, size=(96, 64))
    settings = load_settings(RunSettings, None, {"model.profile": "identity", "workers.backend": "local",
                                                 "decode.hardware": "cuda", "encode.hardware": "nvenc"})
    with caplog.at_level("WARNING", logger="pipeline.hardware"):
        for name in ("a.mp4", "b.mp4"):
            assert derain_file(clip, tmp_path / name, settings).frames_out == 12
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.hardware"]
    assert len(said) == 2, said
    assert any("NVDEC" in m and "in.mp4" in m for m in said) and any("h264_nvenc" in m for m in said)
    assert all(m.endswith("using the CPU codec") for m in said)
    for name in ("a.mp4", "b.mp4"):
        assert video_stream(ffprobe(tmp_path / name))["codec_name"] == "h264"
        assert int(video_stream(ffprobe(tmp_path / name))["nb_read_frames"]) == 12


def test_a_failed_run_leaves_nothing_in_a_reused_pool_for_the_next(tmp_path):
    """Batches still in flight when a run fails must not come out of the next run on the same pool."""
    from pipeline.errors import PluginError
    from pipeline.workers import make_pool

    clip = make_video(tmp_path / "in.mp4", frames=40, size=(96, 64))
    other = make_video(tmp_path / "other.mp4", frames=20, size=(96, 64), fps=30)
    (tmp_path / "failing.py").write_text(
        "from plugins import Plugin\n"
        "class FailsAt4(Plugin):\n"
        "    def process(self, batch):\n"
        "        if 4 in batch.seq:\n"
        "            raise RuntimeError('boom')\n"
        "        return [None] * len(batch)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        base = {"model.profile": "identity", "model.delay_ms": 20, "workers.backend": "local",
                "workers.inflight": 4, "batching.max_batch": 2}
        failing = load_settings(RunSettings, {"plugins": [{"use": "failing:FailsAt4", "on_error": "stop"}]}, base)
        settings = load_settings(RunSettings, None, base)
        pool = make_pool(settings.model, settings.workers)
        try:
            with pytest.raises(PluginError):
                derain_file(clip, tmp_path / "a.mp4", failing, pool=pool)
            stats = derain_file(other, tmp_path / "b.mp4", settings, pool=pool)
        finally:
            pool.close()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("failing", None)
    assert stats.frames_out == 20 and not (tmp_path / "a.mp4").exists()
    assert frame_pts(tmp_path / "b.mp4") == frame_pts(other)


def test_an_image_of_another_size_in_a_folder_is_scaled_in_a_video_and_kept_in_pngs(tmp_path):
    import cv2

    from pipeline.files import derain_file

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((48, 80 if i == 2 else 64, 3), 40 * i, np.uint8))
    stats = derain_file(folder, tmp_path / "out.mp4", LOCAL)
    assert stats.frames_out == 4
    v = video_stream(ffprobe(tmp_path / "out.mp4"))
    assert (int(v["width"]), int(v["height"]), int(v["nb_read_frames"])) == (64, 48, 4)
    assert [w for w in stats.warnings if "a 80x48 frame (frame 2) scaled to the video's 64x48" in w] != []
    stats = derain_file(folder, tmp_path / "pngs", LOCAL)  # a folder of PNGs keeps each image's size
    assert [cv2.imread(str(tmp_path / "pngs" / f"{i:03d}.png")).shape[1] for i in range(4)] == [64, 64, 80, 64]
    assert not [w for w in stats.warnings if "scaled" in w]


def test_a_matroska_video_that_starts_after_its_audio_is_not_called_truncated(tmp_path, capsys, caplog):
    """Matroska's DURATION tag is where the track ends: a video starting 0.5 s in lasts 0.5 s less."""
    src = tmp_path / "late.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-itsoffset", "0.5", "-f", "lavfi", "-i",
                    "testsrc2=size=160x120:rate=25:duration=1", "-f", "lavfi", "-i", "sine=duration=1.5",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(src)], check=True)
    assert _run(src, tmp_path / "out.mkv") == 0
    assert "truncated" not in capsys.readouterr().err + caplog.text
    assert int(video_stream(ffprobe(tmp_path / "out.mkv"))["nb_read_frames"]) == 25


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_a_transport_stream_that_starts_an_hour_in_is_written_from_zero(tmp_path, ext):
    """A DVR's MPEG-TS starts its clock anywhere: the output starts at zero as ffmpeg -c copy's
    does (it had an hour of nothing first), the audio where it was against the video."""
    src = tmp_path / "late.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x96:rate=25:duration=1",
                    "-f", "lavfi", "-i", "sine=duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-output_ts_offset", "3600", str(src)], check=True)
    assert _run(src, tmp_path / f"out{ext}") == 0
    before, after = ffprobe(src), ffprobe(tmp_path / f"out{ext}")
    assert float(after["format"]["start_time"]) < 0.05 and float(after["format"]["duration"]) < 1.2
    lead = [float(video_stream(i)["start_time"]) - float(audio_streams(i)[0]["start_time"]) for i in (before, after)]
    assert lead[1] == pytest.approx(lead[0], abs=0.002)
    assert int(video_stream(after)["nb_read_frames"]) == 25


def test_two_transport_streams_joined_play_one_after_the_other(tmp_path, caplog):
    """`cat a.ts b.ts`: the clock jumps back at the join. The second part follows the first, frame
    for frame (it was squashed into a millisecond), the audio too (the muxer refused it), said once."""
    part = tmp_path / "part.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x96:rate=25:duration=1",
                    "-f", "lavfi", "-i", "sine=duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    str(part)], check=True)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(part.read_bytes() * 2)
    assert _run(joined, tmp_path / "out.mp4") == 0
    pts = frame_pts(tmp_path / "out.mp4")
    steps = {b - a for a, b in zip(pts, pts[1:])}
    assert len(pts) == 50 and len(steps) == 1 and steps.pop() > 1  # one frame's ticks, all the way
    info = ffprobe(tmp_path / "out.mp4")
    assert 1.9 < float(video_stream(info)["duration"]) < 2.1 and 1.9 < float(audio_streams(info)[0]["duration"]) < 2.2
    said = [r.getMessage() for r in caplog.records if "timestamps jump" in r.getMessage()]
    assert said == [f"{joined}: its timestamps jump 1 time (recordings joined, or a clock reset); each part is "
                    "written after the last, as ffmpeg does"]


def test_audio_tracks_keep_their_language(tmp_path):
    """Copied or re-encoded (PCM into MP4), a track keeps its language; the input's encoder tag
    is not carried onto a video encoded otherwise."""
    src = tmp_path / "two.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x96:rate=25:duration=1",
                    "-f", "lavfi", "-i", "sine=duration=1", "-f", "lavfi", "-i", "sine=f=300:duration=1",
                    "-map", "0", "-map", "1", "-map", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-c:a:0", "aac", "-c:a:1", "pcm_s16le", "-metadata:s:a:0", "language=deu",
                    "-metadata:s:a:1", "language=fra", str(src)], check=True)
    for ext in (".mkv", ".mp4"):
        assert _run(src, tmp_path / f"out{ext}") == 0
        info = ffprobe(tmp_path / f"out{ext}")
        assert [a["tags"]["language"] for a in audio_streams(info)] == ["deu", "fra"]
    assert _run(src, tmp_path / "out.webm") == 0
    tags = {k.lower(): v for k, v in video_stream(ffprobe(tmp_path / "out.webm")).get("tags", {}).items()}
    assert "libx264" not in tags.get("encoder", "")


def test_a_transport_stream_recorded_from_mid_gop_is_not_called_truncated(tmp_path, caplog):
    """A TS picked up anywhere starts mid-GOP: the decoder drops the frames before the first
    keyframe. Its head is short, not its tail: nothing to warn about."""
    whole = tmp_path / "whole.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x96:rate=25:duration=4",
                    "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", str(whole)], check=True)
    data = whole.read_bytes()
    mid = tmp_path / "mid.ts"
    mid.write_bytes(data[len(data) // 188 // 3 * 188:])  # whole TS packets, from a third in
    assert _run(mid, tmp_path / "out.mp4") == 0
    assert 25 < int(video_stream(ffprobe(tmp_path / "out.mp4"))["nb_read_frames"]) < 100
    assert "truncated" not in caplog.text


def test_a_folders_rate_may_be_a_ratio_and_a_video_keeps_its_own(tmp_path, capsys):
    """--fps (decode.fps) 30000/1001 is NTSC's exact rate, as FFmpeg takes it; 29.97 is not it."""
    folder = tmp_path / "shots"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    out = tmp_path / "out.mp4"
    assert _run(folder, out, "--fps", "30000/1001") == 0
    assert video_stream(ffprobe(out))["r_frame_rate"] == "30000/1001"
    src = make_video(tmp_path / "in.mp4", frames=4)
    capsys.readouterr()
    assert _run(src, tmp_path / "v.mp4", "--fps", "25") == 2
    assert "--fps: the frame rate of a folder of images" in _one_error_line(capsys.readouterr().err)
    assert _run(folder, tmp_path / "live.mp4", "--realtime") == 2
    assert "--realtime: plays a video file as a camera; " in _one_error_line(capsys.readouterr().err)
    assert _run(folder, tmp_path / "bad.mp4", "--fps", "30000/0") == 1
    assert "decode.fps: must be a number (got '30000/0')" in capsys.readouterr().err


def test_relative_names_with_a_colon_are_files_not_protocols(tmp_path, monkeypatch):
    """`derain run a:b.mp4 -o x:y.mp4` failed: FFmpeg read 'a' and '.x' as protocols."""
    from pipeline.cli import main

    make_video(tmp_path / "cam:1.mp4", frames=6, audio=True)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "cam:1.mp4", "-o", "out:1.mp4", "--profile", "identity", "--backend", "local"]) == 0
    assert int(video_stream(ffprobe(tmp_path / "out:1.mp4"))["nb_read_frames"]) == 6


@pytest.mark.parametrize("yuv, codec_processes", [(False, False), (True, False), (True, True)])
def test_a_size_change_inside_a_file_is_said_on_either_frame_path(tmp_path, yuv, codec_processes):
    """Two parts of other sizes joined in one .ts: the RGB path said the scaling, the yuv420p
    planes path (decode.yuv, a GPU's) let the encoder scale in silence; said from a codec
    process too, as a GPU runs it."""
    parts = []
    for i, size in enumerate(("96x64", "64x48")):
        part = tmp_path / f"p{i}.ts"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration=0.2",
                        "-c:v", "libx264", "-pix_fmt", "yuv420p", str(part)], check=True)
        parts.append(part.read_bytes())
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(parts))
    settings = load_settings(RunSettings, None, {"model.profile": "identity", "workers.backend": "local",
                                                 "decode.yuv": yuv, "workers.codec_processes": codec_processes})
    stats = derain_file(joined, tmp_path / "out.mp4", settings)
    v = video_stream(ffprobe(tmp_path / "out.mp4"))
    assert (int(v["width"]), int(v["height"]), int(v["nb_read_frames"])) == (96, 64, 10) == (96, 64, stats.frames_out)
    assert [w for w in stats.warnings if "a 64x48 frame (frame 5) scaled to the video's 96x64" in w] != []


@pytest.mark.parametrize("ext", [".mkv", ".mp4"])
def test_a_thumbnail_listed_first_is_not_the_video(tmp_path, ext):
    """Demuxers list thumbnails (and album art) as video streams of one frame: one listed first
    was derained instead of the film. Matroska does not keep the cover flag (read back, it is an
    ordinary one-frame stream 0); MP4 keeps it (and lists it after the film)."""
    cover = tmp_path / "cover.png"
    cv2.imwrite(str(cover), np.full((32, 32, 3), 200, np.uint8))
    film = make_video(tmp_path / "film.mp4", frames=6, size=(96, 64))
    thumbed = tmp_path / f"thumbed{ext}"  # the thumbnail first, as some phones and editors write it
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(cover), "-i", str(film), "-map", "0", "-map", "1:v",
                    "-c:v:0", "png", "-disposition:v:0", "attached_pic", "-c:v:1", "copy", str(thumbed)], check=True)
    if ext == ".mkv":
        assert ffprobe(thumbed)["streams"][0]["codec_name"] == "png"  # what the old choice took
    stats = derain_file(thumbed, tmp_path / "out.mp4", LOCAL)
    v = video_stream(ffprobe(tmp_path / "out.mp4"))
    assert (int(v["width"]), int(v["height"]), int(v["nb_read_frames"]), stats.frames_out) == (96, 64, 6, 6)


def test_an_audio_file_with_a_cover_says_it_has_no_video(tmp_path, capsys):
    """An m4a with its album art became a 1-frame video ("announces 180000 frames ... truncated")."""
    cover = tmp_path / "cover.png"
    cv2.imwrite(str(cover), np.full((32, 32, 3), 200, np.uint8))
    song = tmp_path / "song.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", "-i", str(cover), "-map", "0",
                    "-map", "1", "-c:a", "aac", "-c:v", "png", "-disposition:v", "attached_pic", str(song)], check=True)
    assert main(["run", str(song), "-o", str(tmp_path / "song.mp4")]) == 1
    assert f"{song}: has no video stream (only a cover picture)" in capsys.readouterr().err
