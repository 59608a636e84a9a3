"""What each output container can hold: video codecs checked before any frame is derained,
audio copied where the container holds it and re-encoded (in step, as loud) where it does not,
and output names and places that cannot be written said in one line."""
from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from media import make_video
from probe import audio_streams, ffprobe, video_stream

from pipeline.cli import main
from pipeline.settings import EncodeSettings
from pipeline.sinks.files import NAME_MAX, _video_options, partial_path, partials


def lavfi_clip(path: Path, vcodec: str = "libx264", acodec: str = "aac") -> Path:
    """25 frames of 160x120 with 1 s of a 1 kHz tone at -18 dB, made by ffmpeg: PyAV writes no
    WMA, mu-law or 24-bit PCM into the containers the bugs came in."""
    pix = ["-pix_fmt", "yuv420p"] if vcodec == "libx264" else []
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1",
                    "-f", "lavfi", "-i", "sine=frequency=1000:duration=1", "-c:v", vcodec, *pix,
                    "-c:a", acodec, "-shortest", str(path)], check=True)
    return path


def _run(src, out, *extra) -> int:
    return main(["run", str(src), "-o", str(out), "--profile", "identity", "--backend", "local", *extra])


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def no_pool(monkeypatch):
    """Fail the test if the model pool starts: the output must be refused before any frame."""
    import pipeline.files

    def refuse(*a, **k):
        raise AssertionError("the model pool was started: the output should have been refused first")

    monkeypatch.setattr(pipeline.files, "make_pool", refuse)


# --- video codecs the container cannot hold ------------------------------------------------

REFUSED = [("out.ts", "vp9", "MPEG-TS", ".mkv"), ("out.ts", "av1", "MPEG-TS", ".mp4"),
           ("out.webm", "h264", "WebM", ".mkv"), ("out.avi", "h265", "AVI", ".mkv"),
           ("out.mov", "vp9", "QuickTime (MOV)", ".webm"), ("out.mov", "av1", "QuickTime (MOV)", ".mp4")]


@pytest.mark.parametrize("name,codec,container,works", REFUSED, ids=[f"{c}-in-{n}" for n, c, _, _ in REFUSED])
def test_a_codec_the_container_cannot_hold_is_one_line_before_any_frame(tmp_path, capsys, no_pool, name,
                                                                       codec, container, works):
    src = make_video(tmp_path / "in.mp4", frames=4, size=(64, 48))
    out = tmp_path / name
    assert _run(src, out, "--codec", codec) == 1
    line = _one_error_line(capsys.readouterr().err)
    auto = EncodeSettings().codec_for(out)
    assert f"{out}: {container} cannot hold {codec} video; use " in line and line.endswith(f", or --codec {auto}")
    assert works in line.split("; use ")[1].split(",")[0].split("/")
    assert not out.exists() and not partials(out)


@pytest.mark.parametrize("name,codec", [("out.ts", "vp9"), ("out.webm", "h264")])
def test_what_the_refusal_suggests_works(tmp_path, capsys, name, codec):
    src = make_video(tmp_path / "in.mp4", frames=4, size=(64, 48))
    assert _run(src, tmp_path / name, "--codec", codec) == 1
    line = _one_error_line(capsys.readouterr().err)
    suffixes, auto = line.split("; use ")[1].split(", or --codec ")
    for suffix in suffixes.split("/"):
        if suffix in (".mp4", ".mkv", ".webm"):
            out = tmp_path / f"other{suffix}"
            assert _run(src, out, "--codec", codec) == 0
            assert video_stream(ffprobe(out))["nb_read_frames"] == "4"
    out = tmp_path / name
    assert _run(src, out, "--codec", auto) == 0
    assert video_stream(ffprobe(out))["codec_name"] == auto


# --- audio: copied where it fits, else re-encoded in step and as loud -----------------------

