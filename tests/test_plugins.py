"""The plugin contract, the loader's errors and the chain's ordering and error policy."""
from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction

import numpy as np
import pytest

from pipeline.errors import PluginError
from pipeline.frames import FrameBatch
from plugins import (Detections, Plugin, PluginChain, PluginTimeout, Result, known_plugins, load_plugins, resolve,
                     upstream)


def batch(seq0: int, n: int = 2, source: str = "cam") -> FrameBatch:
    images = np.zeros((n, 8, 8, 3), np.uint8)
    return FrameBatch(images, tuple(range(seq0, seq0 + n)), tuple(range(seq0, seq0 + n)),
                      (Fraction(1, 25),) * n, source_id=source, rain_intensity=np.zeros(n, np.float32))


class Recorder(Plugin):
    def __init__(self, fail_on: int = -1):
        self.fail_on, self.seen = fail_on, []

    def process(self, b):
        if self.fail_on in b.seq:
            raise RuntimeError("boom")
        self.seen += list(b.seq)
        return [Result(data={"seq": s}) for s in b.seq]


class WrongLength(Plugin):
    def process(self, b):
        return [None]


class NotAPlugin:
    def process(self, b):
        return []


class Incomplete(Plugin):
    pass


class RefusesInInit(Plugin):
    def __init__(self):
        raise RuntimeError("licence server unreachable")

    def process(self, batch):
        return [None] * len(batch)


@pytest.mark.parametrize("xyxy, scores, ids, labels, match", [
    (np.zeros((2, 3)), np.zeros(2), np.zeros(2), ("a", "b"), r"xyxy: must be shape \(n, 4\)"),
    (np.zeros((2, 4)), np.zeros(3), np.zeros(2), ("a", "b"), r"scores: must be shape \(2,\)"),
    (np.zeros((2, 4)), np.zeros(2), np.zeros(1), ("a", "b"), r"class_ids: must be shape \(2,\)"),
    (np.zeros((2, 4)), np.zeros(2), np.zeros(2), ("a",), "labels: must have 2 entries"),
    (np.array([[0, 0, np.nan, 4], [0, 0, 1, 1]]), np.zeros(2), np.zeros(2), ("a", "b"), "must be a finite number"),
])
def test_detections_checks_shapes(xyxy, scores, ids, labels, match):
    with pytest.raises(ValueError, match=match):
        Detections(xyxy, scores, ids, labels)


def test_builtins_are_registered():
    assert {"noop", "hog", "haar", "onnx", "jsonl", "overlay", "snapshot"} <= set(known_plugins())
    for name in ("noop", "hog", "haar", "onnx", "jsonl", "overlay", "snapshot"):
        assert issubclass(resolve(name), Plugin)


@pytest.mark.parametrize("entry, match", [
    ({"use": "nosuch"}, r"plugins\[0\]: nosuch: unknown plugin; known: .*hog"),
    ({"use": "no_such_module:Thing"}, r"no_such_module:Thing: cannot import module 'no_such_module'"),
    ({"use": "test_plugins:Missing"}, r"module 'test_plugins' has no attribute 'Missing'"),
    ({"use": "test_plugins:NotAPlugin"}, r"test_plugins:NotAPlugin is not a subclass of plugins.Plugin"),
    ({"use": "test_plugins:Incomplete"}, r"does not implement the Plugin interface \(missing: process\)"),
    ({"use": "test_plugins:RefusesInInit"}, r"its constructor failed: RuntimeError: licence server unreachable"),
    ({"use": "hog", "with": {"scael": 1.1}}, r"hog \(plugins.hog:HOGPeople\): with.scael: unknown key; did you mean 'scale'"),
    ({"use": "jsonl", "with": {}}, r"jsonl \(plugins.jsonl:JSONLWriter\): with.path: required key missing"),
    ({"use": "hog", "with": {"scale": 0.5}}, r"hog \(plugins.hog:HOGPeople\): with: .*scale > 1"),
    ({"use": "noop", "wiht": {}}, r"noop: wiht: unknown key; did you mean 'with'"),
    ({"use": "noop", "on_error": "ignore"}, r"on_error: must be 'skip' or 'stop'"),
    ({"use": "noop", "ray": {"replicas": 0}}, r"ray.replicas: must be an integer >= 1"),
    ({"use": "noop", "ray": {"gpus": 1}}, r"ray.gpus: unknown key; did you mean 'ray.num_gpus'"),
    ({"use": "noop", "timeout_s": -1}, r"noop \(plugins.noop:NoOp\): timeout_s: must be a number of seconds > 0"),
    ({"use": "noop", "timeout_s": "10s"}, r"timeout_s: must be a number of seconds > 0, or 0 for no limit"),
    ({"use": "noop", "timeout": 5}, r"noop: timeout: unknown key; did you mean 'timeout_s'"),
])
def test_bad_entries_name_plugin_module_and_key(entry, match):
    with pytest.raises(PluginError, match=match):
        load_plugins([entry])


