"""Side-by-side crops at 2x of real rain: rainy | full | temporal (| temporal-fast), frame 30.

Reads the frames scripts/real-rain.sh left in runs/real-rain/ and writes docs/img/crop-<set>.png.
The crop is the 160x120 window where the rainy frame's thin bright structure (a top-hat across
7 px) stands highest above the median of its four neighbours' (rain changes from frame to
frame; a fence, a branch or a moving pole's edge does not), so it shows rain.
    .venv/bin/python scripts/real-rain-crops.py
"""
from __future__ import annotations

import sys
from pathlib import Path

from usage import answer_help

answer_help(__doc__)

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.images import list_images, read_rgb, write_rgb  # noqa: E402
from pipeline.sources.files import open_source  # noqa: E402

FRAME, W, H = 30, 160, 120
D = Path("../shared/data")
RAINY = {"ra1": D / "ntu_realrain_video/ra1_Rain", "rb2": D / "ntu_realrain_video/rb2_Rain",
         "demo": Path("pipeline/assets/rainy-sample.mp4")}
PROFILES = ("full", "temporal", "temporal-fast")


def nth(path: Path, n: int) -> np.ndarray:
    if path.is_dir():
        return read_rgb(list_images(path)[n])
    return next(f.image for i, f in enumerate(open_source(path)) if i == n)


def window(src: Path) -> tuple[int, int]:
    across = cv2.getStructuringElement(cv2.MORPH_RECT, (7, 1))
    thin = [cv2.morphologyEx(cv2.cvtColor(nth(src, FRAME + k), cv2.COLOR_RGB2GRAY), cv2.MORPH_TOPHAT, across)
            .astype(np.float32) for k in (-2, -1, 0, 1, 2)]
    rain = np.maximum(thin[2] - np.median(thin, axis=0), 0)
    score = cv2.boxFilter(rain, -1, (W, H), normalize=True)
    h, w = score.shape
    score = score[H // 2:h - H // 2, W // 2:w - W // 2]
    y, x = np.unravel_index(np.argmax(score), score.shape)
    return int(y), int(x)


def main() -> None:
    out = Path("docs/img")
    out.mkdir(parents=True, exist_ok=True)
    for name, src in RAINY.items():
        rainy = nth(src, FRAME)
        y, x = window(src)
        tiles = [rainy] + [nth(Path(f"runs/real-rain/{name}-{p}"), FRAME) for p in PROFILES]
        crops = [cv2.resize(t[y:y + H, x:x + W], (2 * W, 2 * H), interpolation=cv2.INTER_NEAREST) for t in tiles]
        gap = np.full((2 * H, 4, 3), 255, np.uint8)
        row = np.concatenate([c for pair in zip(crops, [gap] * len(crops)) for c in pair][:-1], 1)
        write_rgb(out / f"crop-{name}.png", row)
        print(out / f"crop-{name}.png", f"frame {FRAME}, window x={x} y={y}: rainy | {' | '.join(PROFILES)}")


if __name__ == "__main__":
    main()