def _audio(path: Path) -> tuple[np.ndarray, int, float]:
    """The first audio stream's first channel as floats in [-1, 1], its rate, and where it
    starts against the first video frame (seconds)."""
    with av.open(str(path)) as c:
        video_start = next(c.decode(video=0)).time
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        frames = list(c.decode(stream))
    chunks = []
    for f in frames:
        x = f.to_ndarray()
        if np.issubdtype(x.dtype, np.integer):
            x = x / float(np.iinfo(x.dtype).max + 1)
        chunks.append(x[0] if f.format.is_planar else x.reshape(-1, f.layout.nb_channels)[:, 0])
    return np.concatenate(chunks).astype(np.float64), stream.rate, frames[0].time - video_start


def _db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(x ** 2)))


REENCODED = [("s24.mov", "libx264", "pcm_s24le", "out.mp4", "MP4", "aac"),  # bug 2: noise at 0 dB before
             ("s24.mkv", "libx264", "pcm_s24le", "out.mp4", "MP4", "aac"),
             ("pcm.avi", "mjpeg", "pcm_s16le", "out.ts", "MPEG-TS", "aac"),  # bug 3: a data stream before
             ("mulaw.mkv", "libx264", "pcm_mulaw", "out.mp4", "MP4", "aac"),  # bug 5: tracebacks before
             ("wma.avi", "mjpeg", "wmav2", "out.mp4", "MP4", "aac"),
             ("vorbis.mkv", "libx264", "libvorbis", "out.mp4", "MP4", "aac"),  # was copied: played silent
             ("aac.mp4", "libx264", "aac", "out.webm", "WebM", "opus")]


@pytest.mark.parametrize("name,vcodec,acodec,out_name,container,target", REENCODED,
                         ids=[f"{a}-to-{o}" for _, _, a, o, _, _ in REENCODED])
def test_audio_the_container_cannot_hold_is_reencoded_in_step_and_as_loud(tmp_path, capsys, caplog, name, vcodec,
                                                                         acodec, out_name, container, target):
    src = lavfi_clip(tmp_path / name, vcodec, acodec)
    out = tmp_path / out_name
    assert _run(src, out) == 0
    said = [line for line in (capsys.readouterr().err + caplog.text).splitlines() if "re-encoded" in line]
    decoded = acodec.removeprefix("lib")  # the encoder ffmpeg wrote it with, the codec derain reads
    assert said and f"{out}: {container} cannot hold {decoded} audio as it is; re-encoded to {target}" in said[0]
    (stream,) = audio_streams(ffprobe(out))
    assert stream["codec_name"] == target
    (x, rate, start), (y, out_rate, out_start) = _audio(src), _audio(out)
    assert len(y) / out_rate == pytest.approx(len(x) / rate, abs=0.1)
    assert out_start == pytest.approx(start, abs=0.05)  # the encoder's priming is all it moves
    assert _db(y) == pytest.approx(_db(x), abs=1.0) and np.abs(y).max() < 0.5  # -18 dB in, not noise at 0 dB


COPIED = [("s24.mov", "pcm_s24le", "out.mkv"), ("s24.mov", "pcm_s24le", "out.mov"),
          ("pcm.avi", "pcm_s16le", "out.avi"), ("aac.mp4", "aac", "out.ts"), ("aac.mp4", "aac", "out.mkv")]


@pytest.mark.parametrize("name,acodec,out_name", COPIED, ids=[f"{a}-to-{o}" for _, a, o in COPIED])
def test_audio_the_container_holds_is_copied_as_it_is(tmp_path, capsys, caplog, name, acodec, out_name):
    src = lavfi_clip(tmp_path / name, "mjpeg" if name.endswith(".avi") else "libx264", acodec)
    out = tmp_path / out_name
    assert _run(src, out) == 0
    assert "re-encoded" not in capsys.readouterr().err + caplog.text
    (a,), (b,) = audio_streams(ffprobe(src)), audio_streams(ffprobe(out))
    assert b["codec_name"] == a["codec_name"] == acodec and b["sample_rate"] == a["sample_rate"]
    copied, original = _audio_packets(out), _audio_packets(src)
    assert len(copied) == len(original)  # the very packets (MPEG-TS puts an ADTS header before each)
    assert all(c.endswith(o) and len(c) - len(o) in (0, 7) for c, o in zip(copied, original))


