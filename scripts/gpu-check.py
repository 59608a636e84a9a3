"""Checks that need a GPU, run first by scripts/gpu-bench.sh: one JSON line each.

1. CUDA graphs give exactly the eager output (full and fast profiles; a first call that
   captures, a second that replays on other frames, a batch of another shape).
2. Queued batches (`Derainer.start`, as the local pool runs them: the next one queued before the
   last one's result is read) give the same frames as one at a time, and how much faster they run.
3. yuv420p planes (decode.yuv) through graphs give the RGB path's frames, converted alike.
4. NVDEC (decode.hardware: cuda, only when named: `gpu-check.py nvdec`) decodes a file through the pipeline, every frame, with codec
   processes, and the frames match the CPU decoder's within a few levels.
    .venv/bin/python scripts/gpu-check.py [graphs|queued|planes|nvdec ...]   (default graphs queued planes)
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from usage import answer_help

answer_help(__doc__)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def graphs() -> None:
    from pipeline.bench.speed import synthetic_frames
    from pipeline.model.inference import Derainer

    for profile in ("full", "fast"):
        graphed = Derainer.load(profile, device="cuda", dtype="fp16")
        eager = Derainer.load(profile, device="cuda", dtype="fp16", cuda_graphs=False)
        worst = 0
        for b, w, h, seed in ((1, 481, 321, 0), (1, 481, 321, 1), (3, 640, 368, 2), (1, 481, 321, 3)):
            frames = synthetic_frames(b, w, h, seed)
            a, e = graphed(frames), eager(frames)
            worst = max(worst, int(np.abs(a.frames.astype(int) - e.frames).max()),
                        int(np.abs(a.rain_intensity - e.rain_intensity).max() > 1e-3) * 255)
        print(json.dumps({"check": "cuda_graphs", "profile": profile, "graphs_on": graphed.graphs is not None,
                          "captured": len(graphed.graphs or {}), "max_level_diff": worst, "ok": worst <= 1}),
              flush=True)


def queued() -> None:
    from pipeline.bench.speed import synthetic_frames
    from pipeline.model.inference import Derainer

    d = Derainer.load("full", device="cuda", dtype="fp16")
    eager = Derainer.load("full", device="cuda", dtype="fp16", cuda_graphs=False)
    batches = [synthetic_frames(1, 1920, 1080, seed) for seed in range(4)] + [synthetic_frames(2, 481, 321, 9)]
    pending = [d.start(b) for b in batches]
    worst = max(int(np.abs(p.result().frames.astype(int) - eager(b).frames).max()) for p, b in zip(pending, batches))
    frames = [synthetic_frames(1, 1920, 1080, seed) for seed in range(30)]
    timing = {}
    for mode in ("one_at_a_time", "queued"):
        for _ in range(2):  # the second pass is timed
            start = time.monotonic()
            if mode == "one_at_a_time":
                for f in frames:
                    d(f)
            else:
                last = None
                for f in frames:
                    nxt = d.start(f)
                    if last is not None:
                        last.result()
                    last = nxt
                last.result()
            timing[mode] = round(len(frames) / (time.monotonic() - start), 1)
    print(json.dumps({"check": "queued", "max_level_diff": worst, "fps_1080p": timing, "ok": worst <= 1}), flush=True)


def planes() -> None:
    import torch

    from pipeline.bench.speed import synthetic_frames
    from pipeline.colour import i420_from_rgb, rgb_from_i420
    from pipeline.model.inference import Derainer

    d = Derainer.load("full", device="cuda", dtype="fp16")
    rgb = torch.from_numpy(synthetic_frames(2, 1920, 1080, 5)).permute(0, 3, 1, 2).float() / 255
    worst, diffs = 0, []
    for matrix in ("bt601", "bt709"):
        yuv = i420_from_rgb(rgb, matrix).numpy()
        as_rgb = (rgb_from_i420(torch.from_numpy(yuv), matrix, torch.float32) * 255).round().to(torch.uint8)
        via_rgb = d(as_rgb.permute(0, 2, 3, 1).contiguous().numpy()).frames
        expect = i420_from_rgb(torch.from_numpy(via_rgb).permute(0, 3, 1, 2).float() / 255, matrix).numpy()
        for _ in range(2):  # capture, then replay
            got = d(yuv, matrix=matrix).frames
            diffs.append(np.abs(got.astype(int) - expect))
            worst = max(worst, int(diffs[-1].max()))
    # The RGB path's network sees the frame rounded to 8 bits, the planes path's does not: fp16
    # turns that into a level or two at a few pixels.
    mean = float(np.mean([d.mean() for d in diffs]))
    print(json.dumps({"check": "planes", "max_level_diff": worst, "mean_level_diff": round(mean, 4),
                      "p999": float(np.percentile(diffs[-1], 99.9)), "graphs": len(d.graphs or {}),
                      "ok": worst <= 8 and mean < 0.25}), flush=True)


def nvdec() -> None:
    from pipeline.bench.speed import synthetic_frames, write_clip
    from pipeline.config import load_settings
    from pipeline.files import derain_file
    from pipeline.settings import RunSettings

    tmp = Path(tempfile.mkdtemp())
    clip = write_clip(tmp / "clip.mp4", synthetic_frames(60, 1280, 720))
    base = {"model.profile": "identity", "workers.backend": "local", "workers.codec_processes": True,
            "encode.crf": 0, "encode.preset": "ultrafast", "encode.hardware": "off",
            "decode.threads": 1, "encode.threads": 1}  # as measured before threads were auto: like for like
    out = {}
    for hw in ("cuda", "off"):
        s = load_settings(RunSettings, None, {**base, "decode.hardware": hw})
        start = time.monotonic()
        stats = derain_file(clip, tmp / f"{hw}.mp4", s)
        out[hw] = {"frames": stats.frames_out, "seconds": round(time.monotonic() - start, 2)}
    import av

    def frames(p):
        with av.open(str(p)) as c:
            return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]

    a, b = frames(tmp / "cuda.mp4"), frames(tmp / "off.mp4")
    diff = max(int(np.abs(x.astype(int) - y).max()) for x, y in zip(a, b))
    mean = [round(float(np.abs(x.astype(int) - y).mean()), 2) for x, y in zip(a[:4], b[:4])]
    shifted = [round(float(np.abs(x.astype(int) - y).mean()), 2) for x, y in zip(a[1:5], b[:4])]
    from av.codec.hwaccel import HWAccel

    try:
        with av.open(str(clip), hwaccel=HWAccel("cuda", allow_software_fallback=True)) as c:
            f = next(c.decode(video=0))
            hw = {"format": f.format.name, "range": str(getattr(f, "color_range", None)),
                  "space": str(getattr(f, "colorspace", None)), "codec": c.streams.video[0].codec_context.name}
    except av.FFmpegError as exc:
        hw = {"error": str(exc)}
    with av.open(str(clip)) as c:
        f = next(c.decode(video=0))
        sw = {"format": f.format.name, "range": str(getattr(f, "color_range", None)),
              "space": str(getattr(f, "colorspace", None))}
    def luma(p):  # the Y plane, as encoded (lossless): equal where only the chroma upsampling differs
        with av.open(str(p)) as c:
            return [f.to_ndarray(format="yuv420p")[:f.height].astype(int) for f in c.decode(video=0)]

    y = [np.abs(u - v) for u, v in zip(luma(tmp / "cuda.mp4"), luma(tmp / "off.mp4"))]
    print(json.dumps({"check": "nvdec_luma", "max_y_diff": int(max(d.max() for d in y)),
                      "mean_y_diff": round(float(np.mean([d.mean() for d in y])), 3)}), flush=True)
    print(json.dumps({"check": "nvdec_detail", "mean_diff_first4": mean, "mean_diff_shifted": shifted,
                      "hw_frame": hw, "sw_frame": sw}), flush=True)
    print(json.dumps({"check": "nvdec", **{f"{k}_frames": v["frames"] for k, v in out.items()},
                      "max_level_diff_vs_cpu": diff, "ok": out["cuda"]["frames"] == 60 and diff <= 8}), flush=True)


if __name__ == "__main__":
    chosen = sys.argv[1:] or ["graphs", "queued", "planes"]
    for check in [c for c in (graphs, queued, planes, nvdec) if c.__name__ in chosen]:
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - one line, and the next check still runs
            print(json.dumps({"check": check.__name__, "ok": False, "error": f"{type(exc).__name__}: {exc}"}),
                  flush=True)
