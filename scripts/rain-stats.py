"""Why Rain100H fails, measured: what its rain adds to the clean image, beside the synthesiser's styles.

Per image, from the gain G = Y(O) - Y(B) in [0, 1]: its median, 90th and 99th percentiles, the
fraction of pixels gaining more than 0.1, the veil (O regressed on B over the 30 % least-rained
pixels: slope and offset; a veil of strength h gives slope 1 - h), and the 1-px autocorrelation
across the streaks (thickness), and how much of the streak edge lies in one 20-degree direction bin. For each
synthesiser style the same figures over 8 Kodak crops.
    .venv/bin/python scripts/rain-stats.py > docs/results/rain-stats.txt
"""
from __future__ import annotations

import sys
from pathlib import Path

from usage import answer_help

answer_help(__doc__)

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.images import list_images, pair_files, read_rgb  # noqa: E402
from pipeline.model.synth import STYLES, add_rain  # noqa: E402

D = Path("../shared/data")


def luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255


def stats(rainy: np.ndarray, clean: np.ndarray) -> list[float]:
    o, b = luma(rainy), luma(clean)
    g = o - b
    low = g <= np.percentile(g, 30)
    slope, offset = np.linalg.lstsq(np.vstack([b[low], np.ones(low.sum())]).T, o[low], rcond=None)[0]
    hp = g - cv2.blur(g, (15, 15))
    ac = float(np.mean(hp[:, :-1] * hp[:, 1:]) / max(np.mean(hp * hp), 1e-9))
    # Local streak orientation (structure tensor over 15x15) where the rain layer has an edge;
    # the share of those pixels in the fullest of nine 20-degree bins: 1.0 = one direction.
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
    theta = 0.5 * np.degrees(np.arctan2(2 * cv2.blur(gx * gy, (15, 15)), cv2.blur(gx * gx - gy * gy, (15, 15))))
    hist = np.histogram(theta[np.abs(hp) > 0.05], bins=np.arange(-90, 91, 20))[0]
    one_way = float(hist.max() / max(hist.sum(), 1))
    return [*np.percentile(g, [50, 90, 99]), float((g > 0.1).mean()), slope, offset, ac, one_way]


def show(name: str, rows: list[list[float]]) -> None:
    a = np.array(rows)
    cells = [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(a.min(0), a.max(0))]
    print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")


def main() -> None:
    print("| set | n | gain p50 | p90 | p99 | >0.1 | veil slope | veil offset | autocorr 1px | one direction |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, rain, clean in [("Rain100H", "rain100_samples/Rain100H/rain", "rain100_samples/Rain100H/norain"),
                              ("Rain100L", "rain100_samples/Rain100L/rain", "rain100_samples/Rain100L/norain"),
                              ("rain12", "rain12/rain", "rain12/norain")]:
        show(name, [stats(read_rgb(r), read_rgb(c)) for r, c in pair_files(D / rain, D / clean)])
    photos = [read_rgb(p)[:320, :480] for p in list_images(D / "clean_corpus/Kodak24")[:8]]
    for style_name, style in STYLES.items():
        rng = np.random.default_rng(0)
        rows = []
        for clean in photos:
            rainy = np.round(add_rain(clean.astype(np.float32) / 255, rng, style) * 255).astype(np.uint8)
            rows.append(stats(rainy, clean))
        show(f"synth {style_name}", rows)


if __name__ == "__main__":
    main()
