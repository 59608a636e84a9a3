"""The default encoder keeps >= 90 % of the derainer's Y-PSNR gain (NTU a1 as an H.264 file; docs/BENCHMARKS.md)."""
from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import av
import numpy as np
import pytest

from pipeline.files import derain_file
from pipeline.images import read_rgb
from pipeline.model.evaluate import psnr, y_channel
from pipeline.settings import RunSettings
from pipeline.settings import ModelSettings, WorkerSettings
from pipeline.workers import make_pool


def encode(frames: list[np.ndarray], path, crf: int) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "medium", "crf": str(crf)})
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def y_psnr(path, clean_y) -> float:
    with av.open(str(path)) as f:
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    assert len(frames) == len(clean_y)
    return float(np.mean([psnr(y_channel(f), c) for f, c in zip(frames, clean_y)]))


@pytest.mark.slow
def test_default_output_keeps_90_percent_of_the_lossless_gain(shared_data, tmp_path):
    ntu = shared_data / "ntu_synthetic_video"
    names = sorted(p.name for p in (ntu / "a1_Rain").glob("*.jpg"))[:24]
    src = tmp_path / "rainy.mp4"  # a near-transparent camera file: the demanding case (CRF 20 kept ~50 %)
    encode([read_rgb(ntu / "a1_Rain" / n) for n in names], src, crf=10)
    clean_y = [y_channel(read_rgb(ntu / "a1_GT" / n)) for n in names]
    settings = RunSettings(model=ModelSettings(profile="fast"), workers=WorkerSettings(backend="local"))
    pool = make_pool(settings.model, settings.workers)
    try:
        derain_file(src, tmp_path / "default.mp4", settings, pool=pool)
        derain_file(src, tmp_path / "lossless.mp4", replace(settings, encode=replace(settings.encode, crf=0)),
                    pool=pool)
    finally:
        pool.close()
    base = y_psnr(src, clean_y)
    lossless_gain = y_psnr(tmp_path / "lossless.mp4", clean_y) - base
    default_gain = y_psnr(tmp_path / "default.mp4", clean_y) - base
    assert lossless_gain > 0.8  # the model does derain here
    assert default_gain >= 0.9 * lossless_gain, (default_gain, lossless_gain)