def _audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


# --- output names and places ----------------------------------------------------------------

@pytest.mark.parametrize("stem", ["a" * 251, "é" * 125], ids=["ascii", "two-byte"])
def test_a_long_legal_name_gets_a_temporary_that_fits(tmp_path, stem):
    out = tmp_path / f"{stem}.mp4"
    assert len(os.fsencode(out.name)) <= NAME_MAX
    tmp = partial_path(out, "4194304-0123abcd")
    assert tmp.parent == out.parent and tmp.name.startswith(".") and tmp.name.endswith(".partial.mp4")
    assert len(os.fsencode(tmp.name)) <= NAME_MAX
    tmp.name.encode("utf-8")  # whole characters: no half of a two-byte one
    assert partial_path(out, "4194304-0123abcd") == tmp  # a dead run's temporary is found again
    tmp.touch()
    assert partials(out) == [tmp]


def test_a_long_legal_output_name_is_written(tmp_path, capsys):
    src = make_video(tmp_path / "in.mp4", frames=4, size=(64, 48))
    out = tmp_path / f"{'a' * 245}.mp4"
    assert _run(src, out) == 0
    assert video_stream(ffprobe(out))["nb_read_frames"] == "4" and not partials(out)


@pytest.mark.parametrize("name", ["b" * 300 + ".mp4", "b" * 300], ids=["video", "png-folder"])
def test_a_name_over_the_limit_is_one_line(tmp_path, capsys, no_pool, name):
    src = make_video(tmp_path / "in.mp4", frames=4, size=(64, 48))
    assert _run(src, tmp_path / name) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert str(tmp_path / name) in line and f"is {len(name)} bytes long" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_folder_without_write_permission_is_one_line(tmp_path, capsys):
    src = make_video(tmp_path / "in.mp4", frames=4, size=(64, 48))
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    assert _run(src, ro / "a.mp4") == 1
    assert _one_error_line(capsys.readouterr().err).endswith(f"{ro / 'a.mp4'}: cannot write here (Permission denied)")


def test_a_read_only_file_system_is_one_line(tmp_path, capsys, monkeypatch):
    """EROFS refuses the temporary and then its removal too (where EACCES answers the removal
    with ENOENT): the second error must not hide the first. Simulated: tests need no mount."""
    src = make_video(tmp_path / "in.mp4", frames=4, size=(64, 48))
    out = tmp_path / "ro" / "a.mp4"
    out.parent.mkdir()

    def read_only(real):
        def refuse(self, *a, **k):
            if self.parent == out.parent:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
            return real(self, *a, **k)
        return refuse

    monkeypatch.setattr(Path, "touch", read_only(Path.touch))
    monkeypatch.setattr(Path, "unlink", read_only(Path.unlink))
    assert _run(src, out) == 1
    assert _one_error_line(capsys.readouterr().err).endswith(f"{out}: cannot write here (Read-only file system)")


# --- constant quality: each codec's own scale -------------------------------------------------

def test_auto_crf_is_each_encoders_own_number_for_the_same_share_of_the_gain(tmp_path):
    """The same CRF keeps different shares of the derain gain in different encoders
    (scripts/encoder-quality.py --codec C): auto gives each the number measured for it, a number
    set is passed as it is."""
    out = tmp_path / "out.mkv"
    auto = {enc: _video_options(enc, EncodeSettings(), out)["crf"]
            for enc in ("libx264", "libx265", "libvpx-vp9", "libsvtav1")}
    assert auto == {"libx264": "12", "libx265": "15", "libvpx-vp9": "14", "libsvtav1": "10"}
    assert _video_options("libx265", EncodeSettings(crf=20), out)["crf"] == "20"
    assert "crf" not in _video_options("libx265", EncodeSettings(bitrate=500_000), out)