def test_all_problems_reported_at_once():
    with pytest.raises(PluginError) as info:
        load_plugins([{"use": "nosuch"}, {"use": "noop"}, {"use": "hog", "with": {"x": 1}}])
    assert "plugins[0]" in str(info.value) and "plugins[2]" in str(info.value)


def test_chain_runs_in_order_and_passes_results_on():
    first, second = Recorder(), Recorder()
    first.name, second.name = "first", "second"
    with PluginChain.from_config([first, second]) as chain:
        out = [b for i in range(3) for b in chain.feed(batch(2 * i))] + chain.flush()
    assert first.seen == second.seen == list(range(6))
    assert [b.seq for b in out] == [(0, 1), (2, 3), (4, 5)]
    assert upstream(out[1])["first"][0].data == {"seq": 2}


def test_skip_policy_logs_and_keeps_frames(caplog):
    plugin = Recorder(fail_on=3)
    plugin.name = "flaky"
    after = Recorder()
    after.name = "after"
    with caplog.at_level(logging.ERROR), PluginChain.from_config([plugin, after]) as chain:
        out = [b for i in range(3) for b in chain.feed(batch(2 * i))] + chain.flush()
    assert [s for b in out for s in b.seq] == list(range(6))
    assert upstream(out[1])["flaky"] == [None, None]
    assert after.seen == list(range(6))
    assert chain.stats["flaky"].errors == 1
    assert "plugin flaky" in caplog.text and "source cam seq 2..3" in caplog.text


def test_wrong_result_count_names_both_lengths(caplog):
    with caplog.at_level(logging.ERROR), PluginChain.from_config([WrongLength()]) as chain:
        out = chain.process(batch(0))
    assert out.seq == (0, 1)
    assert "returned 1 entries for a batch of 2 frames" in caplog.text


def test_stop_policy_raises_naming_plugin_source_and_seq():
    entry = {"use": "test_plugins:Recorder", "with": {"fail_on": 3}, "on_error": "stop"}
    with PluginChain.from_config([entry]) as chain, pytest.raises(
            PluginError, match=r"plugin recorder \(test_plugins:Recorder\) failed on source cam seq 2..3"):
        for i in range(3):
            chain.feed(batch(2 * i))


def test_detect_config_loads():
    from pathlib import Path

    from pipeline.config import load_settings
    from pipeline.settings import RunSettings

    settings = load_settings(RunSettings, Path(__file__).parents[1] / "configs" / "detect.yaml")
    assert [s.name for s in load_plugins(settings.plugins)] == ["hog", "haar", "overlay", "jsonl", "snapshot"]


