"""Frames as yuv420p planes (decode.yuv): the conversions on the model's device, a file run that
keeps the planes from decoder to encoder, when that path is taken, and the input's colour
matrix kept on the RGB path too (BT.709 HD video)."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from pipeline.colour import i420_from_rgb, matrix_of, rgb_from_i420
from pipeline.config import load_settings
from pipeline.files import derain_file, frame_layout
from pipeline.settings import RunSettings
from pipeline.sources.files import open_source
from media import make_video
from probe import ffprobe, frame_pts, video_stream


def _smooth_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.uniform(20, 235, (h // 8 + 2, w // 8 + 2, 3))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("colorspace", [2, 1])  # unspecified (BT.601, as swscale) and BT.709
def test_conversions_match_swscale(colorspace):
    rgb = _smooth_rgb(64, 96)
    f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    f.colorspace = colorspace
    planes = f.reformat(format="yuv420p").to_ndarray(format="yuv420p")
    g = av.VideoFrame.from_ndarray(planes, format="yuv420p")
    g.colorspace = colorspace
    sws_rgb = g.to_ndarray(format="rgb24").astype(int)
    matrix = matrix_of(colorspace)
    ours = rgb_from_i420(torch.from_numpy(planes[None]), matrix, torch.float32)[0]
    ours = (ours.permute(1, 2, 0) * 255).round().int().numpy()
    assert np.abs(ours - sws_rgb).max() <= 3 and np.abs(ours - sws_rgb).mean() < 1.5
    # The other matrix would be far off: the matrix is what this checks.
    other = rgb_from_i420(torch.from_numpy(planes[None]), "bt709" if matrix == "bt601" else "bt601", torch.float32)
    assert np.abs((other[0].permute(1, 2, 0) * 255).round().int().numpy() - sws_rgb).mean() > 3
    back = i420_from_rgb(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255, matrix)[0].numpy()
    assert back.shape == planes.shape and np.abs(back.astype(int) - planes).mean() < 0.5


def _settings(**over) -> RunSettings:
    base = {"workers.backend": "local", "model.profile": "identity", "encode.crf": 0,
            "encode.preset": "ultrafast", "model.device": "cpu"}
    return load_settings(RunSettings, None, {**base, **over})


def _planes(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]


@pytest.mark.parametrize("codec_processes", [False, True])
def test_yuv_path_keeps_the_planes_exactly(tmp_path, codec_processes):
    """Identity through the planes path with a lossless encoder: every plane of every frame as it
    came in (the RGB path's two conversions could never give that), timestamps and audio kept."""
    src = make_video(tmp_path / "in.mp4", frames=12, size=(96, 64), audio=True, vfr=True)
    outs = {}
    for yuv in (True, False):
        outs[yuv] = tmp_path / f"out-{yuv}.mp4"
        stats = derain_file(src, outs[yuv], _settings(**{"decode.yuv": yuv, "workers.codec_processes": codec_processes}))
        assert stats.frames_out == 12
    assert all(np.array_equal(a, b) for a, b in zip(_planes(src), _planes(outs[True])))
    assert not all(np.array_equal(a, b) for a, b in zip(_planes(src), _planes(outs[False])))
    assert frame_pts(outs[True]) == frame_pts(src)
    assert [s["codec_type"] for s in ffprobe(outs[True])["streams"]] == ["video", "audio"]


def test_yuv_path_derains_as_the_rgb_path(tmp_path, shared_data):
    """The full model on planes (converted on its device) gives the RGB path's frames within
    rounding of the two conversions, on real rain (a rain12 crop)."""
    from pipeline.images import read_rgb

    rain = read_rgb(shared_data / "rain12" / "rain" / "rain-010.png")[:96, :160]
    src = make_video(tmp_path / "in.mp4", frames=3, size=(160, 96), image=lambda i, w, h: rain)
    frames = {}
    for yuv in (True, False):
        out = tmp_path / f"out-{yuv}.mp4"
        derain_file(src, out, _settings(**{"decode.yuv": yuv, "model.profile": "full", "model.dtype": "fp32"}))
        with av.open(str(out)) as c:
            frames[yuv] = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(int)
    with av.open(str(src)) as c:
        rainy = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(int)
    diff = np.abs(frames[True] - frames[False])
    assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 8, (diff.mean(), np.percentile(diff, 99))
    assert np.abs(frames[True] - rainy).mean() > 2.5 * diff.mean()  # the model did change the frames


@pytest.mark.parametrize("yuv", [False, True])
def test_bt709_video_keeps_its_colours_and_tags(tmp_path, yuv):
    """HD cameras tag their video BT.709: decoded with that matrix, the frames must be encoded with
    it too, and the output tagged so, or every colour shifts (saturated ones by many levels)."""
    def colours(i, w, h):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, : w // 3] = (200, 40, 40)
        img[:, w // 3: 2 * w // 3] = (40, 190, 60)
        img[:, 2 * w // 3:] = (50, 60, 210)
        return img

    src = make_video(tmp_path / "in.mp4", frames=3, size=(96, 64), bt709=True, image=colours)
    out = tmp_path / "out.mp4"
    derain_file(src, out, _settings(**{"decode.yuv": yuv}))
    stream = video_stream(ffprobe(out))
    assert stream.get("color_space") == "bt709" and stream.get("color_primaries") == "bt709"
    with av.open(str(out)) as c:
        got = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(int)
    assert np.abs(got - colours(0, 96, 64)).mean() < 3


def test_frame_layout(tmp_path):
    """Planes only where nothing but the model and a video encoder sees the frames."""
    plain = make_video(tmp_path / "plain.mp4", frames=2)
    ten_bit = make_video(tmp_path / "ten.mkv", frames=2, codec="ffv1", pix_fmt="yuv420p10le")
    odd = make_video(tmp_path / "odd.mkv", frames=2, size=(95, 63), codec="ffv1")
    on, auto = _settings(**{"decode.yuv": True}), _settings()

    def layout(settings, src, dst="out.mp4", rgb_needed=False):
        return frame_layout(settings, open_source(src).info, tmp_path / dst, rgb_needed)

    assert layout(on, plain) == "yuv420p"
    assert layout(auto, plain) == "rgb"  # auto: only where the model runs on a GPU
    assert layout(on, plain, rgb_needed=True) == "rgb"  # plugins or consumers read RGB
    assert layout(on, plain, dst="frames") == "rgb"  # an image folder
    assert layout(on, ten_bit) == "rgb"
    assert layout(on, odd) == "rgb"
    assert layout(_settings(**{"decode.yuv": True, "encode.pix_fmt": "yuv444p"}), plain) == "rgb"


def test_yuv_path_takes_a_stream_that_changes_size(tmp_path):
    """Two MPEG-TS clips of other sizes back to back (a camera that switched resolution): the
    planes of the second size cross outside the codec process's ring and are scaled by the
    encoder to the output's size, as the RGB path's frames are; every frame is kept."""
    a = make_video(tmp_path / "a.ts", frames=10, size=(96, 64))
    b = make_video(tmp_path / "b.ts", frames=8, size=(64, 48))
    joined = tmp_path / "joined.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    with av.open(str(joined)) as c:
        sizes = {(f.width, f.height) for f in c.decode(video=0)}
    assert sizes == {(96, 64), (64, 48)}
    out = tmp_path / "out.mp4"
    stats = derain_file(joined, out, _settings(**{"decode.yuv": True, "workers.codec_processes": True,
                                                  "encode.crf": 12}))
    assert stats.frames_out == 18
    stream = video_stream(ffprobe(out))
    assert (stream["width"], stream["height"]) == (96, 64) and int(stream["nb_read_frames"]) == 18


@pytest.mark.parametrize("codec,pix_fmt", [("libx264", "yuvj420p"), ("libx264rgb", "rgb24")])
def test_full_range_and_rgb_inputs_are_written_and_tagged_as_limited_range(tmp_path, codec, pix_fmt):
    """swscale writes the RGB frames limited range with the matrix used: the output must say so,
    whatever the input's tags said (full range, or RGB), or players wash the colours out."""
    src = make_video(tmp_path / "in.mkv", frames=3, codec=codec, pix_fmt=pix_fmt)
    out = tmp_path / "out.mp4"
    derain_file(src, out, _settings())
    stream = video_stream(ffprobe(out))
    assert stream.get("color_range") in (None, "tv")  # x264 writes no flag for limited range, the default
    assert stream.get("color_space") not in ("gbr", "rgb")
    with av.open(str(src)) as c:
        want = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(int)
    with av.open(str(out)) as c:
        got = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(int)
    assert np.abs(got - want).mean() < 3


def test_yuv_path_takes_frames_of_an_odd_size_as_rgb(tmp_path):
    """A stream that switches to an odd size (yuv420p cannot hold it) on the planes path: those
    frames come as RGB, batch by batch, and every frame is kept."""
    a = make_video(tmp_path / "a.ts", frames=10, size=(96, 64))
    b = make_video(tmp_path / "b.ts", frames=8, size=(95, 63), pix_fmt="yuv444p")
    joined = tmp_path / "joined.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    for processes in (False, True):
        out = tmp_path / f"out-{processes}.mp4"
        stats = derain_file(joined, out, _settings(**{"decode.yuv": True, "workers.codec_processes": processes,
                                                      "encode.crf": 12}))
        assert stats.frames_out == 18 and int(video_stream(ffprobe(out))["nb_read_frames"]) == 18