def test_a_codec_at_its_auto_crf_writes_a_playable_file(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=6, size=(64, 48))
    for codec, suffix in (("h265", ".mkv"), ("av1", ".mkv")):
        out = tmp_path / f"out-{codec}{suffix}"
        assert _run(src, out, "--codec", codec) == 0
        assert video_stream(ffprobe(out))["nb_read_frames"] == "6"


# --- VP9: constant quality at a usable speed ------------------------------------------------

def test_vp9_is_constant_quality_with_a_speed_from_the_preset(tmp_path):
    out = tmp_path / "out.webm"
    options = _video_options("libvpx-vp9", EncodeSettings(codec="vp9", crf=30), out)
    assert options == {"deadline": "good", "cpu-used": "4", "row-mt": "1", "crf": "30", "b": "0"}
    assert _video_options("libvpx-vp9", EncodeSettings(codec="vp9", preset="slow"), out)["cpu-used"] == "2"
    assert _video_options("libvpx-vp9", EncodeSettings(codec="vp9", preset="6"), out)["cpu-used"] == "6"
    rated = _video_options("libvpx-vp9", EncodeSettings(codec="vp9", bitrate=500_000), out)
    assert "crf" not in rated and "b" not in rated  # the bitrate is the stream's, set by the encoder


def test_webm_is_vp9_with_opus_and_a_bad_vp9_preset_is_one_line(tmp_path, capsys):
    src = make_video(tmp_path / "in.mp4", frames=8, size=(64, 48), audio=True)
    out = tmp_path / "out.webm"
    assert _run(src, out) == 0
    info = ffprobe(out)
    assert video_stream(info)["codec_name"] == "vp9" and video_stream(info)["nb_read_frames"] == "8"
    assert [s["codec_name"] for s in audio_streams(info)] == ["opus"]
    capsys.readouterr()
    assert _run(src, tmp_path / "other.webm", "--preset", "warp") == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"{tmp_path / 'other.webm'}: encode.preset 'warp' is no libvpx-vp9 speed" in line


@pytest.mark.parametrize("extra,config,expected", [
    (["--codec", "av1", "--preset", "good"], "", "encode.preset 'good' is no libsvtav1 preset (use placebo, "),
    (["--preset", "bogus"], "", "encode.preset 'bogus' is no libx264 preset (use ultrafast, superfast,"),
    ([], "encode: {pix_fmt: rgb24}", "the libvpx-vp9 encoder does not take rgb24 (encode.pix_fmt; it takes yuv420p"),
], ids=["svt-av1-preset", "x264-preset", "vp9-pix-fmt"])
def test_a_preset_or_pixel_format_the_encoder_refuses_is_named(tmp_path, capsys, no_pool, extra, config, expected):
    """These were said as a refused frame size, which sent users looking in the wrong place."""
    src = make_video(tmp_path / "in.mp4", frames=3, size=(160, 120))
    if config:
        (tmp_path / "c.yaml").write_text(config)
        extra = [*extra, "--config", str(tmp_path / "c.yaml")]
    assert _run(src, tmp_path / ("out.webm" if config else "out.mp4"), *extra) == 1
    assert expected in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("preset", ["ultrafast", "medium", "13"])
def test_x264_preset_names_work_for_av1_too(tmp_path, capsys, preset):
    src = make_video(tmp_path / "in.mp4", frames=3, size=(160, 120))
    assert _run(src, tmp_path / "out.mkv", "--codec", "av1", "--preset", preset) == 0
    assert video_stream(ffprobe(tmp_path / "out.mkv"))["codec_name"] == "av1"


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_an_avi_says_the_inputs_frame_rate(tmp_path, ext):
    """AVI keeps a rate, not timestamps, and readers take it from the time base: an MP4's 1/12800
    made it a 12800 fps file to them (OpenCV, players), an MKV's a 1000 fps one."""
    src = make_video(tmp_path / f"in{ext}", frames=12, fps=24)
    assert _run(src, tmp_path / "out.avi") == 0
    v = video_stream(ffprobe(tmp_path / "out.avi"))
    assert (v["avg_frame_rate"], v["r_frame_rate"], v["nb_frames"], v["nb_read_frames"]) == ("24/1", "24/1", "12", "12")
    assert float(v["duration"]) == pytest.approx(0.5)


