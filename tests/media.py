"""Test media made with PyAV: small clips with audio, variable frame rate, rotation, odd sizes,
10-bit, extra video streams, and files cut short."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def rainy_frame(i: int, w: int, h: int, seed: int = 0) -> np.ndarray:
    """A moving gradient with bright streaks: enough texture for codecs and the model."""
    rng = np.random.default_rng(seed + i)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // max(w - 1, 1) + 4 * i) % 256, (y * 255 // max(h - 1, 1)), np.full_like(x, 90)], -1)
    img = img.astype(np.uint8)
    for _ in range(max(1, w * h // 800)):
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        img[cy:cy + 8, cx:cx + 1] = 230
    return img


def make_video(path: str | Path, frames: int = 24, size: tuple[int, int] = (96, 64), fps: int = 24,
               codec: str = "libx264", audio: bool = False, vfr: bool = False, rotation: int = 0,
               metadata: dict | None = None, pix_fmt: str = "yuv420p", extra_video: bool = False,
               bt709: bool = False, image=None) -> Path:
    """Write a clip; with `vfr` the frame durations alternate 1/2 and 3/2 of a frame.

    `pix_fmt` picks the stored format (odd sizes in 4:2:0 need a codec that takes them, such
    as ffv1); `extra_video` adds a second, smaller video stream (a picture-in-picture camera);
    `bt709` converts with that matrix and tags the stream so (as HD cameras do); `image(i, w, h)`
    draws frame i (default `rainy_frame`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    tb = Fraction(1, fps * 2 if not vfr else fps * 4)
    step = round(1 / (fps * tb))
    with av.open(str(path), "w") as c:
        if metadata:
            c.metadata.update(metadata)
        v = c.add_stream(codec, rate=fps)
        v.width, v.height, v.pix_fmt = w, h, pix_fmt
        v.codec_context.time_base = tb
        if bt709:
            cc = v.codec_context
            cc.colorspace = cc.color_primaries = cc.color_trc = 1
        if rotation:
            v.set_display_rotation(rotation)
        v2 = None
        if extra_video:
            v2 = c.add_stream("libx264", rate=fps)
            v2.width, v2.height, v2.pix_fmt = 32, 32, "yuv420p"
            v2.codec_context.time_base = tb
        a = None
        if audio:
            a = c.add_stream("aac", rate=48000)
            a.layout = "stereo"
        pts = 0
        for i in range(frames):
            f = av.VideoFrame.from_ndarray((image or rainy_frame)(i, w, h), format="rgb24")
            f.pts, f.time_base = pts, tb
            if bt709:
                f.colorspace = 1
            pts += (step // 2 if i % 2 else step * 3 // 2) if vfr else step
            c.mux(v.encode(f))
            if v2 is not None:
                f2 = av.VideoFrame.from_ndarray(rainy_frame(i, 32, 32), format="rgb24")
                f2.pts, f2.time_base = f.pts, tb
                c.mux(v2.encode(f2))
        c.mux(v.encode(None))
        if v2 is not None:
            c.mux(v2.encode(None))
        if a is not None:
            total = int(48000 * pts * tb)
            t = 0
            while t < total:
                tone = (0.2 * np.sin(2 * np.pi * 440 * (t + np.arange(1024)) / 48000)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
                af.sample_rate, af.pts = 48000, t
                t += 1024
                c.mux(a.encode(af))
            c.mux(a.encode(None))
    return path


def cut_file(src: str | Path, dst: str | Path, fraction: float) -> Path:
    """A copy of `src` cut after `fraction` of its bytes, as an interrupted copy or download leaves it."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)
