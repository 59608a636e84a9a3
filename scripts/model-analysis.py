"""The two analyses behind docs/MODEL.md's video-rain and guided-upsampling sections.

    .venv/bin/python scripts/model-analysis.py streaks WEIGHTS [WEIGHTS ...]
        How much of NTU a1's rain each weights file removes, split into faint streaks
        (the rain brightens Y by 3-60 levels) and bright ones (60+), on frames 20/50/110/150.
    .venv/bin/python scripts/model-analysis.py upsample WEIGHTS
        Mean Y-PSNR on rain12 and Rain100L of a reduced-scale weights file with bilinear
        and with guided upsampling over a sweep of radius and eps (fp32, no retraining).
"""
from __future__ import annotations

import sys
from pathlib import Path

from usage import answer_help

answer_help(__doc__)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.images import pair_files, read_rgb  # noqa: E402
from pipeline.model.evaluate import psnr, y_channel  # noqa: E402
from pipeline.model.inference import Derainer  # noqa: E402
from pipeline.model.scale import guided_upsample  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NTU = DATA / "ntu_synthetic_video"
BANDS = {"faint (3-60)": (3, 60), "bright (60+)": (60, 256), "off the rain": (-256, 3)}


def streaks(weights: str) -> None:
    derain = Derainer.load(weights=weights)
    mse, parts, removed = [], {b: [] for b in BANDS}, {b: [] for b in BANDS}
    for i in (20, 50, 110, 150):
        rainy, clean = read_rgb(NTU / "a1_Rain" / f"{i:05d}.jpg"), read_rgb(NTU / "a1_GT" / f"{i:05d}.jpg")
        y_clean = y_channel(clean)
        rain = y_channel(rainy) - y_clean
        err = y_channel(derain(rainy[None]).frames[0]) - y_clean
        mse.append((err**2).mean())
        for band, (lo, hi) in BANDS.items():
            m = (rain >= lo) & (rain < hi)
            parts[band].append((err[m] ** 2).sum() / err.size)
            removed[band].append(1 - err[m].mean() / rain[m].mean())
    print(f"{weights}: mean squared error {np.mean(mse):.1f}")
    for band in BANDS:
        share = f", brightness removed {np.mean(removed[band]):.0%}" if band != "off the rain" else ""
        print(f"  {band}: {np.mean(parts[band]):.1f} of it{share}")


def upsample(weights: str) -> None:
    derain = Derainer.load(weights=weights, dtype="fp32", runtime="torch")
    variants = {"bilinear": None, **{f"guided r{r} eps {e:g}": (r, e) for r in (1, 2)
                                     for e in (1e-4, 3e-4, 1e-3, 2e-3, 4e-3)}}
    for name, sub in (("rain12", "rain12"), ("Rain100L", "rain100_samples/Rain100L")):
        scores = {v: [] for v in variants}
        for rain_path, clean_path in pair_files(DATA / sub / "rain", DATA / sub / "norain"):
            rainy, y_clean = read_rgb(rain_path), y_channel(read_rgb(clean_path))
            x = torch.from_numpy(rainy).permute(2, 0, 1)[None].float() / 255
            small = F.interpolate(x, scale_factor=derain.scale, mode="bilinear", align_corners=False,
                                  antialias=True)
            with torch.no_grad():
                r_small = derain.net(small).rain
            for v, params in variants.items():
                if params is None:
                    r = F.interpolate(r_small, size=x.shape[-2:], mode="bilinear", align_corners=False)
                else:
                    r = guided_upsample(r_small, small, x, *params)
                out = ((x - r).clamp(0, 1) * 255).round()[0].permute(1, 2, 0).byte().numpy()
                scores[v].append(psnr(y_channel(out), y_clean))
        for v in variants:
            print(f"{name:9s} {v:22s} {np.mean(scores[v]):.2f}")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("streaks", "upsample"):
        sys.exit(__doc__)
    torch.set_num_threads(2)
    for w in sys.argv[2:]:
        {"streaks": streaks, "upsample": upsample}[sys.argv[1]](w)