def test_an_audio_delay_that_avi_cannot_keep_is_said(tmp_path, caplog):
    src = tmp_path / "late.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1",
                    "-itsoffset", "0.5", "-f", "lavfi", "-i", "sine=duration=0.5", "-c:v", "libx264", "-pix_fmt",
                    "yuv420p", "-c:a", "pcm_s16le", str(src)], check=True)
    assert _run(src, tmp_path / "out.avi") == 0
    said = [r.getMessage() for r in caplog.records if "AVI keeps no audio delay" in r.getMessage()]
    assert said == [f"{tmp_path / 'out.avi'}: AVI keeps no audio delay: audio #1, 0.50 s after the video, "
                    "plays that much early (.mkv or .mp4 keep it)"]
    assert _run(src, tmp_path / "out.mkv") == 0  # a container that keeps it says nothing
    assert len([r for r in caplog.records if "AVI keeps" in r.getMessage()]) == 1


def test_anamorphic_pixels_and_chapters_are_kept_and_what_a_container_cannot_hold_is_said(tmp_path, caplog):
    """A DVD's or HDV's non-square pixels were written square (a 16:9 picture squeezed to 4:3)
    and chapters were dropped without a word; .ts and .avi lost a phone video's rotation silently."""
    chapters = tmp_path / "chapters.txt"
    chapters.write_text(";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=500\ntitle=One\n"
                        "[CHAPTER]\nTIMEBASE=1/1000\nSTART=500\nEND=1000\ntitle=Two\n")
    plain, src = tmp_path / "plain.mp4", tmp_path / "in.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1",
                    "-vf", "setsar=4/3", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(plain)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(plain), "-i", str(chapters), "-map", "0", "-map_chapters",
                    "1", "-c", "copy", "-metadata:s:v", "rotate=90", str(src)], check=True)  # as a phone writes it
    for ext in (".mkv", ".mp4"):
        out = tmp_path / f"out{ext}"
        assert _run(src, out) == 0
        v = video_stream(ffprobe(out))
        assert (v["sample_aspect_ratio"], v["display_aspect_ratio"]) == ("4:3", "16:9")
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_chapters", "-of", "json", str(out)],
                               capture_output=True, text=True, check=True)
        found = [(float(c["start_time"]), c["tags"]["title"]) for c in json.loads(probe.stdout)["chapters"]]
        assert found == [(0.0, "One"), (0.5, "Two")], ext
    assert not [r for r in caplog.records if "not copied" in r.getMessage()]  # MP4's chapter track is no loss
    assert _run(src, tmp_path / "out.ts") == 0
    said = [r.getMessage() for r in caplog.records if "MPEG-TS keeps no" in r.getMessage()]
    assert said == [f"{tmp_path / 'out.ts'}: MPEG-TS keeps no rotation: the input's turn of 90 degrees for display "
                    "is lost (the picture plays as stored); write .mp4, .mov or .mkv to keep it",
                    f"{tmp_path / 'out.ts'}: MPEG-TS keeps no chapters: the input's 2 are lost; write .mp4, .mov or "
                    ".mkv to keep them"]


