"""The embedding API: build from a config or from objects, run into a file or iterate."""
from __future__ import annotations

import numpy as np
import pytest

from media import make_video
from pipeline.api import Pipeline
from pipeline.errors import PluginError
from plugins import Plugin, Result

BASE = {"model": {"profile": "identity"}, "workers": {"backend": "local"}, "batching": {"max_batch": 3}}


class Tagger(Plugin):
    def process(self, batch):
        return [Result(data={"even": s % 2 == 0}) for s in batch.seq]


def test_iterate_frames_with_metadata(tmp_path):
    clip = make_video(tmp_path / "in.mp4", frames=10, size=(64, 48))
    pipe = Pipeline.from_config(BASE, plugins=[Tagger()])
    frames = list(pipe.frames(clip))
    assert [f.seq for f in frames] == list(range(10))
    assert frames[0].image.shape == (48, 64, 3) and frames[0].rainy is not None
    assert frames[3].results["tagger"].data == {"even": False}
    assert frames[1].seconds > frames[0].seconds and frames[0].rain_intensity == 0.0


def test_early_stop_and_run_into_a_file(tmp_path):
    clip = make_video(tmp_path / "in.mp4", frames=12, size=(64, 48))
    pipe = Pipeline.from_config(BASE, plugins=[{"use": "noop"}])
    for frame in pipe.frames(clip):
        if frame.seq == 2:
            break
    stats = pipe.run(clip, tmp_path / "out.mp4")
    assert stats.frames_out == 12 and (tmp_path / "out.mp4").is_file()


def test_live_style_source_object():
    from fractions import Fraction

    from pipeline.frames import Frame

    class Fake:
        """Stands in for a pipeline.sources.live source: an iterable of Frames with an info."""

        info = None
        truncated = False

        def __iter__(self):
            for i in range(5):
                yield Frame(np.full((16, 16, 3), i, np.uint8), i, i, Fraction(1, 25), "cam1")

    frames = list(Pipeline.from_config({**BASE, "batching": {"max_batch": 2, "max_wait_ms": 10}}).frames(Fake()))
    assert [(f.source_id, f.seq, int(f.image[0, 0, 0])) for f in frames] == [("cam1", i, i) for i in range(5)]


def test_bad_plugin_fails_at_build():
    with pytest.raises(PluginError, match="with.nope: unknown key"):
        Pipeline.from_config(BASE, plugins=[{"use": "noop", "with": {"nope": 1}}])
