"""The temporal profiles: windows of neighbouring frames, batches that overlap by the window."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from media import make_video
from pipeline.api import Pipeline
from pipeline.batching import Batcher
from pipeline.framequeue import FrameQueue
from pipeline.frames import Frame
from pipeline.model.arch_util import build_network
from pipeline.model.inference import Derainer, window_halo, window_offsets, windows
from pipeline.model.weights import network_frames

TEMPORAL = {"model": {"profile": "temporal-fast", "runtime": "torch", "dtype": "fp32", "device": "cpu"},
            "workers": {"backend": "local", "threads": 1}}


def frame(i: int, size=(8, 6)) -> Frame:
    return Frame(np.full((size[1], size[0], 3), i % 256, np.uint8), i, i, Fraction(1, 25))


def feed(frames: list[Frame]) -> FrameQueue:
    q = FrameQueue(len(frames) + 1, "block")
    for f in frames:
        q.put(f)
    q.close()
    return q


def test_window_offsets_and_halo():
    assert window_offsets(1, False) == () and window_halo(1, False) == (0, 0)
    assert window_offsets(3, False) == (-1, 1) and window_halo(3, False) == (1, 1)
    assert window_offsets(3, True) == (-2, -1) and window_halo(3, True) == (2, 0)


def test_windows_put_the_target_first_and_repeat_the_edge():
    x = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    w = windows(x, slice(1, 4), (-1, 1))
    assert w.shape == (3, 9, 2, 2)
    assert w[:, ::3, 0, 0].tolist() == [[1, 0, 2], [2, 1, 3], [3, 2, 4]]
    edge = windows(x, slice(0, 5), (-1, 1))[:, ::3, 0, 0].tolist()
    assert edge[0] == [0, 0, 1] and edge[-1] == [4, 3, 4]  # past the ends: the nearest frame


def test_batches_overlap_by_the_halo_and_never_across_a_size_change():
    frames = [frame(i) for i in range(7)] + [frame(i, (10, 6)) for i in range(7, 10)]
    batches = list(Batcher(3, 1000, halo=(1, 1)).batches(feed(frames)))
    assert [b.seq for b in batches] == [(0, 1, 2), (3, 4, 5), (6,), (7, 8, 9)]
    seqs = [(None if b.before is None else int(b.before[0, 0, 0, 0]),
             None if b.after is None else int(b.after[0, 0, 0, 0])) for b in batches]
    # frame 6 is the last of its size: no context from the 10x6 frames after it, nor before 7
    assert seqs == [(None, 3), (2, 6), (5, None), (None, None)]
    images, context = batches[1].model_input()
    assert context == (1, 1) and images[:, 0, 0, 0].tolist() == [2, 3, 4, 5, 6]


def test_causal_batches_carry_past_frames_only():
    batches = list(Batcher(2, 1000, halo=(2, 0)).batches(feed([frame(i) for i in range(5)])))
    assert [b.seq for b in batches] == [(0, 1), (2, 3), (4,)]
    assert batches[0].before is None and all(b.after is None for b in batches)
    assert batches[2].before[:, 0, 0, 0].tolist() == [2, 3]


def test_shipped_temporal_weights_see_three_frames():
    assert network_frames(None, "temporal") == 3 and network_frames(None, "temporal-fast") == 3
    assert network_frames(None, "full") == 1


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("t") / "in.mp4", frames=9, size=(64, 48))


def run_frames(clip, max_batch: int, deflicker: bool = False) -> np.ndarray:
    cfg = {**TEMPORAL, "batching": {"max_batch": max_batch, "max_wait_ms": 1000}}
    cfg["model"] = {**cfg["model"], "deflicker": deflicker}
    return np.stack([f.image for f in Pipeline.from_config(cfg).frames(clip)])


def assert_same_frames(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to float rounding: CPU convolutions sum in an order that can vary with the batch
    size, so one pixel in ~10^5 may come out one level apart (seen once in ~20 runs). Frames
    derained without their neighbours differ by up to 16 levels on 4 % of the pixels."""
    assert a.shape == b.shape
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4, (diff.max(), (diff > 0).mean())


def test_a_batch_boundary_changes_nothing(clip):
    one = run_frames(clip, 1)
    assert len(one) == 9
    for size in (2, 4, 9):
        assert_same_frames(run_frames(clip, size), one)


def test_the_network_uses_the_neighbours(clip):
    """Batches cut without context (each batch alone) give other frames: the overlap matters."""
    from pipeline.sources.files import open_source

    frames = np.stack([f.image for f in open_source(clip)])
    for align in ("none", "fast"):
        d = Derainer.load("temporal-fast", device="cpu", dtype="fp32", runtime="torch", align=align)
        whole = d(frames).frames
        if align == "none":  # aligned, this clip's neighbours come close to the target itself
            cut = np.concatenate([d(frames[i:i + 2]).frames for i in range(0, 9, 2)])
            assert (np.abs(whole.astype(int) - cut.astype(int)) > 1).mean() > 0.01
        piecewise = np.concatenate([d(frames[max(0, i - 1):i + 3], (min(i, 1), 1 if i + 2 < 9 else 0)).frames
                                    for i in range(0, 9, 2)])
        assert_same_frames(piecewise, whole)


def test_temporal_network_builds_with_a_window_input():
    net = build_network({"type": "TemporalDerainNet", "width": 4, "frames": 3}).eval()
    out = net(torch.rand(2, 9, 20, 28))
    assert out.rain.shape == (2, 3, 20, 28) and net.frames == 3