def test_a_variable_rate_avi_keeps_every_frame_in_step(tmp_path):
    """AVI keeps a rate, not times: at the average rate a faster part's frames met on one tick
    and were each pushed a tick on, so the video ran 0.7 s behind the audio mid-clip. Now AVI's
    rate is the one every frame time is a whole tick of (r_frame_rate)."""
    src = tmp_path / "vfr.mp4"  # 1 s at 30 frames/s, then 2 s at 10 (a phone in low light)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30:duration=3",
                    "-vf", "select='lt(n,30)+not(mod(n,3))'", "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt",
                    "yuv420p", str(src)], check=True)
    assert _run(src, tmp_path / "out.avi") == 0
    v = video_stream(ffprobe(tmp_path / "out.avi"))
    assert v["r_frame_rate"] == "30/1" and v["nb_read_frames"] == "50"

    def times(path):
        with av.open(str(path)) as c:
            return sorted(float(f.pts * f.time_base) for f in c.decode(video=0))

    late = [b - a for a, b in zip(times(src), times(tmp_path / "out.avi"))]
    assert max(map(abs, late)) <= 4 / 30 + 1e-6, late  # AVI's B-frame delay (a few ticks), no drift (was 0.7 s)


def test_an_avi_leaves_out_frames_closer_than_its_rate_and_says_so(tmp_path, caplog):
    """Where no rate holds every frame time (60 then 25 frames/s: r_frame_rate 300), AVI gets the
    average, and frames closer than one of its ticks are left out, as ffmpeg does, not pushed on."""
    src = tmp_path / "mixed.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=300:duration=2",
                    "-vf", "select='if(lt(t,1),not(mod(n,5)),not(mod(n,12)))'", "-fps_mode", "vfr", "-c:v",
                    "libx264", "-pix_fmt", "yuv420p", str(src)], check=True)
    assert _run(src, tmp_path / "out.avi") == 0
    said = [r.getMessage() for r in caplog.records if "AVI holds one frame every" in r.getMessage()]
    assert len(said) == 1 and "are left out so the video stays in step with the audio" in said[0]
    v = video_stream(ffprobe(tmp_path / "out.avi"))
    assert 60 < int(v["nb_read_frames"]) < 85 and abs(float(v["duration"]) - 2.0) < 0.1
    # and how many, at the end: the run's frame count is of the frames derained
    counted = [r.getMessage() for r in caplog.records if "left out of the AVI" in r.getMessage()]
    left_out = int(video_stream(ffprobe(src))["nb_read_frames"]) - int(v["nb_read_frames"])
    assert left_out > 0 and len(counted) == 1 and f": {left_out} frames left out of the AVI" in counted[0]


def test_colour_detail_lost_to_4_2_0_is_said(tmp_path, caplog):
    """A 4:4:4 input became 4:2:0 without a word (a 10-bit one was said)."""
    src = tmp_path / "in444.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=0.4",
                    "-c:v", "libx264", "-pix_fmt", "yuv444p", str(src)], check=True)
    assert _run(src, tmp_path / "out.mp4") == 0
    said = [r.getMessage() for r in caplog.records if "less colour detail" in r.getMessage()]
    assert said == [f"{tmp_path / 'out.mp4'}: yuv444p input becomes yuv420p, with less colour detail "
                    "(encode.pix_fmt: yuv444p keeps it where the codec takes it)"]
    caplog.clear()
    cfg = tmp_path / "444.yaml"
    cfg.write_text("encode: {pix_fmt: yuv444p}\n")
    assert _run(src, tmp_path / "kept.mp4", "--config", str(cfg)) == 0
    assert video_stream(ffprobe(tmp_path / "kept.mp4"))["pix_fmt"] == "yuv444p"
    assert not [r for r in caplog.records if "less colour detail" in r.getMessage()]


@pytest.mark.parametrize("codec, crf, top", [("h265", 63, 51), ("h264", 60, 51)])
def test_a_crf_past_the_codecs_scale_is_one_line(tmp_path, capsys, no_pool, codec, crf, top):
    """x265 printed its own errors twice, then derain blamed the picture size; x264 took 60 in silence."""
    src = make_video(tmp_path / "in.mp4", frames=2)
    assert _run(src, tmp_path / "out.mkv", "--codec", codec, "--crf", str(crf)) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.endswith(f"out.mkv: encode.crf {crf}: {codec} takes 0 to {top} (lower is better)")
