"""Why the full profile leaves rain12 and Rain100L about 2 Y levels too bright, measured.

1. The shipped full weights on the synthesiser's styles over the validation photos (never
   trained on): the mean Y error of the output (its brightness bias) and the Y-PSNR with and
   without that bias; 1b. the same for faint and drizzle rain held at one angle from vertical
   (leaning rain is what the weights leave most of). 2. The rain layer (rainy - clean, Y in levels) of rain12 009..012, the
   Rain100L samples and the synthesiser's light, medium and video styles: its mean, median,
   the spread of its low-pass part (a veil would show there) and of its high-pass part (the
   streaks' contrast), the streaks' length and width (autocorrelation) and how many pixels
   the rain brightens visibly. 3. The weights' validation score.
    .venv/bin/python scripts/light-rain-bias.py [WEIGHTS] > docs/results/light-rain-bias.txt
WEIGHTS: a full-profile weights file (the shipped one by default). light-rain-bias.txt was made
with the weights before the drizzle fine-tune (git show 4a129ac:pipeline/model/weights/full.pt),
light-rain-bias-drizzle.txt with the fine-tune's, shipped since.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from usage import answer_help

answer_help(__doc__)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.images import read_rgb  # noqa: E402
from pipeline.model.data import PatchSampler  # noqa: E402
from pipeline.model.scale import predict  # noqa: E402
from pipeline.model.synth import STYLES  # noqa: E402
from pipeline.model.valset import SEED, held_out_photos, validation_batches, validation_psnr  # noqa: E402
from pipeline.model.weights import default_weights, load_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
D = ROOT.parent / "shared" / "data"
WEIGHTS = Path(sys.argv[1]) if len(sys.argv) > 1 else default_weights("full")
Y = np.array([0.299, 0.587, 0.114], np.float32)


def model_bias(photos, styles=STYLES, title="1. full profile on synthetic rain", seeds=None) -> None:
    """`seeds[i]` draws style i's crops and drops (its index by default): equal seeds, equal crops."""
    loaded = load_weights(WEIGHTS)
    net = loaded.net.eval()
    w = torch.tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1) / 255
    print(f"{title} (32 validation-photo crops of 128 px per style)")
    for i, style in enumerate(styles):
        with _styles(styles):
            rainy, clean = PatchSampler(photos, [], 128, {style: 1.0}, jpeg=0.3).batch(
                32, np.random.default_rng([SEED, 99, i if seeds is None else seeds[i]]))
        x, c = torch.from_numpy(rainy), (torch.from_numpy(clean) * 255).round()
        with torch.no_grad():
            rain = predict(net, x, loaded.scale, loaded.upsample).rain.float()
        d = ((((x - rain).clamp(0, 1) * 255).round() - c) * w).sum(1)
        bias = d.flatten(1).mean(1)
        psnr = (10 * torch.log10(255**2 / d.pow(2).flatten(1).mean(1))).mean()
        unbiased = (10 * torch.log10(255**2 / (d - bias.view(-1, 1, 1)).pow(2).flatten(1).mean(1))).mean()
        rain_in = (((x * 255).round() - c) * w).sum(1).mean()
        print(f"   {style:10s} rain adds {rain_in:+6.2f}  output bias {bias.mean():+5.2f}  "
              f"Y-PSNR {psnr:.2f} ({unbiased:.2f} without the bias)")


@contextmanager
def _styles(styles):
    """The named styles, known to the sampler for as long as they are measured."""
    added = {k: v for k, v in styles.items() if k not in STYLES}
    STYLES.update(added)
    try:
        yield
    finally:
        for k in added:
            del STYLES[k]


