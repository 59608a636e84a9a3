"""User errors end in one clear line and a non-zero exit (and a JSON object with --json); SIGTERM as Ctrl-C."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from media import make_video
from pipeline.cli import build_parser, main
from pipeline.errors import InputError
from pipeline.bench.detection import eval_detect
from pipeline.model.inference import Derainer
from plugins import Plugin

REPO = Path(__file__).resolve().parents[1]
LOCAL = ["--profile", "identity", "--backend", "local"]


class FailingSetup(Plugin):
    """An inline plugin whose setup() raises, as one that cannot open its model would."""

    def setup(self):
        raise RuntimeError("cannot open /models/missing.onnx")

    def process(self, batch):
        return [None] * len(batch)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_json_prints_an_error_object_when_a_run_fails(tmp_path, capsys):
    missing = tmp_path / "nope.mp4"
    assert main(["run", str(missing), "-o", str(tmp_path / "out.mp4"), "--json", *LOCAL]) == 1
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["ok"] is False and result["command"] == "run" and str(missing) in result["error"]
    assert str(missing) in one_error_line(err)


def test_json_error_object_for_a_bad_config(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batching: {max_wait_ms: .inf}\n")
    clip = make_video(tmp_path / "in.mp4", frames=2)
    assert main(["run", str(clip), "-o", str(tmp_path / "out.mp4"), "--config", str(cfg), "--json", *LOCAL]) == 1
    out, err = capsys.readouterr()
    assert "batching.max_wait_ms: must be a finite number (got inf)" in json.loads(out.strip())["error"]
    assert str(cfg) in one_error_line(err) and not (tmp_path / "out.mp4").exists()


def test_a_binary_config_is_one_line_naming_the_file(tmp_path, capsys):
    cfg = tmp_path / "binary.yaml"
    cfg.write_bytes(bytes(range(256)) * 4)
    clip = make_video(tmp_path / "in.mp4", frames=2)
    assert main(["run", str(clip), "-o", str(tmp_path / "out.mp4"), "--config", str(cfg), *LOCAL]) == 1
    assert f"{cfg}: not a YAML text file" in one_error_line(capsys.readouterr().err)


def bomb() -> str:
    """An inline YAML value of ~300 bytes that stands for 9**8 = 43 million strings once expanded."""
    levels = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"&a{n} [" + ", ".join([f"*a{n - 1}"] * 9) + "]" for n in range(1, 8)]
    return "[" + ", ".join(levels) + "]"


@pytest.mark.parametrize("use,expected", [
    ("batching: {max_batch: BOMB}", "batching.max_batch: must be int or 'auto' (got [["),
    ("plugins: [{use: noop, with: BOMB}]", "with: must be a mapping (got [["),
    ("plugins: [{use: noop, ray: {replicas: BOMB}}]", "ray.replicas: must be an integer >= 1 (got [["),
    ("plugins: [{use: noop, on_error: BOMB}]", "on_error: must be 'skip' or 'stop' (got [["),
])
def test_an_alias_bomb_config_is_short_and_quick(tmp_path, capsys, use, expected):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(use.replace("BOMB", bomb()) + "\n")
    assert cfg.stat().st_size < 500
    clip = make_video(tmp_path / "in.mp4", frames=2)
    start = time.monotonic()
    assert main(["run", str(clip), "-o", str(tmp_path / "out.mp4"), "--config", str(cfg), *LOCAL]) == 1
    assert time.monotonic() - start < 5
    line = one_error_line(capsys.readouterr().err)
    assert len(line) < 300 and expected in line and line.endswith("...)")


def test_a_config_files_plugin_error_names_the_file(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("plugins:\n  - use: noop\n    with: {bogus: 1}\n")
    clip = make_video(tmp_path / "in.mp4", frames=2)
    assert main(["run", str(clip), "-o", str(tmp_path / "out.mp4"), "--config", str(cfg), *LOCAL]) == 1
    assert f"{cfg}: plugins[0]: noop (" in one_error_line(capsys.readouterr().err)


def test_an_inline_plugin_whose_setup_raises_is_one_line_naming_it(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("plugins:\n  - use: test_cli_errors:FailingSetup\n    name: loader\n")
    clip = make_video(tmp_path / "in.mp4", frames=2)
    out = tmp_path / "out.mp4"
    assert main(["run", str(clip), "-o", str(out), "--config", str(cfg), *LOCAL]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "plugin loader" in line and "setup failed" in line and "missing.onnx" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "in.mp4"]  # nothing half-written


def test_eval_detect_needs_an_explicit_data_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["eval-detect"])
    assert exc.value.code == 2 and "--data" in capsys.readouterr().err
    with pytest.raises(InputError, match="ntu_synthetic_video/a1_Rain: not found; --data must be"):
        eval_detect(tmp_path, Derainer.load(profile="identity"), {"use": "noop"}, sets=["ntu-a1"])


@pytest.mark.parametrize("after_s", [0.5, 2.0])  # while Ray starts its workers; while frames flow
def test_sigterm_ends_a_file_run_like_ctrl_c(tmp_path, after_s):
    """On the Ray backend: one line, exit 143, no partial file, no Ray crash dump or auth notice.
    (A SIGTERM inside a Ray call came back as a plain KeyboardInterrupt, and exit crashed.)"""
    src = make_video(tmp_path / "in.mp4", frames=600)
    cfg = tmp_path / "slow.yaml"
    cfg.write_text("model: {profile: identity, delay_ms: 30}\nworkers: {backend: ray}\n")
    out = tmp_path / "out.mp4"
    env = {**os.environ, "RAY_ADDRESS": "local"}  # a Ray of our own even where `ray start` runs
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(src), "-o", str(out),
                             "--config", str(cfg), "--json"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any("partial" in p.name for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    time.sleep(after_s)
    proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert one_error_line(err) == "derain run: terminated (SIGTERM); partial outputs removed"
    assert json.loads(stdout.strip().splitlines()[-1]) == {"ok": False, "command": "run",
                                                          "error": "terminated (SIGTERM)"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "slow.yaml"]


def test_ctrl_c_pressed_again_while_leaving_still_ends_in_one_line(tmp_path):
    """A second Ctrl-C during Ray's shutdown printed a 50-line traceback and exited 1."""
    src = make_video(tmp_path / "in.mp4", frames=600)
    cfg = tmp_path / "slow.yaml"
    cfg.write_text("model: {profile: identity, delay_ms: 30}\nworkers: {backend: ray}\n")
    env = {**os.environ, "RAY_ADDRESS": "local"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(src), "-o", str(tmp_path / "out.mp4"),
                             "--config", str(cfg)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any("partial" in p.name for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    while proc.poll() is None and time.monotonic() < deadline:  # as an impatient user keeps pressing it
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert one_error_line(err) == "derain run: interrupted; partial outputs removed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "slow.yaml"]


def test_sighup_ends_a_file_run_like_ctrl_c(tmp_path):
    """A closed terminal or ssh session (SIGHUP) cleans up as SIGTERM does: one line, exit 129,
    no partial file left behind (its default action killed the process mid-write)."""
    src = make_video(tmp_path / "in.mp4", frames=600)
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(src), "-o", str(out), "--profile",
                             "identity", "--backend", "local", "--delay-ms", "30"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any("partial" in p.name for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 129, err
    assert one_error_line(err) == "derain run: terminated (SIGHUP); partial outputs removed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:9/x.mp4", "s3://bucket/x.mp4"])
def test_a_url_of_a_scheme_derain_does_not_read_is_named_whole(tmp_path, capsys, url):
    """It was taken for a path and said as 'ftp:/127.0.0.1:9/x.mp4: file not found'."""
    assert main(["run", url, "-o", str(tmp_path / "out.mp4"), *LOCAL]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"derain run: error: {url}: derain reads files, folders and live URLs (rtsp, rtsps, rtmp, "
                           "http, https, tcp, udp, srt)")
    assert f"not {url.split(':')[0]}://" in line


def test_a_run_started_under_nohup_outlives_the_hang_up(tmp_path):
    """`nohup derain ...` ignores SIGHUP: the run must finish, not clean up and leave."""
    src = make_video(tmp_path / "in.mp4", frames=40)
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(src), "-o", str(out), "--profile",
                             "identity", "--backend", "local", "--delay-ms", "30"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    deadline = time.monotonic() + 60
    while not any("partial" in p.name for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.exists() and "terminated" not in err


def test_live_only_flags_on_a_file_run_are_refused_not_ignored(tmp_path, capsys):
    """`derain run in.mp4 -o out.mp4 --record rec/` recorded nothing and said nothing."""
    src = make_video(tmp_path / "in.mp4", frames=2)
    assert main(["run", str(src), "-o", str(tmp_path / "out.mp4"), "--record", str(tmp_path / "rec"),
                 "--duration-s", "3", *LOCAL]) == 2
    assert one_error_line(capsys.readouterr().err) == ("derain run: error: --record, --duration-s: for live inputs "
                                                       "only (a URL, a /dev/video device, or a file with --realtime); "
                                                       "a file run would ignore it")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


@pytest.mark.parametrize("argv, says", [
    (["bench", "--size", "junk"], "argument --size: 'junk': must be WxH, each 16 to 16384 pixels"),
    (["bench", "--size", "1x1"], "argument --size: '1x1': must be WxH"),
    (["bench", "--streams", "2", "--size", "161x97"], "argument --size: '161x97': the generated clip is yuv420p: width and height must be even"),
    (["bench", "--model-only", "--sizes", "32x32,foo"], "argument --sizes: 'foo': must be WxH"),
    (["bench", "--frames", "-5"], "argument --frames: '-5': must be a whole number from 0"),
    (["bench", "--streams", "0"], "argument --streams: '0': must be a whole number from 1 to 64"),
    (["bench", "--memory", "--minutes", "-1"], "argument --minutes: '-1': must be a number > 0"),
    (["eval-detect", "--data", ".", "--detector-with", "notjson"], "argument --detector-with: 'notjson': not JSON"),
    (["eval-detect", "--data", ".", "--detector-with", "[1]"], "must be a JSON object"),
])
def test_bad_bench_and_eval_arguments_are_one_line_before_any_work(argv, says, capsys):
    """Each was a traceback (ValueError from int(), 'high <= 0', MemoryError, JSONDecodeError)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and says in err.strip().splitlines()[-1] and "Traceback" not in err


@pytest.mark.parametrize("item, says", [("train.batch=[1", "the value is not YAML"),
                                        ("train.batch=", "no value after '='"),
                                        ("export=null", "null unsets nothing")])
def test_a_bad_set_value_is_one_line(item, says, capsys):
    assert main(["train", "--config", str(REPO / "configs" / "train.yaml"), "--set", item]) == 1
    assert f"--set {item!r}: {says}" in one_error_line(capsys.readouterr().err)


def test_weights_of_another_profile_are_said_to_set_the_network(tmp_path, caplog):
    """--profile identity --weights full.pt ran the full network (12 frames/s, not 200) in silence."""
    from pipeline.model.weights import default_weights

    clip = make_video(tmp_path / "in.mp4", frames=2)
    fast = str(default_weights("fast"))
    for profile, said in (("identity", True), ("fast", False)):
        caplog.clear()
        assert main(["run", str(clip), "-o", str(tmp_path / f"{profile}.mp4"), "--profile", profile, "--weights", fast,
                     "--backend", "local"]) == 0
        lines = [r.getMessage() for r in caplog.records if "they set the network" in r.getMessage()]
        assert lines == ([f"{fast}: weights of the fast profile: they set the network and its scale "
                          f"(model.profile {profile} is not used)"] if said else [])


def test_a_bad_flag_with_json_still_gives_a_json_line(capsys):
    """argparse's error went to stderr only: a --json caller read nothing on stdout."""
    with pytest.raises(SystemExit) as exc:
        main(["run", "in.mp4", "-o", "out.mp4", "--batch", "abc", "--json"])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and "invalid int value: 'abc'" in err
    assert json.loads(out) == {"ok": False, "command": "run",
                               "error": "derain run: argument --batch: invalid int value: 'abc'"}


def test_workers_the_local_backend_cannot_run_are_said(tmp_path, caplog):
    clip = make_video(tmp_path / "in.mp4", frames=2)
    assert main(["run", str(clip), "-o", str(tmp_path / "out.mp4"), "--workers", "8", *LOCAL]) == 0
    assert "workers.count 8: the local backend runs one model worker, in this process" in caplog.text


def test_an_in_process_caller_gets_its_signal_handlers_back_after_a_stop():
    """After a stop main() left its own handlers in place: the caller's next Ctrl-C was ignored,
    and one 5 s later killed it."""
    script = textwrap.dedent("""
        import os, signal, time
        import pipeline.cli as cli

        def stops(args):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
            return 0

        cli.cmd_demo = stops
        mine = lambda signum, frame: None
        signal.signal(signal.SIGINT, mine)
        code = cli.main(["demo"])
        print(code, signal.getsignal(signal.SIGINT) is mine)
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.stdout.split() == ["130", "True"], run.stderr


def test_a_run_started_with_ctrl_c_ignored_keeps_ignoring_it(tmp_path):
    """`derain ... &` in a script ignores SIGINT (no job control); derain took it again."""
    src = make_video(tmp_path / "in.mp4", frames=200)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(src), "-o", str(tmp_path / "out.mp4"),
                             "--profile", "identity", "--delay-ms", "20", "--backend", "local"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 60
    while not any("partial" in p.name for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None  # still deraining
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err


def test_live_flags_for_outputs_the_run_lacks_are_said(tmp_path, caplog):
    clip = make_video(tmp_path / "in.mp4", frames=3)
    assert main(["run", str(clip), "--realtime", "--segment-s", "5", "--preview-token", "abc", *LOCAL]) == 0
    said = [r.getMessage() for r in caplog.records if "which this run does not have" in r.getMessage()]
    assert said == ["--segment-s: shapes --record, which this run does not have; ignored",
                    "--preview-token: shapes --preview, which this run does not have; ignored"]


def test_segments_shorter_than_a_second_are_refused(tmp_path, capsys):
    """--segment-s 0.01 made 73 one-frame files (a segment starts on a keyframe, one a second)."""
    clip = make_video(tmp_path / "in.mp4", frames=3)
    assert main(["run", str(clip), "--realtime", "--record", str(tmp_path / "rec"), "--segment-s", "0.01",
                 *LOCAL]) == 1
    assert "live.segment_s: must be >= 1 second (got 0.01)" in one_error_line(capsys.readouterr().err)
