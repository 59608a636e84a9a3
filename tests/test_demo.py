"""`derain demo`, the README's first command: the shipped sample derained, all of it, and shown."""
from __future__ import annotations

import av
import numpy as np

from pipeline.demo import SAMPLE, run_demo
from pipeline.images import read_rgb


def test_demo_derains_every_frame_of_the_sample_and_writes_the_comparison(tmp_path):
    paths = run_demo(tmp_path / "demo")
    with av.open(str(SAMPLE)) as src, av.open(str(paths["derained video"])) as out:
        assert out.streams.video[0].frames == src.streams.video[0].frames == 60
    side = read_rgb(paths["side-by-side (rainy | derained)"])
    rainy, derained = np.hsplit(side.astype(int), 2)
    assert np.abs(rainy - derained).mean() > 0.5  # the derained half differs: rain was taken out
    assert derained.mean() < rainy.mean()  # and rain only brightens
