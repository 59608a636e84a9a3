import threading
import time

import numpy as np
import pytest

from pipeline.batching import Batcher
from pipeline.framequeue import FrameQueue
from pipeline.frames import Frame, FrameBatch


def frame(i, shape=(4, 6, 3)):
    return Frame(np.full(shape, i % 256, np.uint8), i, i, None)


def fill(frames, maxsize=100, policy="block", close=True):
    q = FrameQueue(maxsize, policy)
    for f in frames:
        q.put(f)
    if close:
        q.close()
    return q


def test_size_trigger_alone():
    q = fill([frame(i) for i in range(10)])
    sizes = [len(b) for b in Batcher(4, max_wait_ms=1e6).batches(q)]
    assert sizes == [4, 4, 2]  # the partial batch is flushed at end of stream


def test_timeout_trigger_alone():
    q = fill([frame(0), frame(1)], close=False)
    b = Batcher(max_batch=1000, max_wait_ms=50)
    start = time.monotonic()
    first = next(b.batches(q))
    assert len(first) == 2 and 0.04 < time.monotonic() - start < 1.0
    q.close()


def test_zero_wait_cuts_immediately():
    q = fill([frame(0)], close=False)
    assert len(next(Batcher(8, max_wait_ms=0).batches(q))) == 1
    q.close()


def test_a_size_change_cuts_the_batch_and_keeps_order():
    q = fill([frame(0), frame(1), frame(2, (8, 8, 3)), frame(3, (8, 8, 3))])
    batches = list(Batcher(8, 1e6).batches(q))
    assert [b.seq for b in batches] == [(0, 1), (2, 3)]


def test_batch_arrays_are_stacked_in_order():
    q = fill([frame(i) for i in range(3)])
    (b,) = list(Batcher(3, 1e6).batches(q))
    assert b.images.shape == (3, 4, 6, 3) and list(b.images[:, 0, 0, 0]) == [0, 1, 2]


