"""Other rainy video with ground truth: NTU a1's clean frames under the synthesiser's rain.

The rain of each style is drawn once per video (frozen: angle, density, brightness hold) and its
drops anew in every frame, as in a1 itself. 42 frames: with STEP 1 (the default) a1's first 42,
consecutive; with STEP 4 every 4th of the 168, so the motion between frames is 4x a1's.
Writes runs/synthetic-video/step<STEP>/<style>/{rain,clean}/NNNNN.png, then score with
    derain eval --rain runs/synthetic-video/step1/dense/rain --clean runs/synthetic-video/step1/dense/clean --profile P
(scripts/eval-video.sh does every style and profile).
    .venv/bin/python scripts/synthetic-video.py [STEP]
"""
from __future__ import annotations

import sys
from pathlib import Path

from usage import answer_help

answer_help(__doc__)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.images import list_images, read_rgb, write_rgb  # noqa: E402
from pipeline.model.synth import STYLES, add_rain, frozen  # noqa: E402

CLEAN = Path("../shared/data/ntu_synthetic_video/a1_GT")
def main(step: int = 1) -> None:
    out = Path(f"runs/synthetic-video/step{step}")
    frames = list_images(CLEAN)[::step][:42]
    for k, name in enumerate(("light", "dense", "video")):
        rng = np.random.default_rng([2026, k])
        style = frozen(STYLES[name], rng)
        for sub in ("rain", "clean"):
            (out / name / sub).mkdir(parents=True, exist_ok=True)
        for i, path in enumerate(frames, start=1):
            clean = read_rgb(path)
            rainy = add_rain(clean.astype(np.float32) / 255, rng, style)
            write_rgb(out / name / "rain" / f"{i:05d}.png", np.round(rainy * 255).astype(np.uint8))
            write_rgb(out / name / "clean" / f"{i:05d}.png", clean)
        print(out / name, len(frames), "frames")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
