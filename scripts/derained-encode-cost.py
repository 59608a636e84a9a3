"""What x264 pays for derained frames against the frames the identity pipeline re-encodes.

`derain bench --streams` takes the identity pipeline (decode, then encode the decoded frames)
as the codec side's limit. But the encoder of a derain run gets the network's output, whose
fine texture costs more bits, and at CRF 12 more bits are more work. This encodes both sets
of a generated 1080p clip (the bench's frames) with the bench's encoder (x264 veryfast, CRF
12, 2 threads, the best of 2 runs) and prints ms a frame and Mbit/s for each.
    .venv/bin/python scripts/derained-encode-cost.py [PROFILE] [FRAMES]   (fast, 30)
"""
import os
import sys
import tempfile
import time
from pathlib import Path

from usage import answer_help

answer_help(__doc__)

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.bench.speed import synthetic_frames, write_clip  # noqa: E402
from pipeline.model.inference import Derainer  # noqa: E402

W, H, FPS = 1920, 1080, 25


def encode(frames: np.ndarray, path: Path) -> tuple[float, float]:
    """(ms a frame, Mbit/s) of x264 veryfast CRF 12 on 2 threads, the faster of 2 runs."""
    best = float("inf")
    for _ in range(2):
        start = time.monotonic()
        write_clip(path, frames, FPS, crf=12, threads=2)
        best = min(best, time.monotonic() - start)
    return 1000 * best / len(frames), os.path.getsize(path) * 8 * FPS / len(frames) / 1e6


def main() -> None:
    profile = sys.argv[1] if len(sys.argv) > 1 else "fast"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    clip = write_clip(tmp / "clip.mp4", synthetic_frames(n, W, H))
    with av.open(str(clip)) as c:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    derainer = Derainer.load(profile=profile, device="cpu")
    derained = np.concatenate([derainer(decoded[i:i + 1]).frames for i in range(n)])
    (ms0, rate0), (ms1, rate1) = encode(decoded, tmp / "identity.mp4"), encode(derained, tmp / "derained.mp4")
    print(f"{n} frames of {W}x{H}: identity {ms0:.1f} ms a frame, {rate0:.1f} Mbit/s; {profile} derained "
          f"{ms1:.1f} ms a frame, {rate1:.1f} Mbit/s: x{ms1 / ms0:.2f} the encoder's time, x{rate1 / rate0:.2f} the bits")


if __name__ == "__main__":
    main()