@pytest.mark.parametrize("kwargs,match", [
    ({"max_batch": 0}, "max_batch must be an integer >= 1"),
    ({"max_batch": 2.5}, "max_batch must be an integer >= 1"),
    ({"max_wait_ms": -1}, "max_wait_ms must be a number >= 0"),
    ({"max_wait_ms": "10"}, "max_wait_ms must be a number >= 0"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Batcher(**kwargs)


def test_drop_oldest_keeps_the_newest_and_counts():
    q = fill([frame(i) for i in range(10)], maxsize=3, policy="drop-oldest")
    got = [b.seq for b in Batcher(10, 1e6).batches(q)]
    assert got == [(7, 8, 9)] and q.dropped == 7 and q.put_count == 10


def test_block_policy_never_drops():
    q = FrameQueue(2, "block")
    out = []
    t = threading.Thread(target=lambda: out.extend(b.seq for b in Batcher(1, 1e6).batches(q)))
    t.start()
    for i in range(20):
        q.put(frame(i))
    q.close()
    t.join(5)
    assert [s[0] for s in out] == list(range(20)) and q.dropped == 0


def test_worker_returning_the_wrong_count_is_an_error():
    from pipeline.errors import WorkerError

    b = FrameBatch.of([frame(0), frame(1)])
    with pytest.raises(WorkerError, match="1 frames for a batch of 2"):
        b.derained(b.images[:1], np.zeros(1, np.float32))


def test_frame_checks_its_image():
    with pytest.raises(ValueError, match=r"expected \(H, W, 3\) or yuv420p \(H\*3/2, W\) uint8"):
        Frame(np.zeros((4, 4), np.uint8), 0, 0, None)  # not the planes of an even-sized frame either
    with pytest.raises(ValueError, match="expected"):
        Frame(np.zeros((4, 4, 3), np.float32), 0, 0, None)
    assert Frame(np.zeros((6, 4), np.uint8), 0, 0, None).image.shape == (6, 4)  # 4x4 as yuv420p planes


class _Slow:
    """A source that yields a frame every `every_s` seconds, each lane's frames its own colour."""

    def __init__(self, lane: int, n: int, every_s: float, shape=(16, 24, 3)):
        from types import SimpleNamespace

        self.lane, self.n, self.every_s, self.shape = lane, n, every_s, shape
        self.info = SimpleNamespace(width=shape[1], height=shape[0])

    def __iter__(self):
        for i in range(self.n):
            time.sleep(self.every_s)
            yield Frame(np.full(self.shape, 40 * self.lane + i % 40, np.uint8), i, i, None, str(self.lane),
                        time.monotonic())


class _Collect:
    def __init__(self):
        self.batches = []

    def write(self, batch):
        self.batches.append(batch)

    def close(self, ok=True):
        pass


def test_lanes_waiting_together_share_one_model_call_and_each_gets_its_own_frames():
    """Three cameras cut one-frame batches; a model call takes the batches waiting together (up to
    max_batch frames of one size), and each lane still gets its own frames, in order."""
    from pipeline.runner import MERGED, Input, Runner
    from pipeline.settings import BatchSettings, ModelSettings, WorkerSettings
    from pipeline.workers import LocalPool

    class Counting(LocalPool):
        calls: list[int] = []

        def submit(self, key, images, context=(0, 0), matrix="bt601"):
            self.calls.append((len(images), len(key[2]) if key[1] == MERGED else 1))
            super().submit(key, images, context, matrix)

    pool = Counting(ModelSettings(profile="identity", delay_ms=10), WorkerSettings(backend="local", inflight=1))
    sinks = [_Collect() for _ in range(3)]
    lanes = [Input(f"cam{i}", open=lambda stop, i=i: _Slow(i, 30, 0.03), outputs=lambda info, k=sinks[i]: [k])
             for i in range(3)]
    batching = BatchSettings(max_batch=3, max_wait_ms=0, queue_size=64, policy="block")
    try:
        metrics = Runner(lanes, pool, batching, strict=True).run()
    finally:
        pool.close()
    frames, lanes_per_call = zip(*pool.calls)
    assert sum(frames) == 90 and max(frames) <= 3
    assert sum(n > 1 for n in lanes_per_call) >= 5, pool.calls  # calls that served several lanes
    for i, sink in enumerate(sinks):
        frames = np.concatenate([b.images for b in sink.batches])
        assert [s for b in sink.batches for s in b.seq] == list(range(30))
        assert [int(f[0, 0, 0]) for f in frames] == [40 * i + k for k in range(30)]
        assert metrics.lanes[f"cam{i}"].frames_out == 30


def test_local_pool_queues_the_next_batch_while_the_last_is_waited_for():
    """On a GPU `Derainer.start` only queues a batch: the pool's model thread must start the next
    batch before the previous one's result is waited for (else the GPU idles during every copy),
    keep the order, and fail a batch that raised alone, naming it."""
    import threading

    from pipeline.errors import WorkerError
    from pipeline.model.inference import DerainResult
    from pipeline.settings import ModelSettings, WorkerSettings
    from pipeline.workers import LocalPool

    started = []
    second_started = threading.Event()

    class Pending:
        def __init__(self, images):
            self.images = images

        def result(self):
            if int(self.images[0, 0, 0, 0]) == 0:  # the first batch finishes only once the second started
                assert second_started.wait(5), "the second batch was not started while the first ran"
            if int(self.images[0, 0, 0, 0]) == 2:
                raise RuntimeError("CUDA error: an illegal memory access")
            return DerainResult(self.images + 1, np.zeros(len(self.images), np.float32))

    class Queueing:
        halo = (0, 0)

        def start(self, images, context=(0, 0), matrix="bt601"):
            started.append(int(images[0, 0, 0, 0]))
            if len(started) == 2:
                second_started.set()
            return Pending(images)

    pool = LocalPool(ModelSettings(profile="identity"), WorkerSettings(backend="local", inflight=4))
    pool.worker.derainer = Queueing()
    try:
        for i in range(4):
            pool.submit(i, np.full((1, 4, 4, 3), i, np.uint8))
        results, error = {}, None
        while pool.inflight:
            try:
                results.update({key: int(frames[0, 0, 0, 0]) for key, frames, _ in pool.poll(1)})
            except WorkerError as exc:
                error = str(exc)
    finally:
        pool.close()
    assert started == [0, 1, 2, 3]
    assert results == {0: 1, 1: 2, 3: 4}
    assert error is not None and "batch 2" in error and "illegal memory access" in error


def test_local_pool_close_leaves_no_batch_unfinished():
    """Closing with batches queued and one on the model: the one running finishes, the rest are
    cancelled; none is left running for a later poll to wait on forever."""
    import threading

    from pipeline.model.inference import DerainResult
    from pipeline.settings import ModelSettings, WorkerSettings
    from pipeline.workers import LocalPool

    release = threading.Event()

    class Slow:
        def __init__(self, images):
            self.images = images

        def result(self):
            release.wait(0.3)
            return DerainResult(self.images, np.zeros(len(self.images), np.float32))

    started = threading.Semaphore(0)

    class Queueing:
        halo = (0, 0)

        def start(self, images, context=(0, 0), matrix="bt601"):
            started.release()
            return Slow(images)

    pool = LocalPool(ModelSettings(profile="identity"), WorkerSettings(backend="local", inflight=4))
    pool.worker.derainer = Queueing()
    for i in range(4):
        pool.submit(i, np.full((1, 4, 4, 3), i, np.uint8))
    for _ in range(4):  # all four on the model (queued on the GPU), one being waited for
        assert started.acquire(timeout=5)
    pool.close()
    assert all(f.done() for f in pool.inflight), [f._state for f in pool.inflight]


class _Panning:
    """A source of a textured picture panning 1 px a frame (each lane its own picture)."""

    def __init__(self, lane: int, n: int, shape=(48, 64)):
        from types import SimpleNamespace

        rng = np.random.default_rng(lane)
        h, w = shape
        picture = (rng.random((h, w + n, 3)) * 255).astype(np.uint8)
        self.frames = [np.ascontiguousarray(picture[:, i:i + w]) for i in range(n)]
        self.info = SimpleNamespace(width=w, height=h)

    def __iter__(self):
        for i, image in enumerate(self.frames):
            yield Frame(image, i, i, None, "pan", time.monotonic())


def _steady_run(monkeypatch, strict: bool, fail_at: int | None = None):
    """Two panning lanes through an identity pool with the deflicker on; returns the sources,
    the sinks and the threads the deflicker ran on."""
    from pipeline.model.deflicker import Deflicker
    from pipeline.runner import Input, Runner
    from pipeline.settings import BatchSettings, ModelSettings, WorkerSettings
    from pipeline.workers import LocalPool

    threads, calls, frames = set(), [0], Deflicker.frames

    def spied(self, images):
        threads.add(threading.current_thread().name)
        calls[0] += 1
        if calls[0] == fail_at:
            raise RuntimeError("deflicker broke")
        return frames(self, images)

    monkeypatch.setattr(Deflicker, "frames", spied)
    pool = LocalPool(ModelSettings(profile="identity", deflicker=True), WorkerSettings(backend="local"))
    sources, sinks = [_Panning(i, 12) for i in range(2)], [_Collect() for _ in range(2)]
    lanes = [Input(f"cam{i}", open=lambda stop, s=sources[i]: s, outputs=lambda info, k=sinks[i]: [k])
             for i in range(2)]
    try:
        Runner(lanes, pool, BatchSettings(max_batch=3, max_wait_ms=0, queue_size=64, policy="block"),
               strict=strict).run()
    finally:
        pool.close()
    return sources, sinks, threads


def test_each_lane_is_deflickered_in_order_on_a_thread_of_its_own(monkeypatch):
    """The deflicker runs off the frame loop's thread, one thread a lane, and each lane's frames
    come out as one Deflicker fed that lane's frames in order gives them."""
    from pipeline.model.deflicker import Deflicker

    sources, sinks, threads = _steady_run(monkeypatch, strict=True)
    assert threading.main_thread().name not in threads and len(threads) == 2, threads
    for source, sink in zip(sources, sinks):
        assert [s for b in sink.batches for s in b.seq] == list(range(12))
        out = np.concatenate([b.images for b in sink.batches])
        np.testing.assert_array_equal(out, Deflicker().frames(np.stack(source.frames)))
        assert (out != np.stack(source.frames)).mean() > 0.1  # it did blend


def test_a_failing_deflicker_ends_a_file_but_not_a_camera(monkeypatch):
    with pytest.raises(RuntimeError, match="deflicker broke"):
        _steady_run(monkeypatch, strict=True, fail_at=2)
    sources, sinks, _ = _steady_run(monkeypatch, strict=False, fail_at=2)
    for sink in sinks:  # every frame still written, in order (one batch as derained)
        assert [s for b in sink.batches for s in b.seq] == list(range(12))