class Hangs(Plugin):
    """Blocks in `process` (from the call numbered `hang_on`) until `release` is set: a stuck detector."""

    def __init__(self, hang_on: int = 0):
        self.hang_on, self.calls, self.closed = hang_on, 0, False
        self.release, self.hanging = threading.Event(), threading.Event()
        self.threads: set[str] = set()

    def setup(self):
        self.threads.add(threading.current_thread().name)

    def process(self, b):
        self.threads.add(threading.current_thread().name)
        self.calls += 1
        if self.calls > self.hang_on:
            self.hanging.set()
            self.release.wait()
        return [Result(data={"seq": s}) for s in b.seq]

    def close(self):
        self.closed = True


def test_timeout_defaults_and_overrides():
    a, b, c = load_plugins([{"use": "noop"}, {"use": "noop", "name": "n2", "timeout_s": 2.5},
                            {"use": "noop", "name": "n3", "timeout_s": 0}])
    assert (a.timeout_s, b.timeout_s, c.timeout_s) == (10.0, 2.5, None)


def test_a_hanging_inline_plugin_times_out_is_skipped_while_stuck_and_comes_back(caplog):
    plugin = Hangs(hang_on=1)
    plugin.name, plugin.timeout_s = "stuck", 0.3
    after = Recorder()
    after.name = "after"
    chain = PluginChain.from_config([plugin, after])
    try:
        with caplog.at_level(logging.WARNING), chain:
            out = chain.process(batch(0))  # the first call answers
            t0 = time.monotonic()
            out2 = chain.process(batch(2))  # hangs: abandoned after its time limit
            waited = time.monotonic() - t0
            t0 = time.monotonic()
            out3 = [chain.process(batch(4 + 2 * i)) for i in range(20)]  # still stuck: skipped at once
            skipped_in = time.monotonic() - t0
            plugin.release.set()
            time.sleep(0.1)
            out4 = chain.process(batch(50))  # it returned: it runs again
    finally:
        plugin.release.set()
    assert upstream(out)["stuck"][0].data == {"seq": 0}
    assert 0.25 <= waited < 1.5 and skipped_in < 0.5
    assert upstream(out2)["stuck"] == [None, None] and all(upstream(b)["stuck"] == [None, None] for b in out3)
    assert after.seen[:4] == [0, 1, 2, 3] and len(after.seen) == 2 + 2 + 40 + 2  # frames always went on
    assert upstream(out4)["stuck"][0].data == {"seq": 50}
    stats = chain.stats["stuck"]
    assert stats.errors == 21 and stats.timeouts == 1 and stats.batches == 23
    assert "PluginTimeout" in caplog.text and "no answer after 0.3 s (timeout_s)" in caplog.text
    assert caplog.text.count("plugin stuck (test_plugins:Hangs) failed") <= 2  # not one line per skipped batch
    assert "working again after 21 failed batch(es)" in caplog.text
    assert len(plugin.threads) == 1 and plugin.closed  # one thread for every call; closed once it returned


def test_a_hanging_plugin_with_stop_policy_raises_within_its_time_limit():
    chain = PluginChain.from_config([{"use": "test_plugins:Hangs", "on_error": "stop", "timeout_s": 0.3}])
    plugin = chain.specs[0].plugin
    t0 = time.monotonic()
    try:
        with chain, pytest.raises(PluginError, match=r"plugin hangs \(test_plugins:Hangs\) failed on source cam "
                                                     r"seq 0..1: PluginTimeout"):
            chain.process(batch(0))
    finally:
        plugin.release.set()
    assert time.monotonic() - t0 < 2


def test_interrupt_ends_a_wait_without_a_time_limit():
    chain = PluginChain.from_config([{"use": "test_plugins:Hangs", "timeout_s": 0}])
    plugin = chain.specs[0].plugin
    out = []
    try:
        with chain:
            worker = threading.Thread(target=lambda: out.append(chain.process(batch(0))), daemon=True)
            worker.start()
            assert plugin.hanging.wait(5)
            t0 = time.monotonic()
            chain.interrupt(0.2)
            worker.join(5)
            took = time.monotonic() - t0
            assert chain.stats["hangs"].timeouts == 1
            t0 = time.monotonic()
            late = chain.process(batch(2))  # skipped at once: the plugin is stuck, the run stopping
            assert time.monotonic() - t0 < 0.2 and upstream(late)["hangs"] == [None, None]
    finally:
        plugin.release.set()
    assert out and upstream(out[0])["hangs"] == [None, None] and took < 1.0


