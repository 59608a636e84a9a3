"""Plugins in the real frame path: YAML-loaded, every frame in order, faults, actors, overlay."""
from __future__ import annotations

import json
import sys
import textwrap

import av
import numpy as np
import pytest
import yaml

from media import make_video
from pipeline.config import load_settings
from pipeline.errors import PluginError
from pipeline.files import derain_file
from pipeline.settings import RunSettings
from plugins import Detections, Plugin, PluginChain, Result

PLUGIN_SRC = '''
import json
from plugins import Plugin

class SeqLog(Plugin):
    def __init__(self, path, fail_on=-1):
        self.path, self.fail_on = path, fail_on

    def setup(self):
        self.file = open(self.path, "w")

    def process(self, batch):
        if self.fail_on in batch.seq:
            raise RuntimeError("bad frame")
        for s, p in zip(batch.seq, batch.pts):
            self.file.write(json.dumps([batch.source_id, s, p, batch.rainy is not None]) + "\\n")
        return [None] * len(batch)

    def close(self):
        self.file.close()


class AlwaysFails(Plugin):
    def process(self, batch):
        raise RuntimeError("detector down")
'''


@pytest.fixture
def tmp_plugin(tmp_path, monkeypatch):
    (tmp_path / "myplug.py").write_text(PLUGIN_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "myplug:SeqLog"
    sys.modules.pop("myplug", None)


def settings_from(tmp_path, plugins: list) -> RunSettings:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"profile": "identity"}, "workers": {"backend": "local"},
                                   "batching": {"max_batch": 4}, "plugins": plugins}))
    return load_settings(RunSettings, cfg)


def decoded_count(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_yaml_plugin_sees_every_frame_in_order(tmp_path, tmp_plugin):
    clip = make_video(tmp_path / "in.mp4", frames=20, size=(64, 48))
    log = tmp_path / "seq.jsonl"
    settings = settings_from(tmp_path, [{"use": tmp_plugin, "with": {"path": str(log)}}])
    stats = derain_file(clip, tmp_path / "out.mp4", settings)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r[1] for r in rows] == list(range(20)) and stats.frames_out == 20
    assert all(r[3] for r in rows)  # the rainy originals came along
    assert [r[2] for r in rows] == sorted(r[2] for r in rows)
    assert decoded_count(tmp_path / "out.mp4") == 20


def test_a_plugin_that_always_fails_is_counted_in_run_json(tmp_path, tmp_plugin):
    """on_error: skip (the default): every frame is written, and `--json` says how many calls failed."""
    import os
    import subprocess

    clip = make_video(tmp_path / "in.mp4", frames=12, size=(64, 48))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"profile": "identity"}, "workers": {"backend": "local"},
                                   "batching": {"max_batch": 4}, "plugins": [{"use": "myplug:AlwaysFails"}]}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(clip), "-o", str(tmp_path / "out.mp4"),
                           "--config", str(cfg), "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["frames_out"] == 12 and summary["plugin_errors"] == 3  # 3 batches of 4, each failed
    assert decoded_count(tmp_path / "out.mp4") == 12


def test_bad_with_key_fails_before_any_frame(tmp_path, tmp_plugin):
    settings = settings_from(tmp_path, [{"use": tmp_plugin, "with": {"path": "x", "colour": 1}}])
    clip = tmp_path / "never-read.mp4"  # does not exist: the plugin error must come first
    with pytest.raises(PluginError, match=r"myplug:SeqLog \(myplug:SeqLog\): with.colour: unknown key"):
        derain_file(clip, tmp_path / "out.mp4", settings)
    assert not (tmp_path / "out.mp4").exists()


def test_skip_keeps_every_frame_and_stop_leaves_no_partial(tmp_path, tmp_plugin, caplog):
    clip = make_video(tmp_path / "in.mp4", frames=16, size=(64, 48))
    entry = {"use": tmp_plugin, "with": {"path": str(tmp_path / "a.jsonl"), "fail_on": 5}}
    stats = derain_file(clip, tmp_path / "skip.mp4", settings_from(tmp_path, [entry]))
    assert stats.frames_out == 16 and decoded_count(tmp_path / "skip.mp4") == 16
    assert f"plugin seqlog (myplug:SeqLog) failed on source {clip} seq 4..7" in caplog.text  # names the file
    with pytest.raises(PluginError, match="seq 4..7"):
        derain_file(clip, tmp_path / "stop.mp4", settings_from(tmp_path, [{**entry, "on_error": "stop"}]))
    assert not (tmp_path / "stop.mp4").exists()


