"""`derain bench --streams N`: N files at once through one model worker, against its limits.

Three runs on the same generated clip: the model alone (batched, no codec), the codec side
alone (N streams with the identity profile: decode, colour conversion, encode), and the
whole pipeline on N streams sharing one pool. End to end should approach the slower of the
first two; `ratio` says how near it comes. On a GPU the utilisation is sampled during the
end-to-end run. Runs on CPUs too (the tests run it with the identity profile).
"""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..colour import I420
from ..files import derain_files, frame_layout, stream_settings
from ..settings import RunSettings, codec_processes
from ..sources.files import open_source
from ..workers import drain, make_pool
from .speed import DEFAULT_FRAMES, machine, synthetic_frames, time_model, write_clip


def run_streams_bench(settings: RunSettings, streams: int = 2, size: str = "640x360", frames: int = 0) -> dict:
    """Model-only, codec-only and end-to-end frames/s for `streams` streams at once."""
    w, h = map(int, size.split("x"))
    profile = settings.model.profile
    images = synthetic_frames(frames or DEFAULT_FRAMES.get(profile, 32), w, h)
    batch = settings.batching.for_input(settings.model, live=False, pixels=w * h).max_batch
    tmp = Path(tempfile.mkdtemp(prefix="derain-bench-streams-"))
    try:
        clip = write_clip(tmp / "clip.mp4", images)
        yuv = frame_layout(settings, open_source(clip).info, tmp / "out.mp4") == I420  # decode.yuv
        model_fps = None if profile == "identity" else _model_fps(settings, images, batch)
        identity = replace(settings, model=replace(settings.model, profile="identity", weights=None))
        codec = _streams(identity, clip, (w, h), streams, tmp / "codec")
        end_to_end = codec if profile == "identity" else _streams(settings, clip, (w, h), streams, tmp / "e2e",
                                                                  sample_gpu=torch.cuda.is_available())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    limit = min(v for v in (model_fps, codec["total_fps"]) if v)
    each = stream_settings(settings, streams)
    result = {"mode": "streams", "profile": profile, "size": size, "streams": streams, "frames_per_stream": len(images),
              "batch": batch, "backend": settings.workers.backend, "machine": machine(),
              "codec_processes": codec_processes(settings.model, settings.workers),
              "yuv": yuv, "codec_threads": [each.decode.thread_count(), each.encode.thread_count()],
              "model_fps": model_fps, "codec_fps": codec["total_fps"], "total_fps": end_to_end["total_fps"],
              "per_stream_fps": end_to_end["per_stream_fps"], "startup_s": end_to_end["startup_s"],
              "ratio": round(end_to_end["total_fps"] / limit, 3), "gpu_utilisation": end_to_end.get("gpu")}
    print(f"{streams} streams of {size}, {profile}: model alone {model_fps or '-'} frames/s, codec alone "
          f"{codec['total_fps']} frames/s, end to end {end_to_end['total_fps']} frames/s in total "
          f"({', '.join(map(str, end_to_end['per_stream_fps']))} per stream, {end_to_end['startup_s']} s opening): "
          f"{result['ratio']} of the slower",
          flush=True)
    return result


def _model_fps(settings: RunSettings, images, batch: int) -> float:
    from ..model.inference import Derainer

    m = settings.model
    derainer = Derainer.load(m.profile, m.weights, device=m.device, dtype=m.dtype, runtime=m.runtime,
                             cuda_graphs=m.cuda_graphs)
    return round(time_model(derainer, images, batch), 3)


def _streams(settings: RunSettings, clip: Path, size: tuple[int, int], streams: int, out: Path,
             sample_gpu: bool = False) -> dict:
    """Run `streams` copies of `clip` at once; frames/s in total (wall clock) and per stream (each
    stream's own clock, from its first frame's request to its output's close). What the wall clock
    holds beyond the longest stream (`startup_s`: opening the inputs and outputs, spawning codec
    processes) is paid once a file, so a short clip's total understates a long one's."""
    out.mkdir()
    pairs = [(clip, out / f"s{i}.mp4") for i in range(streams)]
    samples: list[float] = []
    done = threading.Event()
    pool = make_pool(settings.model, settings.workers)  # started (and the model loaded) before the clock
    try:
        _warm_up(pool, settings, size, frame_layout(settings, open_source(clip).info, pairs[0][1]))
        if sample_gpu:
            threading.Thread(target=_sample_gpu, args=(samples, done), daemon=True).start()
        start = time.monotonic()
        stats = derain_files(pairs, settings, pool=pool)
        wall = time.monotonic() - start
    finally:
        done.set()
        pool.close()
    result = {"total_fps": round(sum(s.frames_out for s in stats) / wall, 3),
              "per_stream_fps": [round(s.fps, 3) for s in stats],
              "startup_s": round(max(0.0, wall - max(s.seconds for s in stats)), 3)}
    if samples:
        result["gpu"] = round(sum(samples) / len(samples), 1)
    return result


def _warm_up(pool, settings: RunSettings, size: tuple[int, int], layout: str = "rgb") -> None:
    """A batch of each power of two up to `batch` (the model pads a partial batch to a size run
    before, within twice its frames), so cuDNN's kernel search and the CUDA graphs' capture
    (seconds at 1080p, once per process in a long run) are not timed: the figures are the
    steady state."""
    w, h = size
    batch = settings.batching.for_input(settings.model, live=False, pixels=w * h).max_batch
    sizes = sorted({1 << i for i in range(batch.bit_length()) if 1 << i <= batch} | {batch})
    frame = (h * 3 // 2, w) if layout == I420 else (h, w, 3)  # the frames as the run hands them over
    for b in sizes:
        pool.submit(("warm-up", b), np.zeros((b, *frame), np.uint8))
    drain(pool)


def _sample_gpu(samples: list[float], done: threading.Event) -> None:
    """GPU utilisation (%) every 0.5 s, where torch can read it (pynvml); nothing otherwise."""
    while not done.wait(0.5):
        try:
            samples.append(float(torch.cuda.utilization()))
        except Exception:  # noqa: BLE001 - no NVML here: the figure is left out
            return
