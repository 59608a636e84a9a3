"""Other rainy video with ground truth: NTU a1's clean frames under the synthesiser's rain.

The rain of each style is drawn once per video (frozen: angle, density, brightness hold) and its
drops anew in every frame, as in a1 itself; every 4th frame of the 168 is kept (42 frames) to
save time. Writes runs/synthetic-video/<style>/{rain,clean}/NNNNN.png, then score with
    derain eval --rain runs/synthetic-video/dense/rain --clean runs/synthetic-video/dense/clean --profile P
(scripts/eval-video.sh does every style and profile).
    .venv/bin/python scripts/synthetic-video.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.model.data import list_images, read_rgb, write_rgb  # noqa: E402
from pipeline.model.synth import STYLES, add_rain, frozen  # noqa: E402

CLEAN = Path("../shared/data/ntu_synthetic_video/a1_GT")
OUT = Path("runs/synthetic-video")


def main() -> None:
    frames = list_images(CLEAN)[::4]
    for k, name in enumerate(("light", "dense", "video")):
        rng = np.random.default_rng([2026, k])
        style = frozen(STYLES[name], rng)
        for sub in ("rain", "clean"):
            (OUT / name / sub).mkdir(parents=True, exist_ok=True)
        for i, path in enumerate(frames, start=1):
            clean = read_rgb(path)
            rainy = add_rain(clean.astype(np.float32) / 255, rng, style)
            write_rgb(OUT / name / "rain" / f"{i:05d}.png", np.round(rainy * 255).astype(np.uint8))
            write_rgb(OUT / name / "clean" / f"{i:05d}.png", clean)
        print(OUT / name, len(frames), "frames")


if __name__ == "__main__":
    main()
