"""What a user sees of a weights change: rainy | before | after, frame 30 of real rain at 2x.

The window is scripts/real-rain-crops.py's (where the rainy frame's thin bright structure stands
highest above its neighbours': rain). Frames 29-31 go to the network, so a temporal profile
gets its window; a single-frame one derains frame 30 alone. Writes
docs/img/weights-PROFILE-<set>.png for NTU ra1, rb2 and the demo clip.
    .venv/bin/python scripts/weights-crops.py PROFILE BEFORE.pt [AFTER.pt]   (after: the shipped weights)
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from usage import answer_help

answer_help(__doc__, need=2)

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.images import write_rgb  # noqa: E402
from pipeline.model.inference import Derainer  # noqa: E402

_spec = importlib.util.spec_from_file_location("crops", Path(__file__).with_name("real-rain-crops.py"))
crops = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(crops)


def main() -> None:
    profile, before = sys.argv[1], sys.argv[2]
    after = sys.argv[3] if len(sys.argv) > 3 else None
    models = [Derainer.load(profile, weights=w, device="cpu") for w in (before, after)]
    f, w, h = crops.FRAME, crops.W, crops.H
    for name, src in crops.RAINY.items():
        frames = np.stack([crops.nth(src, f + k) for k in (-1, 0, 1)])
        y, x = crops.window(src)
        tiles = [frames[1]] + [m(frames, (1, 1)).frames[0] for m in models]
        big = [cv2.resize(t[y:y + h, x:x + w], (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST) for t in tiles]
        gap = np.full((2 * h, 4, 3), 255, np.uint8)
        out = Path(f"docs/img/weights-{profile}-{name}.png")
        write_rgb(out, np.concatenate([big[0], gap, big[1], gap, big[2]], 1))
        print(out, f"frame {f}, window x={x} y={y}: rainy | {before} | {after or 'shipped'}")


if __name__ == "__main__":
    main()
