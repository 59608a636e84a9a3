"""Choose the temporal profiles' alignment and deflicker settings on the validation set alone.

usage: .venv/bin/python scripts/select-temporal.py [PROFILE ...]  > docs/results/select-temporal.txt
       .venv/bin/python scripts/select-temporal.py --weights FILE PROFILE   (a fine-tune against the shipped weights)

For each profile (temporal, temporal-fast by default) and each alignment (none and the DIS
presets): the validation clips' Y-PSNR (valset.validation_batches, 3-frame windows) and, on the
validation videos (valset.validation_videos: 20 held-out photos under camera motion, every
rain style, the scene swaying and every frame noisy as filmed video is), the mean Y-PSNR and
warping error of the output, then of the output deflickered with each (strength, sigma, flow
preset) of a grid. The test sets are not read.

With --weights, a weights file for PROFILE (a fine-tune's best checkpoint) is scored beside the
shipped ones as the profile ships (its alignment and deflicker): the windows', the videos' and
each rain style's Y-PSNR and the warping error. It replaces the shipped weights if the mean of
its windows' and videos' Y-PSNR is higher by MARGIN or more and it flickers no more.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from usage import answer_help

answer_help(__doc__)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.model.align import PRESETS  # noqa: E402
from pipeline.model.deflicker import Deflicker  # noqa: E402
from pipeline.model.flicker import WarpReference  # noqa: E402
from pipeline.model.inference import Derainer  # noqa: E402
from pipeline.model.valset import (VIDEO_STYLES, _y_psnr, by_style, derain_videos,  # noqa: E402
                                   validation_batches, validation_videos, video_scores)

CLEAN = [str(Path(__file__).resolve().parents[2] / "shared/data/clean_corpus")]
# Sigmas stop at 30: the validation videos have no scene cuts, and a larger sigma carries a cut's
# last scene into the next (at 60 levels apart, sigma 60 keeps 18 % of it, sigma 30 2 %).
MARGIN = 0.05  # dB: the best of many checkpoints was picked on the windows, so a smaller edge may be luck
GRID = [(s, sigma, preset) for s in (0.25, 0.5, 1.0) for sigma in (5.0, 10.0, 20.0, 30.0) for preset in ("fast", "medium")]


def window_psnr(derainer: Derainer, batches) -> float:
    """Y-PSNR of the 3-frame validation windows, derained as the pipeline would (the window
    given as frames: neighbours as context around the target)."""
    scores = []
    for rainy, clean in batches:
        u8 = np.round(rainy * 255).astype(np.uint8)
        outs = []
        for w in u8:  # (9, H, W): target, then its neighbours
            f = w.reshape(3, 3, *w.shape[1:]).transpose(0, 2, 3, 1)
            # as [before, target, after]: one core frame with one context frame on each side
            outs.append(derainer(np.ascontiguousarray(np.stack([f[1], f[0], f[2]])), (1, 1)).frames[0])
        out = torch.from_numpy(np.stack(outs)).permute(0, 3, 1, 2).float()
        scores.append(_y_psnr(out, torch.from_numpy(clean * 255).round()))
    return float(torch.cat(scores).mean())


def main(profiles: list[str]) -> None:
    clips = validation_videos(CLEAN)
    refs = [WarpReference(list(clean)) for _, clean in clips]
    batches = validation_batches(CLEAN, frames=3)
    inp, inp_warp = video_scores(refs, clips, [r for r, _ in clips])
    _, clean_warp = video_scores(refs, clips, [c for _, c in clips])
    print(f"validation videos: {len(clips)} clips of {len(clips[0][0])} frames; input Y-PSNR {inp.mean():.3f}, "
          f"warping error: input {inp_warp:.6f}, clean {clean_warp:.6f}")
    grid_scores = {}  # (strength, sigma) -> per profile (psnr, warp, the profile's unaligned warp)
    for profile in profiles:
        runs = {}
        for align in ("none", *PRESETS):
            d = Derainer.load(profile, device="cpu", align=align, deflicker=False)
            t = time.time()
            outputs = derain_videos(d, clips)
            secs = time.time() - t
            win, (per_clip, we) = window_psnr(d, batches), video_scores(refs, clips, outputs)
            ps = float(per_clip.mean())
            runs[align] = (win, ps, we, outputs, per_clip)
            print(f"{profile} align={align}: windows {win:.3f} dB; videos {ps:.3f} dB, warp {we:.6f} ({secs:.0f} s)",
                  flush=True)
        # The alignment: the best mean of the two PSNRs (windows, videos).
        align = max(PRESETS, key=lambda a: runs[a][0] + runs[a][1])
        print(f"{profile}: align={align} chosen (the highest mean of windows' and videos' Y-PSNR)")
        plain = by_style(runs[align][4])
        grid_scores.setdefault("off", []).append((runs[align][1], runs[align][2], runs["none"][2], 0.0))
        print(f"{profile} align={align}, by style ({', '.join(VIDEO_STYLES)}): "
              + " ".join(f"{p:.2f}" for p in plain))
        for strength, sigma, preset in GRID:
            smoothed = [Deflicker(strength, sigma, preset).frames(out) for out in runs[align][3]]
            per_clip, we = video_scores(refs, clips, smoothed)
            ps, worst = float(per_clip.mean()), float((by_style(per_clip) - plain).min())
            grid_scores.setdefault((strength, sigma, preset), []).append((ps, we, runs["none"][2], worst))
            print(f"{profile} align={align} deflicker strength={strength} sigma={sigma} flow={preset}: "
                  f"videos {ps:.3f} dB, warp {we:.6f}, worst style {worst:+.3f} dB", flush=True)
    # One deflicker for every profile (model.deflicker: true), or none if none qualifies: the
    # highest mean videos' PSNR over the profiles, where each flickers no more than its unaligned
    # network and no rain style loses (a filter that cleans heavy rain's leftovers but blurs light
    # rain's sharp output would not qualify). model.deflicker: auto turns it on for temporal profiles.
    fair = {k: np.mean([p for p, _, _, _ in v]) for k, v in grid_scores.items()
            if all(w <= bound and worst >= 0 for _, w, bound, worst in v)}
    best = max(fair, key=fair.get)
    print("model.deflicker: " + ("none qualifies" if best == "off" else f"strength={best[0]} sigma={best[1]} flow={best[2]}")
          + " chosen (the highest mean videos' Y-PSNR over the profiles, each at a warping error <= its"
          " align=none's and no style's Y-PSNR lower than without it)")


def compare(weights: str, profile: str) -> None:
    clips = validation_videos(CLEAN)
    refs = [WarpReference(list(clean)) for _, clean in clips]
    batches = validation_batches(CLEAN, frames=3)
    scores = {}
    for name, path in (("shipped", None), (weights, weights)):
        d = Derainer.load(profile, weights=path, device="cpu")
        outputs = derain_videos(d, clips)
        win, (per_clip, we) = window_psnr(d, batches), video_scores(refs, clips, outputs)
        ps = float(per_clip.mean())
        scores[name] = (win, ps, we)
        print(f"{profile} {name} (align={d.align}, deflicker={d.deflicker}): windows {win:.3f} dB; videos {ps:.3f} dB, "
              f"warp {we:.6f}; by style ({', '.join(VIDEO_STYLES)}): "
              + " ".join(f"{p:.2f}" for p in by_style(per_clip)), flush=True)
    (w0, p0, e0), (w1, p1, e1) = scores["shipped"], scores[weights]
    better = (w1 + p1) / 2 >= (w0 + p0) / 2 + MARGIN and e1 <= e0
    print(f"{weights}: " + ("replaces" if better else "does not replace") + f" the shipped weights (by {MARGIN} dB or more: mean of windows' and "
          f"videos' Y-PSNR {(w1 + p1) / 2:.3f} against {(w0 + p0) / 2:.3f}; warping error {e1:.6f} against {e0:.6f})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--weights"]:
        compare(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1:] or ["temporal", "temporal-fast"])
