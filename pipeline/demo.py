"""`derain demo`: derain the shipped rainy sample clip and show the result beside the input."""
from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np

from .config import load_settings
from .files import derain_file
from .images import make_folder, write_rgb
from .settings import RunSettings

SAMPLE = Path(__file__).with_name("assets") / "rainy-sample.mp4"


def middle_frame(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return frames[len(frames) // 2]


def run_demo(out_dir: str | Path = "derain-demo", profile: str = "temporal-fast", overwrite: bool = True) -> dict[str, Path]:
    """Derain the sample; write the video and a rainy | derained comparison image; return their paths."""
    out = Path(out_dir)
    make_folder(out, "--out")
    video = out / "derained-sample.mp4"
    settings = load_settings(RunSettings, None, {"model.profile": profile})
    stats = derain_file(SAMPLE, video, settings, overwrite=overwrite, progress=sys.stderr.isatty())
    side = out / "side-by-side.png"
    write_rgb(side, np.hstack([middle_frame(SAMPLE), middle_frame(video)]))
    print(f"derained {stats.frames_out} frames of {SAMPLE.name} in {stats.seconds:.1f} s "
          f"({stats.fps:.1f} frames/s, profile {profile})")
    return {"input": SAMPLE, "derained video": video, "side-by-side (rainy | derained)": side}
