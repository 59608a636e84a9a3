"""`derain bench`: frames/s of the model alone, of the whole file pipeline, and of archives.

Everything runs on one generated clip (tests/media-style frames at the asked size), so
the model and the pipeline see the same frames in the same run and their ratio is the
pipeline's overhead. Figures go to docs/BENCHMARKS.md with the command line.
"""
from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..settings import ModelSettings, RunSettings  # no PyAV: --model-only runs on a bare GPU box

DEFAULT_FRAMES = {"full": 16, "fast": 96, "identity": 300}


def synthetic_frames(n: int, w: int, h: int, seed: int = 0) -> np.ndarray:
    """Textured frames with bright streaks, (n, h, w, 3) uint8: realistic work for codecs."""
    rng = np.random.default_rng(seed)
    base = (rng.random((h // 8 + 1, w // 8 + 1, 3)) * 200).astype(np.uint8)
    base = np.kron(base, np.ones((8, 8, 1), np.uint8))[:h, :w]
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        img = np.roll(base, i * 2, axis=1).copy()
        ys, xs = rng.integers(0, h - 12, 300), rng.integers(0, w, 300)
        for y, x in zip(ys, xs):
            img[y:y + 12, x] = 235
        frames[i] = img
    return frames


def write_clip(path: Path, frames: np.ndarray, fps: int = 25, crf: int = 20, threads: int = 0) -> Path:
    """RGB frames as an x264 veryfast file (threads 0: FFmpeg's choice)."""
    import av  # here, not at the top: --model-only runs where PyAV is not installed (a bare GPU box)

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "veryfast"})
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        s.codec_context.thread_count = threads
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    return path


def count_macs(net: torch.nn.Module, h: int, w: int) -> int:
    """Multiply-adds of one forward pass at h x w (convolutions, which are nearly all of it)."""
    total = 0

    def hook(mod, _inp, out):
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        total += out.numel() * k

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        net(torch.zeros(1, 3 * getattr(net, "frames", 1), h, w))  # a temporal net sees a window
    for handle in handles:
        handle.remove()
    return total


def time_model(derainer, frames: np.ndarray, batch: int, min_s: float = 3.0) -> float:
    """Frames/s of the inference core on `frames` in batches of `batch` (after one warm-up batch),
    each batch queued before the last one's result is read, as the pipeline's pool runs them (on a
    GPU the copies overlap the network; elsewhere it is the same as one call after another).
    A temporal network's batches carry their neighbours as the pipeline's do (so its window
    alignment is paid for)."""
    before, after = getattr(derainer, "halo", (0, 0))

    def batch_at(i: int) -> tuple[np.ndarray, tuple[int, int]]:
        lo, hi = max(0, i - before), min(len(frames), i + batch + after)
        return frames[lo:hi], (i - lo, hi - i - batch)

    derainer(*batch_at(0))
    done, start, last = 0, time.perf_counter(), None
    while True:
        for i in range(0, len(frames) - batch + 1, batch):
            queued = derainer.start(*batch_at(i))
            if last is not None:
                last.result()
            last = queued
            done += batch
        if time.perf_counter() - start >= min_s:
            last.result()
            return done / (time.perf_counter() - start)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from ..model.inference import cpu_has_native_bf16

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return f"{cpu} ({os.cpu_count()} cores, {bf16}), {torch.get_num_threads()} torch threads, {gpu}, torch {torch.__version__}"


def model_only(model: ModelSettings, sizes: Sequence[str] = ("640x360", "1280x720")) -> dict:
    """The model alone on synthetic frames: every size, batch, dtype and runtime that applies
    (or those `model` names). Needs neither PyAV nor Ray (a bare GPU box runs it)."""
    from ..model.inference import Derainer, cpu_has_native_bf16
    from ..model.weights import default_weights, load_weights

    rows = []
    cuda = torch.cuda.is_available() and model.device != "cpu"
    for size in sizes:
        w, h = map(int, size.split("x"))
        frames = synthetic_frames(32 if cuda else 4, w, h)
        loaded = load_weights(model.weights or default_weights(model.profile))
        macs = count_macs(loaded.net, int(h * loaded.scale), int(w * loaded.scale))
        dtypes = [model.dtype] if model.dtype != "auto" else (
            ["fp16", "bf16", "fp32"] if torch.cuda.is_available() else ["fp32", "bf16"])
        combos = [(dt, "torch") for dt in dtypes]
        if not torch.cuda.is_available() and "fp32" in dtypes:
            combos.insert(0, ("fp32", "onnxruntime"))
        if model.runtime != "auto":
            combos = [c for c in combos if c[1] == model.runtime]
        native_bf16 = torch.cuda.is_available() or cpu_has_native_bf16()
        for dtype, runtime in combos:
            d = Derainer.load(model.profile, model.weights, device=model.device, dtype=dtype, runtime=runtime,
                              cuda_graphs=model.cuda_graphs)
            batches = [1, 8, 32] if cuda else [1, 2, 4] if dtype != "bf16" or native_bf16 else [1]
            runs = [(d, b) for b in batches]
            if d.graphs is not None:  # batch 1 without graphs too: what they save
                runs.insert(1, (Derainer.load(model.profile, model.weights, device=model.device, dtype=dtype,
                                              runtime=runtime, cuda_graphs=False), 1))
            for derainer, b in runs:
                min_s = 3.0 if dtype != "bf16" or native_bf16 else 0.0
                if dtype == "bf16" and not native_bf16 and w > 640:
                    continue  # ~12x slower than fp32 on CPUs without native bf16: one size shows it
                try:
                    fps = time_model(derainer, frames, b, min_s)
                except torch.OutOfMemoryError:
                    print(f"{size:>9} {runtime:>11} {dtype:>5} batch {b}: out of GPU memory", flush=True)
                    rows.append({"size": size, "runtime": runtime, "dtype": dtype, "batch": b,
                                 "error": "out of GPU memory"})
                    torch.cuda.empty_cache()
                    continue
                graphs = derainer.replays(frames[:b].shape)
                row = {"size": size, "runtime": runtime, "dtype": dtype, "batch": b, "fps": round(fps, 3),
                       "ms_per_frame": round(1000 / fps, 2), "gmac_per_frame": round(macs / 1e9, 2),
                       "gmac_per_s": round(macs * fps / 1e9, 1), "device": str(derainer.device),
                       "cuda_graphs": graphs}
                rows.append(row)
                print(f"{size:>9} {runtime:>11} {dtype:>5} batch {b}{' graphs' if graphs else ''}: {fps:7.2f} "
                      f"frames/s  {1000 / fps:8.2f} ms/frame  {macs / 1e9:6.2f} GMAC/frame  "
                      f"{macs * fps / 1e9:6.1f} GMAC/s", flush=True)
    measured = [r for r in rows if "fps" in r]
    best = {s: max((r for r in measured if r["size"] == s), key=lambda r: r["fps"]) for s in sizes
            if any(r["size"] == s for r in measured)}
    return {"profile": model.profile, "machine": machine(), "rows": rows,
            "best": {k: {"batch": v["batch"], "runtime": v["runtime"], "dtype": v["dtype"], "fps": v["fps"]}
                     for k, v in best.items()}}


def pipeline_vs_model(settings: RunSettings, clip: Path, frames: np.ndarray, tmp: Path) -> dict:
    from ..files import derain_file
    from ..model.inference import Derainer
    from ..workers import drain, make_pool

    batch = settings.batching.for_input(settings.model, live=False, pixels=frames.shape[1] * frames.shape[2]).max_batch
    m = settings.model
    derainer = Derainer.load(m.profile, m.weights, device=m.device, dtype=m.dtype, delay_ms=m.delay_ms,
                             runtime=m.runtime, cuda_graphs=m.cuda_graphs)
    model_fps = time_model(derainer, frames, batch, min_s=0.0)
    del derainer
    # A stand-in detector as slow as the model: in its own actor it should overlap deraining.
    slow_ms = 1000 / model_fps
    runs = {"pipeline": [], "noop_plugin": [{"use": "noop"}],
            "slow_plugin_actor": [{"use": "noop", "with": {"delay_ms": slow_ms}, "ray": {"replicas": 1, "num_cpus": 0}}]}
    fps = {}
    pool = make_pool(settings.model, settings.workers)
    try:
        pool.submit("warm-up", frames[:batch])
        drain(pool)
        for name, plugins in runs.items():
            if name == "slow_plugin_actor" and settings.workers.backend != "ray":
                continue
            stats = derain_file(clip, tmp / f"{name}.mp4", replace(settings, plugins=plugins), pool=pool,
                                overwrite=True)
            fps[name] = stats.fps
    finally:
        pool.close()
    ratio = fps["pipeline"] / model_fps
    print(f"model alone: {model_fps:.2f} frames/s; whole pipeline (decode, Ray worker, encode): "
          f"{fps['pipeline']:.2f} frames/s; ratio {ratio:.3f}", flush=True)
    print(f"with a no-op plugin: {fps['noop_plugin']:.2f} frames/s "
          f"({100 * (fps['pipeline'] / fps['noop_plugin'] - 1):+.1f} % frame time)", flush=True)
    out = {"model_fps": round(model_fps, 3), "pipeline_fps": round(fps["pipeline"], 3), "ratio": round(ratio, 3),
           "frames": stats.frames_out, "noop_plugin_fps": round(fps["noop_plugin"], 3),
           "noop_plugin_frame_time_pct": round(100 * (fps["pipeline"] / fps["noop_plugin"] - 1), 2)}
    if "slow_plugin_actor" in fps:
        serial = 1 / (1 / fps["pipeline"] + slow_ms / 1000)
        print(f"with a {slow_ms:.0f} ms/frame plugin in its own actor: {fps['slow_plugin_actor']:.2f} frames/s "
              f"(serial would be {serial:.2f}: overlap {'yes' if fps['slow_plugin_actor'] > 1.2 * serial else 'no'})",
              flush=True)
        out.update(slow_plugin_ms=round(slow_ms, 1), slow_plugin_actor_fps=round(fps["slow_plugin_actor"], 3),
                   slow_plugin_serial_fps=round(serial, 3))
    return out


def archive_throughput(settings: RunSettings, clip: Path, tmp: Path, files: int = 4) -> dict:
    from ..archive import run_archive

    src = tmp / "archive-in"
    src.mkdir()
    for i in range(files):
        shutil.copy(clip, src / f"clip{i}.mp4")
    out = {}
    for workers, threads in ((1, 2), (2, 1)):
        a = replace(settings.archive, workers=workers, threads_per_worker=threads)
        result = run_archive(src, tmp / f"archive-out-{workers}", replace(settings, archive=a), progress=False)
        fps = result["summary"]["archive_fps"]
        out[f"{workers}x{threads}"] = fps
        print(f"archive, {workers} worker(s) x {threads} thread(s): {fps:.2f} frames/s over {files} files",
              flush=True)
    out["ratio_2x1_vs_1x2"] = round(out["2x1"] / out["1x2"], 3) if out["1x2"] else None
    return out


def run_bench(settings: RunSettings, size: str = "640x360", frames: int = 0, archive: bool = True) -> dict:
    """The model alone, then the whole file pipeline on the same generated clip (with a no-op
    plugin, with a slow plugin actor), then archives; `frames` 0 picks a count by profile."""
    w, h = map(int, size.split("x"))
    profile = settings.model.profile
    images = synthetic_frames(frames or DEFAULT_FRAMES.get(profile, 32), w, h)
    tmp = Path(tempfile.mkdtemp(prefix="derain-bench-"))
    try:
        clip = write_clip(tmp / "clip.mp4", images)
        result = {"profile": profile, "size": size, "machine": machine(),
                  **pipeline_vs_model(settings, clip, images, tmp)}
        if archive:
            result["archive_fps"] = archive_throughput(settings, clip, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result
