"""Milliseconds the deflicker takes per frame (it runs in the frame loop, once per frame).

usage: .venv/bin/python scripts/deflicker-speed.py [WxH ...]   (default 640x360 1920x1080)
Frames of a textured picture panning 1 px a frame; the mean over 20 frames after the first.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from usage import answer_help

answer_help(__doc__)

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.model.deflicker import Deflicker  # noqa: E402


def main(sizes: list[str]) -> None:
    for size in sizes:
        w, h = map(int, size.split("x"))
        rng = np.random.default_rng(0)
        picture = cv2.GaussianBlur((rng.random((h, w + 40, 3)) * 255).astype(np.uint8), (0, 0), 3)
        frames = [np.ascontiguousarray(picture[:, i:i + w]) for i in range(21)]
        d = Deflicker()
        d.frame(frames[0])
        start = time.perf_counter()
        for f in frames[1:]:
            d.frame(f)
        ms = (time.perf_counter() - start) / 20 * 1000
        print(f"{size}: {ms:.1f} ms a frame ({cv2.getNumThreads()} OpenCV threads)")


if __name__ == "__main__":
    main(sys.argv[1:] or ["640x360", "1920x1080"])
