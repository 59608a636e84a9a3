"""How much of the derainer's Y-PSNR gain survives the output encoder, per CRF (docs/BENCHMARKS.md).

    .venv/bin/python scripts/encoder-quality.py [--data ../shared/data] [--frames 60]
        [--profile fast] [--codec h264] [--crfs 0,10,11,12,13,14,16,18,20] [--input-crf 10] [--out DIR]

1. NTU a1's rainy frames (the first --frames) become an H.264 file, as a good camera would
   give one: libx264, preset medium, --input-crf (10: near-transparent, the demanding
   case; a worse input hides more of the output encoder's loss), yuv420p, 25 frames/s.
2. `derain run` derains it once per CRF (x264 preset medium, the sink's other defaults),
   CRF 0 being lossless. With --codec h265, av1 or vp9 the rows are that codec's CRFs (its
   default preset, into .mkv); the lossless reference stays x264's CRF 0, since their CRF 0 is
   not lossless.
3. Each output is decoded and scored against the clean frames (Y-PSNR, the BT.601 Y of
   pipeline.model.evaluate, mean over frames). The gain of a CRF is its PSNR minus the
   decoded input's; the ratio is that gain over CRF 0's (the lossless gain).

Prints one row per CRF (PSNR, gain, ratio, kbit/s) and a JSON line at the end.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from pipeline.images import read_rgb  # noqa: E402
from pipeline.model.evaluate import psnr, y_channel  # noqa: E402


def make_input(rainy: list[Path], path: Path, crf: int) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "medium", "crf": str(crf)})
        first = read_rgb(rainy[0])
        stream.width, stream.height, stream.pix_fmt = first.shape[1], first.shape[0], "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        for i, p in enumerate(rainy):
            frame = av.VideoFrame.from_ndarray(read_rgb(p), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as f:
        return [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]


def mean_y_psnr(frames: list[np.ndarray], clean_y: list[np.ndarray]) -> float:
    assert len(frames) == len(clean_y), (len(frames), len(clean_y))
    return float(np.mean([psnr(y_channel(f), c) for f, c in zip(frames, clean_y)]))


def kbits(path: Path, frames: int) -> float:
    return path.stat().st_size * 8 / 1000 / (frames / 25)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"),
                    help="folder holding ntu_synthetic_video/ (default: the checkout's ../shared/data)")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--profile", default="fast", choices=["full", "fast"])
    ap.add_argument("--codec", default="h264", choices=["h264", "h265", "av1", "vp9"], help="the output codec scored")
    ap.add_argument("--crfs", default="0,10,11,12,13,14,16,18,20",
                    help="output CRFs; x264's CRF 0 (lossless) is the reference")
    ap.add_argument("--input-crf", type=int, default=10, help="CRF of the rainy H.264 input")
    ap.add_argument("--out", help="keep the videos here (default: a temporary folder)")
    args = ap.parse_args()
    ntu = Path(args.data) / "ntu_synthetic_video"
    if not (ntu / "a1_Rain").is_dir():
        sys.exit(f"{ntu / 'a1_Rain'}: not found; --data must hold ntu_synthetic_video/ (its SOURCE.md)")
    rainy = sorted((ntu / "a1_Rain").glob("*.jpg"))[: args.frames]
    clean_y = [y_channel(read_rgb(ntu / "a1_GT" / p.name)) for p in rainy]
    crfs = [("h264", 0)] + [(args.codec, int(c)) for c in args.crfs.split(",") if (args.codec, int(c)) != ("h264", 0)]
    work = Path(args.out or tempfile.mkdtemp(prefix="encoder-quality-"))
    work.mkdir(parents=True, exist_ok=True)

    src = work / "ntu-a1-rainy.mp4"
    make_input(rainy, src, args.input_crf)
    base = mean_y_psnr(decode(src), clean_y)
    print(f"NTU a1, {len(rainy)} frames, 640x480; input: H.264 CRF {args.input_crf} "
          f"({kbits(src, len(rainy)):.0f} kbit/s), Y-PSNR {base:.2f} dB; profile {args.profile}", flush=True)
    rows = {}
    for codec, crf in crfs:
        dst = work / f"derained-{codec}-crf{crf}.{'mp4' if codec == 'h264' else 'mkv'}"
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(src), "-o", str(dst), "--overwrite",
                        "--profile", args.profile, "--backend", "local", "--codec", codec, "--crf", str(crf)],
                       cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        y = mean_y_psnr(decode(dst), clean_y)
        rows[f"{codec} {crf}"] = {"psnr": round(y, 3), "gain": round(y - base, 3),
                                  "kbit_s": round(kbits(dst, len(rainy)), 1), "seconds": round(time.monotonic() - start, 1)}
    lossless = rows["h264 0"]["gain"]
    print("| output codec, CRF | Y-PSNR (dB) | gain (dB) | share of the lossless gain | kbit/s |")
    print("|---|---|---|---|---|")
    for key, r in rows.items():
        r["ratio"] = round(r["gain"] / lossless, 3) if lossless > 0 else None
        print(f"| {key}{' (lossless)' if key == 'h264 0' else ''} | {r['psnr']:.2f} | {r['gain']:+.2f} | "
              f"{r['ratio']:.0%} | {r['kbit_s']:.0f} |")
    print(json.dumps({"frames": len(rainy), "profile": args.profile, "codec": args.codec, "input_crf": args.input_crf,
                      "input_psnr": round(base, 3), "rows": rows}))


if __name__ == "__main__":
    main()
