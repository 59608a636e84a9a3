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


def test_a_demo_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    from pipeline.cli import main

    (tmp_path / "afile").write_text("mine")
    assert main(["demo", "--out", str(tmp_path / "afile")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'afile'}: is a file; give --out a folder" in err and "Traceback" not in err
    assert (tmp_path / "afile").read_text() == "mine"