def test_causal_context_stops_at_a_size_change():
    sizes = [(8, 6), (8, 6), (10, 6), (8, 6), (8, 6)]
    frames = [frame(i, s) for i, s in enumerate(sizes)]
    batches = list(Batcher(1, 1000, halo=(2, 0)).batches(feed(frames)))
    before = {b.seq[0]: [] if b.before is None else b.before[:, 0, 0, 0].tolist() for b in batches}
    assert before == {0: [], 1: [0], 2: [], 3: [], 4: [3]}  # never frame 1 across the 10x6 frame


def test_training_clips_repeat_a_clamped_edge_frame_exactly(monkeypatch):
    from pipeline.model import data
    from pipeline.model.data import PatchSampler
    from pipeline.model.motion import MotionRanges, neighbour_offsets

    rng = np.random.default_rng(0)
    drawn = {tuple(neighbour_offsets(rng, 3, MotionRanges(edge=1.0))) for _ in range(200)}
    assert drawn == {(0, 1), (-1, 0), (0, 0), (-1, -1)}  # as windows() clamps at a file's ends
    photo = (np.random.default_rng(1).random((80, 90, 3)) * 255).astype(np.uint8)
    sampler = PatchSampler([photo], [], 32, {"medium": 1.0}, frames=3)
    # Causal windows at a stream's start only: (t, t, t) or (t, t-1, t-1).
    monkeypatch.setattr(data, "_MOTION", MotionRanges(causal=1.0, edge=1.0))
    sampler_rng = np.random.default_rng(5)
    for _ in range(10):
        (rainy,), _ = sampler.sample_clip(sampler_rng)
        assert rainy.shape == (3, 32, 32, 3)
        np.testing.assert_array_equal(rainy[1], rainy[2])


def test_twins_rain_the_same_clip_twice():
    """data.twins: rows n..2n-1 of a batch are rows 0..n-1's clips rained again: the same clean
    target and scene (a frame repeated at an edge repeats in both), other streaks."""
    from pipeline.model.data import PatchSampler

    photo = (np.random.default_rng(1).random((80, 90, 3)) * 255).astype(np.uint8)
    args = ([photo], [], 32, {"light": 1.0})
    rainy, clean = PatchSampler(*args, frames=3, twins=True).batch(4, np.random.default_rng(2))
    assert rainy.shape == (8, 9, 32, 32) and clean.shape == (8, 3, 32, 32)
    np.testing.assert_array_equal(clean[:4], clean[4:])
    for i in range(4):
        twin, other = np.abs(rainy[i] - rainy[i + 4]).mean(), np.abs(rainy[i] - rainy[4 + (i + 1) % 4]).mean()
        assert 0.002 < twin < 0.5 * other  # other rain, on the same scene (not another clip's)
    single, _ = PatchSampler(*args, frames=3).batch(4, np.random.default_rng(2))
    assert single.shape == (4, 9, 32, 32)
    # One frame: one crop rained twice, the same way (style and JPEG quality), other streaks.
    rainy, clean = PatchSampler(*args, jpeg=1.0, twins=True).batch(4, np.random.default_rng(2))
    assert rainy.shape == clean.shape == (8, 3, 32, 32)
    np.testing.assert_array_equal(clean[:4], clean[4:])
    for i in range(4):
        twin, other = np.abs(rainy[i] - rainy[i + 4]).mean(), np.abs(rainy[i] - rainy[4 + (i + 1) % 4]).mean()
        assert 0.002 < twin < 0.5 * other


def test_the_pipeline_gives_the_frames_eval_scores(clip):
    """Aligned windows and the deflicker, in the pipeline's lanes as in `Derainer.sequence` (what
    `derain eval` scores); without the deflicker the frames differ."""
    from pipeline.sources.files import open_source

    frames = [f.image for f in open_source(clip)]
    d = Derainer.load("temporal-fast", device="cpu", dtype="fp32", runtime="torch", deflicker=True)
    assert d.align == "fast" and d.deflicker
    scored = np.concatenate([r.frames for r in d.sequence(frames, chunk=3)])
    assert_same_frames(run_frames(clip, 2, deflicker=True), scored)
    plain = Derainer.load("temporal-fast", device="cpu", dtype="fp32", runtime="torch", deflicker=False)
    unsteadied = np.concatenate([r.frames for r in plain.sequence(frames, chunk=3)])
    assert (np.abs(unsteadied.astype(int) - scored.astype(int)) > 1).mean() > 0.01


def test_deflickered_files_travel_as_rgb(clip, tmp_path):
    """The deflicker reads RGB in the lane: such a file's frames are never yuv420p planes."""
    from pipeline.config import load_settings
    from pipeline.files import frame_layout
    from pipeline.settings import RunSettings
    from pipeline.sources.files import open_source

    info = open_source(clip).info
    on = load_settings(RunSettings, None, {"decode.yuv": True, "model.profile": "temporal-fast",
                                           "model.deflicker": True})
    off = load_settings(RunSettings, None, {"decode.yuv": True, "model.profile": "temporal-fast",
                                            "model.deflicker": False})
    assert load_settings(RunSettings, None, {"model.profile": "temporal-fast"}).model.deflicker == "auto"
    assert frame_layout(on, info, tmp_path / "out.mp4") == "rgb"
    assert frame_layout(off, info, tmp_path / "out.mp4") == "yuv420p"
