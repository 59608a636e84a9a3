"""The plugin contract, the loader's errors and the chain's ordering and error policy."""
from __future__ import annotations

import logging
from fractions import Fraction

import numpy as np
import pytest

from pipeline.errors import PluginError
from pipeline.frames import FrameBatch
from plugins import Detections, Plugin, PluginChain, Result, known_plugins, load_plugins, resolve, upstream


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


@pytest.mark.parametrize("xyxy, scores, ids, labels, match", [
    (np.zeros((2, 3)), np.zeros(2), np.zeros(2), ("a", "b"), r"xyxy: must be shape \(n, 4\)"),
    (np.zeros((2, 4)), np.zeros(3), np.zeros(2), ("a", "b"), r"scores: must be shape \(2,\)"),
    (np.zeros((2, 4)), np.zeros(2), np.zeros(1), ("a", "b"), r"class_ids: must be shape \(2,\)"),
    (np.zeros((2, 4)), np.zeros(2), np.zeros(2), ("a",), "labels: must have 2 entries"),
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
    ({"use": "hog", "with": {"scael": 1.1}}, r"hog \(plugins.hog:HOGPeople\): with.scael: unknown key; did you mean 'scale'"),
    ({"use": "jsonl", "with": {}}, r"jsonl \(plugins.jsonl:JSONLWriter\): with.path: required key missing"),
    ({"use": "hog", "with": {"scale": 0.5}}, r"hog \(plugins.hog:HOGPeople\): with: .*scale > 1"),
    ({"use": "noop", "wiht": {}}, r"noop: wiht: unknown key; did you mean 'with'"),
    ({"use": "noop", "on_error": "ignore"}, r"on_error: must be 'skip' or 'stop'"),
    ({"use": "noop", "ray": {"replicas": 0}}, r"ray.replicas: must be an integer >= 1"),
    ({"use": "noop", "ray": {"gpus": 1}}, r"ray.gpus: unknown key; did you mean 'ray.num_gpus'"),
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