def test_setup_failure_is_one_plugin_error_naming_the_plugin():
    class BadSetup(Plugin):
        def setup(self):
            raise OSError("model.onnx: no such file")

        def process(self, b):
            return [None] * len(b)

    chain = PluginChain.from_config([BadSetup()])
    with pytest.raises(PluginError, match=r"plugin badsetup \(.*BadSetup\): setup failed: OSError: model.onnx: no "):
        chain.setup()
    chain.close()


def test_a_jsonl_file_that_cannot_be_written_is_named(tmp_path):
    from plugins.jsonl import JSONLWriter

    (tmp_path / "taken").write_text("a file, not a folder")
    chain = PluginChain.from_config([JSONLWriter(str(tmp_path / "taken" / "out.jsonl"))])
    with pytest.raises(PluginError, match=r"setup failed: (FileExistsError|NotADirectoryError): .*taken"):
        chain.setup()
    chain.close()


def test_jsonl_lines_are_strict_json_with_numpy_values_and_overlay_draws_far_boxes(tmp_path):
    """A plugin's numpy float in `data` failed every batch (TypeError), NaN became a bare NaN
    that jq refuses, and a box at 1e12 px made the overlay fail its batch (OpenCV overflow)."""
    import json

    from plugins.jsonl import JSONLWriter
    from plugins.overlay import Overlay

    class Measures(Plugin):
        def process(self, b):
            far = Detections(np.array([[-1e12, 2, 1e12, 6]]), np.array([0.5]), np.array([1]), ("car",))
            return [Result(far, data={"mean": np.float32(0.25), "gap": float("nan"), "hist": np.arange(3)})
                    for _ in b.seq]

    path = tmp_path / "lines.jsonl"
    with PluginChain.from_config([Measures(), Overlay(), JSONLWriter(str(path))]) as chain:
        chain.process(batch(0))
    lines = [json.loads(line, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
             for line in path.read_text().splitlines()]
    assert lines[0]["data"]["measures"] == {"mean": 0.25, "gap": None, "hist": [0, 1, 2]}
    assert [s.errors for s in chain.stats.values()] == [0, 0, 0]


def test_plugin_timeout_is_a_plugin_error():
    assert issubclass(PluginTimeout, PluginError)


@pytest.mark.parametrize("size", [(96, 160), (96, 320), (64, 640), (200, 40)])
def test_hog_on_frames_smaller_than_its_window_finds_none_and_says_so(size, caplog):
    """OpenCV's HOG crashed the whole process (SIGSEGV) on 160x96 and 320x96 frames."""
    from plugins.hog import HOGPeople

    hog = HOGPeople()
    hog.setup()
    image = (np.random.default_rng(0).random((*size, 3)) * 255).astype(np.uint8)
    assert len(hog.detect(image).xyxy) == 0 and len(hog.detect(image).xyxy) == 0
    said = [r.getMessage() for r in caplog.records if "smaller than the detector's 64x128 window" in r.getMessage()]
    assert said == [f"hog: {size[1]}x{size[0]} frames are smaller than the detector's 64x128 window; no people are "
                    "looked for in them"]


def test_a_plugin_that_draws_without_saying_so_fails_and_changes_nothing(caplog):
    """Without `annotates` a plugin got the frames themselves: its drawing went into the output
    (and, with the identity profile, into the rainy frames too)."""
    class Scribbles(Plugin):
        def process(self, b):
            b.images[:, 0, 0] = 255
            return [None] * len(b)

    b = batch(0)
    with PluginChain.from_config([Scribbles()]) as chain:
        out = chain.process(b)
    assert int(out.images[:, 0, 0].max()) == 0 and chain.stats["scribbles"].errors == 1
    assert "read-only" in caplog.text