class Box(Plugin):
    """A fake detector: one fixed box per frame."""

    def process(self, batch):
        d = Detections(np.array([[8, 8, 40, 30]]), np.array([0.9]), np.array([0]), ("person",))
        return [Result(d) for _ in batch.seq]


def test_overlay_jsonl_snapshot_on_a_clip(tmp_path):
    clip = make_video(tmp_path / "in.mp4", frames=8, size=(64, 48))
    chain = PluginChain.from_config([Box(), {"use": "overlay"}, {"use": "jsonl", "with": {"path": str(tmp_path / "d.jsonl")}},
                                     {"use": "snapshot", "with": {"folder": str(tmp_path / "snaps"), "labels": ["person"],
                                                                  "min_score": 0.5, "ext": "png"}}])
    plain = settings_from(tmp_path, [])
    with chain:
        derain_file(clip, tmp_path / "drawn.mp4", plain, plugins=chain)
    derain_file(clip, tmp_path / "plain.mp4", plain)
    lines = [json.loads(s) for s in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert [x["seq"] for x in lines] == list(range(8)) and {x["source"] for x in lines} == {str(clip)}
    assert lines[1]["time"] > 0 and lines[0]["rain_intensity"] == 0.0
    assert lines[0]["detections"][0] == {"box": [8.0, 8.0, 40.0, 30.0], "score": 0.9, "class_id": 0,
                                         "label": "person", "plugin": "box"}
    assert len(list((tmp_path / "snaps").glob("in.mp4-*.png"))) == 8
    with av.open(str(tmp_path / "drawn.mp4")) as a, av.open(str(tmp_path / "plain.mp4")) as b:
        fa = next(a.decode(video=0)).to_ndarray(format="rgb24").astype(int)
        fb = next(b.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert np.abs(fa[8, 10:38] - fb[8, 10:38]).mean() > 40  # the box edge was encoded
    assert np.abs(fa[20, 20] - fb[20, 20]).mean() < 12  # inside the box is untouched


DYING_SRC = textwrap.dedent('''
    import os
    from plugins import Plugin

    class DiesOnce(Plugin):
        """Kills its own process the first time it sees seq 4 (a marker file remembers)."""

        def __init__(self, marker):
            self.marker = marker

        def process(self, batch):
            if 4 in batch.seq and not os.path.exists(self.marker):
                open(self.marker, "w").close()
                os._exit(1)
            return [None] * len(batch)
''')


def test_actor_pool_restarts_a_dead_plugin_and_loses_nothing(tmp_path, ray_session, tmp_plugin):
    import ray.cloudpickle

    (tmp_path / "dying.py").write_text(DYING_SRC)
    import dying  # noqa: F401 - tmp_path is on sys.path (tmp_plugin fixture)

    ray.cloudpickle.register_pickle_by_value(sys.modules["dying"])  # actors cannot import tmp_path
    import myplug

    ray.cloudpickle.register_pickle_by_value(myplug)
    try:
        clip = make_video(tmp_path / "in.mp4", frames=12, size=(64, 48))
        log = tmp_path / "seq.jsonl"
        chain = PluginChain.from_config([
            {"use": "dying:DiesOnce", "with": {"marker": str(tmp_path / "died")}, "ray": {"num_cpus": 0}},
            {"use": "myplug:SeqLog", "with": {"path": str(log)}}])
        with chain:
            stats = derain_file(clip, tmp_path / "out.mp4", settings_from(tmp_path, []), plugins=chain)
        assert (tmp_path / "died").exists() and chain.stats["diesonce"].restarts >= 1
        assert chain.stats["diesonce"].errors == 0
        assert [json.loads(s)[1] for s in log.read_text().splitlines()] == list(range(12))
        assert stats.frames_out == 12 and decoded_count(tmp_path / "out.mp4") == 12
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules["dying"])
        ray.cloudpickle.unregister_pickle_by_value(myplug)
        sys.modules.pop("dying", None)


DYING_JSONL_SRC = textwrap.dedent('''
    import os
    from plugins.jsonl import JSONLWriter

    class DyingLines(JSONLWriter):
        """The JSONL writer, whose process dies the first time it sees seq 4 (before writing it)."""

        def __init__(self, path, marker):
            super().__init__(path)
            self.marker = marker

        def process(self, batch):
            if 4 in batch.seq and not os.path.exists(self.marker):
                open(self.marker, "w").close()
                os._exit(1)
            return super().process(batch)
''')


def test_a_restarted_jsonl_actor_adds_to_its_file(tmp_path, ray_session, tmp_plugin):
    """Ray reruns a restarted actor's setup, and the writer's setup started its file afresh:
    every line before the restart was lost. The file is now started once, in the driver."""
    import ray.cloudpickle

    (tmp_path / "dyinglines.py").write_text(DYING_JSONL_SRC)
    import dyinglines

    ray.cloudpickle.register_pickle_by_value(dyinglines)  # actors cannot import tmp_path
    try:
        clip = make_video(tmp_path / "in.mp4", frames=12, size=(64, 48))
        out = tmp_path / "lines.jsonl"
        out.write_text("a line of an earlier run\n")
        chain = PluginChain.from_config([{"use": "dyinglines:DyingLines", "ray": {"num_cpus": 0},
                                          "with": {"path": str(out), "marker": str(tmp_path / "died")}}])
        with chain:
            stats = derain_file(clip, tmp_path / "out.mp4", settings_from(tmp_path, []), plugins=chain)
        assert (tmp_path / "died").exists() and chain.stats["dyinglines"].restarts >= 1
        assert stats.frames_out == 12
        assert [json.loads(s)["seq"] for s in out.read_text().splitlines()] == list(range(12))  # and not the old line
        short = make_video(tmp_path / "short.mp4", frames=6, size=(64, 48))
        with chain:  # the same chain again (a Pipeline keeps one): the file starts afresh, as inline
            derain_file(short, tmp_path / "out2.mp4", settings_from(tmp_path, []), plugins=chain)
        assert [json.loads(s)["source"] for s in out.read_text().splitlines()] == [str(short)] * 6
    finally:
        ray.cloudpickle.unregister_pickle_by_value(dyinglines)
        sys.modules.pop("dyinglines", None)


HANG_SRC = textwrap.dedent('''
    import time
    from plugins import Plugin

    class Forever(Plugin):
        """Never answers: sleeps in process() until the test ends (an actor's: forever)."""

        released = False  # the test lets its abandoned thread go at the end

        def process(self, batch):
            while not Forever.released:
                time.sleep(0.05)
''')


@pytest.fixture
def hang_plugin(tmp_path, monkeypatch):
    (tmp_path / "hangs.py").write_text(HANG_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    import hangs

    yield hangs
    hangs.Forever.released = True
    sys.modules.pop("hangs", None)


def test_a_hanging_inline_plugin_cannot_block_a_file_run(tmp_path, hang_plugin, caplog):
    import time

    clip = make_video(tmp_path / "in.mp4", frames=16, size=(64, 48))
    settings = settings_from(tmp_path, [{"use": "hangs:Forever", "timeout_s": 0.5}])
    chain = PluginChain.from_config(settings.plugins)
    start = time.monotonic()
    with chain:
        stats = derain_file(clip, tmp_path / "out.mp4", settings, plugins=chain)
    assert time.monotonic() - start < 10
    assert stats.frames_out == 16 and decoded_count(tmp_path / "out.mp4") == 16
    assert chain.stats["forever"].errors == 4 and chain.stats["forever"].timeouts == 1  # 4 batches of 4
    assert "no answer after 0.5 s (timeout_s)" in caplog.text
    assert "forever: not closed: a call that timed out is still running" in caplog.text


def test_a_hanging_actor_plugin_is_restarted_and_cannot_block_a_file_run(tmp_path, ray_session, hang_plugin,
                                                                        caplog):
    import time

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(hang_plugin)  # actors cannot import tmp_path
    try:
        clip = make_video(tmp_path / "in.mp4", frames=16, size=(64, 48))
        chain = PluginChain.from_config([{"use": "hangs:Forever", "timeout_s": 1.0, "ray": {"num_cpus": 0}}])
        start = time.monotonic()
        with chain:
            chain_up = time.monotonic()
            stats = derain_file(clip, tmp_path / "out.mp4", settings_from(tmp_path, []), plugins=chain)
            took = time.monotonic() - chain_up
        assert took < 10 and time.monotonic() - start < 60
        assert stats.frames_out == 16 and decoded_count(tmp_path / "out.mp4") == 16
        s = chain.stats["forever"]
        assert s.errors == 4 and s.timeouts >= 1 and s.restarts >= 1
        assert "no answer from its actor in time (timeout_s); the actor is restarted" in caplog.text
    finally:
        ray.cloudpickle.unregister_pickle_by_value(hang_plugin)


def test_model_workers_leave_the_cores_plugin_actors_ask(tmp_path, ray_session, monkeypatch):
    """configs/detect.yaml's HOG actor asks a core; the CPU model worker took every core, so the
    actor waited for ever, without a word. Now the model workers leave them, and an actor no node
    can hold is one error naming the plugin and what it asks."""
    from plugins import actors
    from plugins.loader import actor_cpus
    from pipeline.workers import Node, _leaving

    assert actor_cpus([{"use": "hog", "ray": {"num_cpus": 1, "replicas": 2}}, {"use": "noop"}, {"use": "x", "ray": {}}]) == 3
    assert actor_cpus([{"use": "hog", "ray": True}, {"use": "x", "ray": {"replicas": 0}}]) == 1  # true: the defaults
    nodes = [Node("a", {"CPU": 2.0}, {"CPU": 2.0}), Node("b", {"CPU": 8.0}, {"CPU": 6.0})]
    assert [n.free["CPU"] for n in _leaving(nodes, 3)] == [2.0, 3.0]
    assert _leaving(nodes[:1], 4)[0].total["CPU"] == 1.0  # never below one core for the model
    clip = make_video(tmp_path / "in.mp4", frames=6, size=(64, 48))
    cfg = {"model": {"profile": "identity"}, "workers": {"backend": "ray"},
           "plugins": [{"use": "noop", "ray": {"num_cpus": 1}}]}
    stats = derain_file(clip, tmp_path / "out.mp4", load_settings(RunSettings, cfg))
    assert stats.frames_out == 6
    monkeypatch.setattr(actors, "PLACE_S", 3.0)
    chain = PluginChain.from_config([{"use": "noop", "ray": {"num_cpus": 64}}])
    with pytest.raises(PluginError, match=r"plugin noop .*asks \{CPU 64\}.*give it ray: \{num_cpus: 0\}"):
        chain.setup()
    chain.close()


def test_the_summary_line_says_how_many_plugin_calls_failed(tmp_path, capsys):
    """A jsonl writer on a full disk lost every line, and the run's one line said nothing of it."""
    from pipeline.cli import main

    clip = make_video(tmp_path / "in.mp4", frames=5, size=(64, 48))
    cfg = tmp_path / "full.yaml"
    cfg.write_text("model: {profile: identity}\nworkers: {backend: local}\nplugins:\n"
                   "  - use: jsonl\n    with: {path: /dev/full}\n")
    assert main(["run", str(clip), "-o", str(tmp_path / "out.mp4"), "--config", str(cfg)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.endswith("; 5 plugin calls failed (see the log)"), last


def test_the_readmes_plugin_runs_from_its_folder_with_the_installed_command(tmp_path):
    """The installed `derain` command does not put the working folder on sys.path: the README's
    myplugins.py beside the config was 'cannot import module', and its print() went to stdout
    ahead of --json's line."""
    import re
    import subprocess
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "# myplugins.py" in block]
    (config,) = [block for block in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "myplugins:Brightness" in block]
    (tmp_path / "myplugins.py").write_text(code)
    (tmp_path / "mine.yaml").write_text(config)
    make_video(tmp_path / "clip.mp4", frames=6, size=(64, 48))
    derain = Path(sys.executable).with_name("derain")
    run = subprocess.run([str(derain), "run", "clip.mp4", "-o", "out.mp4", "--config", "mine.yaml", "--profile",
                          "identity", "--backend", "local", "--json"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["frames_out"] == 6 and "bright frames: " in run.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 6


def test_an_actor_plugin_whose_setup_fails_is_one_line_naming_the_cause(tmp_path, ray_session, monkeypatch):
    """Its error was Ray's whole remote traceback, colour codes included (9 lines)."""
    import ray.cloudpickle

    (tmp_path / "badsetup.py").write_text(textwrap.dedent("""
        from plugins import Plugin

        class BadSetup(Plugin):
            def setup(self):
                raise OSError(2, "No such file or directory", "model.onnx")

            def process(self, batch):
                return [None] * len(batch)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import badsetup

    ray.cloudpickle.register_pickle_by_value(badsetup)  # actors cannot import tmp_path
    try:
        chain = PluginChain.from_config([{"use": "badsetup:BadSetup", "ray": {"num_cpus": 0}}])
        with pytest.raises(PluginError) as info:
            chain.setup()
        chain.close()
    finally:
        ray.cloudpickle.unregister_pickle_by_value(badsetup)
        sys.modules.pop("badsetup", None)
    assert str(info.value) == ("plugin badsetup (badsetup:BadSetup): setup failed: FileNotFoundError: [Errno 2] No "
                               "such file or directory: 'model.onnx'")
