"""Whether a fine-tune's weights replace a single-frame profile's shipped ones, on validation alone.

usage: .venv/bin/python scripts/select-weights.py --weights FILE [--shipped OLD] PROFILE   (full | fast)
           > docs/results/select-PROFILE-TAG.txt
       (--shipped: the weights FILE is to replace, where they are no longer the shipped file)

The trainer kept FILE as the best of its checkpoints on the validation batches (valset draw 0),
and the best of a dozen noisy scores is partly luck. So both weights are scored on that draw,
on a fresh draw of other crops and rain of the same held-out photos (draw 1, twice the size,
never seen by the trainer) and on each rain style alone (fresh crops too). The rule, set
before any fine-tune was scored: FILE replaces the shipped weights if it is MARGIN dB or more
higher on the fresh draw and no lower on draw 0. The test sets are not read. Since 2026-11-27
(ninth session, before any run it judges) the rule also asks for no more flicker: the validation
videos' warping error, frame by frame as the pipeline derains a stream, no higher than the
shipped weights' (both single-frame drizzle fine-tunes scored higher and flickered more on NTU
a1; the fast one's validation videos showed it too, 0.012742 -> 0.012752, which this rule would
have refused; the full one's were not scored then). The videos' Y-PSNR is printed, not part of
the rule.
(Temporal profiles have scripts/select-temporal.py, which scores them aligned and deflickered.)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.images import read_rgb  # noqa: E402
from pipeline.model.data import PatchSampler  # noqa: E402
from pipeline.model.synth import STYLES  # noqa: E402
from pipeline.model.flicker import WarpReference  # noqa: E402
from pipeline.model.inference import Derainer  # noqa: E402
from pipeline.model.valset import (SEED, VIDEO_STYLES, by_style, derain_videos, held_out_photos,  # noqa: E402
                                   validation_batches, validation_psnr, validation_videos, video_scores)
from pipeline.model.weights import default_weights, load_weights  # noqa: E402

CLEAN = [str(Path(__file__).resolve().parents[2] / "shared/data/clean_corpus")]
MARGIN = 0.05  # dB, as select-temporal.py's


def per_style(photos) -> dict[str, list]:
    """48 fresh crops of each style alone, in batches of 16."""
    return {name: [PatchSampler(photos, [], 128, {name: 1.0}, jpeg=0.3).batch(
        16, np.random.default_rng([SEED, 1, i, 2, k])) for k in range(3)] for i, name in enumerate(STYLES)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True, help="the fine-tune's weights file")
    ap.add_argument("--shipped", help="the weights FILE would replace (default: the profile's shipped file)")
    ap.add_argument("profile", choices=["full", "fast"])
    a = ap.parse_args()
    torch.set_num_threads(2)
    sets = {"draw 0 (the trainer's)": validation_batches(CLEAN),
            "draw 1 (fresh)": validation_batches(CLEAN, count=320, draw=1)}
    styles = per_style([read_rgb(p) for p in held_out_photos(CLEAN)])
    clips = validation_videos(CLEAN)
    refs = [WarpReference(list(clean)) for _, clean in clips]
    scores = {}
    for label, path in (("shipped", Path(a.shipped or default_weights(a.profile))), ("candidate", Path(a.weights))):
        w = load_weights(path)
        run = {name: validation_psnr(w.net, b, torch.device("cpu"), w.scale, w.upsample)
               for name, b in (*sets.items(), *styles.items())}
        print(f"{label:9s} {path}: " + ", ".join(f"{k} {v:.2f}" for k, v in run.items()), flush=True)
        d = Derainer.load(a.profile, weights=path, device="cpu")
        outputs = derain_videos(d, clips)
        per_clip, we = video_scores(refs, clips, outputs)
        ps = float(per_clip.mean())
        print(f"{'':9s} validation videos: {ps:.3f} dB, warping error {we:.6f}; by style ({', '.join(VIDEO_STYLES)}): "
              + " ".join(f"{p:.2f}" for p in by_style(per_clip)), flush=True)
        scores[label] = {**run, "warp": we}
    old, new = scores["shipped"], scores["candidate"]
    gain0, gain1 = (new[k] - old[k] for k in sets)
    replace = gain1 >= MARGIN and gain0 >= 0 and new["warp"] <= old["warp"]
    print(f"gain: draw 0 {gain0:+.2f} dB, draw 1 {gain1:+.2f} dB; by style: "
          + ", ".join(f"{k} {new[k] - old[k]:+.2f}" for k in styles))
    print(f"rule: draw 1 +{MARGIN} dB or more, draw 0 no lower and the videos' warping error no higher "
          f"({new['warp']:.6f} against {old['warp']:.6f}) -> "
          + ("REPLACE the shipped weights" if replace else "keep the shipped weights"))


if __name__ == "__main__":
    main()
