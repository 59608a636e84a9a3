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


def test_a_pipeline_keeps_its_plugins_after_frames_stops(tmp_path):
    """A stopped frames() must not leave the shared chain's calls capped for the next runs."""
    import time

    clip = make_video(tmp_path / "in.mp4", frames=30, size=(64, 48))
    pipe = Pipeline.from_config(BASE, plugins=[Tagger()])
    for frame in pipe.frames(clip):
        if frame.seq == 1:
            break
    time.sleep(3.5)  # past the grace a stopping live run gives plugin calls
    frames = list(pipe.frames(clip))
    assert len(frames) == 30 and all(f.results["tagger"] is not None for f in frames)
    assert pipe.chain.stats["tagger"].errors == 0


def test_stopping_early_ends_the_reading_at_once(tmp_path):
    """Closing the iterator stops the decoder too: it does not read the rest of the file first."""
    import threading
    import time

    from pipeline.sources.files import VideoFileSource

    class SlowFile(VideoFileSource):  # a decoder at 50 frames/s: 6 s for the whole clip
        def __iter__(self):
            for frame in super().__iter__():
                time.sleep(0.02)
                yield frame

    clip = make_video(tmp_path / "in.mp4", frames=300, size=(64, 48))
    start = time.monotonic()
    for _ in Pipeline.from_config(BASE).frames(SlowFile(clip)):
        break
    assert time.monotonic() - start < 2.0

    def left():
        return [t for t in threading.enumerate() if t.name.startswith(("reader-", "lane-", "derain-api"))]

    end = time.monotonic() + 2.0
    while left() and time.monotonic() < end:
        time.sleep(0.05)
    assert not left()


def test_a_source_that_fails_before_its_first_frame_raises_instead_of_hanging():
    import threading

    class NoInfo:  # an iterable of frames without the `info` a source must have
        def __iter__(self):
            return iter(())

    box = {}

    def consume():
        try:
            list(Pipeline.from_config(BASE).frames(NoInfo()))
        except Exception as exc:  # noqa: BLE001
            box["error"] = exc

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "frames() hung"
    assert isinstance(box.get("error"), TypeError) and "source: a file or folder path" in str(box["error"])


def test_a_pipeline_serves_one_run_at_a_time_and_says_so(tmp_path):
    """Two runs at once shared the plugins' chain: internal errors and cut JSONL files."""
    from pipeline.errors import DerainError

    clip = make_video(tmp_path / "in.mp4", frames=6, size=(64, 48))
    pipe = Pipeline.from_config(BASE, plugins="noop")  # one plugin by name (a str was read letter by letter)
    first = pipe.frames(clip)
    next(first)
    with pytest.raises(DerainError, match="plugins serve another run"):
        list(pipe.frames(clip))
    first.close()
    assert len(list(pipe.frames(clip))) == 6
    with pytest.raises(TypeError, match="source: a file or folder path, or a source object"):
        list(pipe.frames([np.zeros((8, 8, 3), np.uint8)]))


def test_each_run_of_a_pipeline_starts_its_jsonl_afresh(tmp_path):
    """A process-wide 'already started' note made a second run add to the first run's lines."""
    clip = make_video(tmp_path / "in.mp4", frames=5, size=(64, 48))
    lines = tmp_path / "lines.jsonl"
    pipe = Pipeline.from_config(BASE, plugins=[{"use": "jsonl", "with": {"path": str(lines)}}])
    for out in ("a.mp4", "b.mp4"):
        pipe.run(clip, tmp_path / out)
        assert len(lines.read_text().splitlines()) == 5