def leaning(photos) -> None:
    """The same at fixed angles from vertical: how much more the weights leave of leaning rain."""
    styles = {f"{name}@{a}": replace(STYLES[name], angle_deg=(float(a), float(a)))
              for name in ("faint", "drizzle") for a in (0, 15, 25, 35)}
    model_bias(photos, styles, "1b. full profile on faint and drizzle rain at one angle, the same crops and drops",
               seeds=[i // 4 for i in range(len(styles))])


def layer(rainy: np.ndarray, clean: np.ndarray) -> list[float]:
    r = (rainy.astype(np.float32) - clean.astype(np.float32)) @ Y
    low = cv2.GaussianBlur(r, (0, 0), 8)
    return [r.mean(), float(np.median(r)), low.std(), (r - low).std(), *streak_shape(r - low), (r > 3).mean() * 100]


def streak_shape(high: np.ndarray) -> tuple[float, float]:
    """How far the streaks stay alike (the high-pass rain layer's autocorrelation above 0.5):
    along the direction where that reaches furthest (within 40 degrees of vertical; their
    length) and across it (their width), in pixels."""
    f = np.fft.fft2(high - high.mean())
    acf = np.fft.fftshift(np.real(np.fft.ifft2(f * np.conj(f)))).astype(np.float32)
    acf /= acf.max()
    cy, cx = np.array(acf.shape) // 2

    def reach(dy: float, dx: float, steps: np.ndarray) -> float:
        above = [cv2.getRectSubPix(acf, (1, 1), (cx + s * dx, cy + s * dy))[0, 0] >= 0.5 for s in steps]
        return float(steps[np.argmin(above)] if not all(above) else steps[-1])

    angle = max(np.deg2rad(np.arange(-40, 41, 2)), key=lambda t: reach(np.cos(t), np.sin(t), np.arange(1, 120)))
    return (reach(np.cos(angle), np.sin(angle), np.arange(1, 120)),
            reach(-np.sin(angle), np.cos(angle), np.arange(0.25, 20, 0.25)))


def rain_layers(photos) -> None:
    print("2. the rain layer, Y levels: mean, median, low-pass spread (veil), high-pass spread (streaks);\n"
          "   the streaks' length and width in pixels (streak_shape); % of pixels brightened by over 3 levels")
    sets = {
        "rain12 009..012": [(D / f"rain12/rain/rain-{i:03d}.png", D / f"rain12/norain/norain-{i:03d}.png")
                            for i in range(9, 13)],
        "Rain100L samples": [(p, D / "rain100_samples/Rain100L/norain" / p.name.replace("rain-", "norain-"))
                             for p in sorted((D / "rain100_samples/Rain100L/rain").glob("*.png"))],
    }
    for name, pairs in sets.items():
        rows = [layer(read_rgb(a), read_rgb(b)) for a, b in pairs if b.exists()]
        print(f"   {name:18s} " + "  ".join(f"{v:6.2f}" for v in np.mean(rows, 0)) + f"   ({len(rows)} images)")
    for i, style in enumerate(("light", "medium", "video", "faint", "drizzle")):
        sampler, rng = PatchSampler(photos, [], 256, {style: 1.0}), np.random.default_rng([SEED, 7, i])
        rows = [layer(*(np.round(a * 255) for a in sampler.sample(rng))) for _ in range(24)]
        print(f"   synth {style:12s} " + "  ".join(f"{v:6.2f}" for v in np.mean(rows, 0)) + "   (24 crops)")


if __name__ == "__main__":
    torch.set_num_threads(2)
    photos = [read_rgb(p) for p in held_out_photos([str(D / "clean_corpus")])]
    model_bias(photos)
    leaning(photos)
    rain_layers(photos)
    loaded = load_weights(WEIGHTS)
    score = validation_psnr(loaded.net, validation_batches([str(D / "clean_corpus")]), torch.device("cpu"),
                            loaded.scale, loaded.upsample)
    shown = WEIGHTS.resolve().relative_to(ROOT) if WEIGHTS.resolve().is_relative_to(ROOT) else WEIGHTS
    print(f"3. {shown} on the validation set: {score:.2f} dB")
