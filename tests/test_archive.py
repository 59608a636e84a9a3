"""`derain archive` on real Ray actors: parallel files, a broken one, resume, report, Ctrl-C,
a killed file worker, and output folders that cannot be written."""
import contextlib
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from media import make_video
from probe import ffprobe, frame_pts, video_stream

import pytest

from pipeline import archive
from pipeline.archive import REPORT_NAME, find_inputs
from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.settings import ArchiveSettings
from pipeline.sinks.files import MARKER, partials


def make_archive(root):
    make_video(root / "cam1" / "a.mp4", frames=12, audio=True)
    make_video(root / "cam1" / "night" / "b.mkv", frames=16, vfr=True)
    make_video(root / "c.mov", frames=8)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is no video")
    (root / "notes.txt").write_text("not a video, not matched")
    return root


def run_archive(src, out, capsys, *extra):
    code = main(["archive", str(src), str(out), "--profile", "identity", "--file-workers", "2", "--json", *extra])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return code, summary, json.loads((out / "derain-report.json").read_text())


def test_archive_mirrors_the_tree_reports_broken_files_and_resumes(tmp_path, capsys, caplog, ray_session):
    (tmp_path / "in").mkdir()
    src = make_archive(tmp_path / "in")
    out = tmp_path / "out"
    code, summary, report = run_archive(src, out, capsys)
    assert code == 1  # one file failed
    assert summary["done"] == 3 and summary["failed"] == 1 and summary["frames"] == 36
    by_name = {r["input"].rsplit("/", 1)[-1]: r for r in report["files"]}
    assert set(by_name) == {"a.mp4", "b.mkv", "c.mov", "broken.mp4"}
    assert "broken.mp4" in by_name["broken.mp4"]["error"] and by_name["broken.mp4"]["status"] == "failed"
    for name, rel, frames in (("a.mp4", "cam1/a.mp4", 12), ("b.mkv", "cam1/night/b.mkv", 16)):
        r = by_name[name]
        assert r["status"] == "done" and r["frames"] == frames and r["fps"] > 0 and r["seconds"] >= 0
        assert video_stream(ffprobe(out / rel))["nb_read_frames"] == str(frames)
        assert frame_pts(out / rel) == frame_pts(src / rel)
    assert not (out / "broken.mp4").exists() and not partials(out / "broken.mp4")
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.name == "pipeline.archive"]
    assert said == [by_name["broken.mp4"]["error"]]  # the console names the failed file and why

    # Run again: finished files are skipped; a deleted output and the broken file are redone.
    (out / "c.mov").unlink()
    code, summary, report = run_archive(src, out, capsys)
    assert summary["skipped"] == 2 and summary["done"] == 1 and summary["failed"] == 1
    assert (out / "c.mov").exists()


def test_ctrl_c_keeps_finished_files_and_the_report_says_which(tmp_path):
    src = tmp_path / "in"
    for i in range(4):
        make_video(src / f"v{i}.mp4", frames=30)
    cfg = tmp_path / "slow.yaml"
    cfg.write_text("model: {profile: identity, delay_ms: 40}\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "archive", str(src), str(out), "--config",
                             str(cfg), "--file-workers", "1", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    report = out / "derain-report.json"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if report.exists() and '"status": "done"' in report.read_text():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    files = json.loads(report.read_text())["files"]
    done = [f for f in files if f["status"] == "done"]
    assert 1 <= len(done) < 4  # stopped part-way: some files finished, not all
    for f in files:
        out_path = Path(f["output"])
        assert out_path.exists() == (f["status"] == "done")
        assert not partials(out_path)


@pytest.mark.parametrize("where", ["same", "inside"])
def test_an_output_tree_in_the_input_tree_is_refused_up_front(tmp_path, capsys, where):
    src = tmp_path / "in"
    make_video(src / "a.mp4", frames=4)
    out = src if where == "same" else src / "derained"
    code = main(["archive", str(src), str(out), "--profile", "identity"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert str(out) in line and ("is the input folder" if where == "same" else "inside the input folder") in line
    assert sorted(p.relative_to(src).as_posix() for p in src.rglob("*")) == ["a.mp4"]  # nothing written


def test_inputs_whose_extension_derain_does_not_write_need_an_output_suffix(tmp_path, capsys):
    """`archive.patterns: ["*.mpg"]`: each output would keep .mpg, which derain cannot write, and
    every file failed after Ray started; now one line before any work, and the suffix fixes it."""
    src, out = tmp_path / "in", tmp_path / "out"
    make_video(src / "a.mp4", frames=4).rename(src / "a.mpg")
    cfg = tmp_path / "mpg.yaml"
    cfg.write_text('archive: {patterns: ["*.mpg"]}\nmodel: {profile: identity}\nworkers: {backend: local}\n')
    assert main(["archive", str(src), str(out), "--config", str(cfg)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "a.mpg: its output keeps the extension '.mpg'" in line and "archive.output_suffix" in line
    assert not out.exists()
    cfg.write_text('archive: {patterns: ["*.mpg"], output_suffix: .mp4}\nmodel: {profile: identity}\n'
                   'workers: {backend: local}\n')
    assert main(["archive", str(src), str(out), "--config", str(cfg)]) == 0
    assert (out / "a.mp4").exists()


def test_outputs_that_would_meet_are_refused_up_front_naming_both_inputs(tmp_path, capsys):
    """clip.mp4 and clip.mov with output_suffix .mp4: one output, two inputs; one overwrote the
    other's output and the other failed on every rerun. A suffix derain does not write is named."""
    src, out = tmp_path / "in", tmp_path / "out"
    make_video(src / "clip.mp4", frames=4)
    make_video(src / "clip.mov", frames=4)
    for suffix, says in ((".mp4", f"{out / 'clip.mp4'}: both "), (".txt", "archive.output_suffix '.txt', which derain")):
        cfg = tmp_path / "suffix.yaml"
        cfg.write_text(f"archive: {{output_suffix: '{suffix}'}}\nmodel: {{profile: identity}}\n")
        assert main(["archive", str(src), str(out), "--config", str(cfg)]) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert says in line, line
        assert not out.exists()


def test_a_report_path_that_holds_anything_else_is_refused(tmp_path, capsys):
    """--report naming an input (or any other file) wrote the report over it."""
    src, out = tmp_path / "in", tmp_path / "out"
    make_video(src / "a.mp4", frames=4)
    video = make_video(src / "b.mp4", frames=4).read_bytes()
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for report, says in ((src / "b.mp4", "is one of the inputs"), (notes, "exists and is not a derain report"),
                         (tmp_path, "is a folder"), (out / "a.mp4", f"is the output of {src / 'a.mp4'}")):
        assert main(["archive", str(src), str(out), "--profile", "identity", "--report", str(report)]) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert f"{report}: {says}" in line
    assert (src / "b.mp4").read_bytes() == video and notes.read_text() == "mine" and not out.exists()


def test_a_second_archive_into_the_same_folder_is_refused(tmp_path, capsys):
    """Two runs into one folder both derained every file, and each met the other's outputs as
    'already there' (failed), leaving a report that did not match the folder."""
    src, out = tmp_path / "in", tmp_path / "out"
    make_video(src / "a.mp4", frames=4)
    out.mkdir()
    from pipeline.locks import held

    with held(out, "taken"):  # as a run in progress holds it
        assert main(["archive", str(src), str(out), "--profile", "identity"]) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert f"{out}: another derain archive is writing there" in line
    assert sorted(p.name for p in out.iterdir()) == []


def test_an_archives_jsonl_holds_every_files_lines_each_naming_its_file(tmp_path, capsys, ray_session):
    """Each file's run replaced the JSONL: 5 files of 20 frames left 20 lines, all 'source: 0'."""
    src, out = tmp_path / "in", tmp_path / "out"
    for name in ("a", "b", "c"):
        make_video(src / f"{name}.mp4", frames=5 + len(name) * ord(name) % 3)
    lines_path = tmp_path / "lines.jsonl"
    cfg = tmp_path / "lines.yaml"
    cfg.write_text(f"plugins: [{{use: jsonl, with: {{path: {lines_path}}}}}]\nmodel: {{profile: identity}}\n")
    assert main(["archive", str(src), str(out), "--config", str(cfg), "--file-workers", "2"]) == 0
    lines = [json.loads(line) for line in lines_path.read_text().splitlines()]
    report = json.loads((out / REPORT_NAME).read_text())
    frames = {Path(r["input"]).name: r["frames"] for r in report["files"]}
    assert {name: sum(Path(x["source"]).name == name for x in lines) for name in frames} == frames
    make_video(src / "d.mp4", frames=4)  # a resumed archive adds the files it derains
    assert main(["archive", str(src), str(out), "--config", str(cfg)]) == 0
    assert len(lines_path.read_text().splitlines()) == len(lines) + 4
    assert main(["archive", str(src), str(out), "--config", str(cfg), "--overwrite"]) == 0  # all anew: lines too
    assert len(lines_path.read_text().splitlines()) == len(lines) + 4


def test_the_walker_skips_derains_own_outputs(tmp_path):
    root = tmp_path / "in"
    make_video(root / "cam" / "a.mp4", frames=2)
    make_video(root / "old-run" / "cam" / "a.mp4", frames=2)  # an earlier archive's output tree
    (root / "old-run" / REPORT_NAME).write_text("{}")
    make_video(root / "pngs" / "b.mp4", frames=2)  # a folder derain wrote
    (root / "pngs" / MARKER).write_text('{"written_by": "derain", "files": []}')
    make_video(root / ".c.1-ab.partial.mp4", frames=2)  # a temporary
    assert [p.relative_to(root).as_posix() for p in find_inputs(root, ["*.mp4"], True)] == ["cam/a.mp4"]


def test_patterns_match_any_case_and_stay_inside_the_input_folder(tmp_path):
    """Phones, drones and action cameras name their files IMG_0001.MOV and DJI_0001.MP4."""
    root = tmp_path / "in"
    for name in ("IMG_0001.MOV", "cam/DJI_0001.MP4", "cam/b.mp4", "c.Mts", "notes.txt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (tmp_path / "outside.mp4").write_bytes(b"x")
    found = [p.relative_to(root).as_posix() for p in find_inputs(root, ArchiveSettings().patterns, True)]
    assert found == ["IMG_0001.MOV", "c.Mts", "cam/DJI_0001.MP4", "cam/b.mp4"]
    assert [p.name for p in find_inputs(root, ["*.mp4", "*.mov"], False)] == ["IMG_0001.MOV"]
    assert [p.name for p in find_inputs(root, ["CAM/*.mp4"], False)] == ["DJI_0001.MP4", "b.mp4"]
    for recursive in (True, False):  # glob's **/: at any depth, the top level included
        assert [p.name for p in find_inputs(root, ["**/*.mp4"], recursive)] == ["DJI_0001.MP4", "b.mp4"]
        assert [p.name for p in find_inputs(root, ["**/*.mov"], recursive)] == ["IMG_0001.MOV"]
    with pytest.raises(ConfigError, match=r"\*\* only as a leading \*\*/"):
        find_inputs(root, ["cam/**/*.mp4"], True)
    for pattern in ("../*.mp4", "cam/../../*.mp4", str(tmp_path / "*.mp4")):
        with pytest.raises(ConfigError, match="reaches outside the input folder"):
            find_inputs(root, [pattern], True)


def test_a_folder_where_nothing_matches_is_said(tmp_path, caplog):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("x")
    assert main(["archive", str(tmp_path / "in"), str(tmp_path / "out"), "--profile", "identity",
                 "--backend", "local"]) == 0
    assert f"{tmp_path / 'in'}: no file matches archive.patterns (*.mp4, *.mkv" in caplog.text


def test_links_the_walker_does_not_follow_are_said(tmp_path, caplog):
    """A link to a folder and a link to no file were skipped without a word."""
    root, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    make_video(root / "a.mp4", frames=2)
    make_video(elsewhere / "b.mp4", frames=2)
    (root / "more").symlink_to(elsewhere)
    (root / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    with caplog.at_level("WARNING", logger="pipeline.archive"):
        assert find_inputs(root, ArchiveSettings().patterns, True) == [root / "a.mp4"]
    assert f"{root}: 1 link to no file skipped: {root / 'gone.mp4'}" in caplog.messages
    assert (f"{root}: 1 linked folder not followed (a link may loop back): {root / 'more'}; archive it as an "
            "input folder of its own") in caplog.messages


def test_odd_sizes_on_archive_workers_keep_every_frame_and_say_the_cut(tmp_path, capsys, ray_session):
    src = tmp_path / "in"
    make_video(src / "a.mkv", frames=5, size=(641, 361), pix_fmt="yuv444p")
    make_video(src / "b.mkv", frames=6, size=(321, 241), codec="ffv1")
    out = tmp_path / "out"
    code, summary, report = run_archive(src, out, capsys)
    assert code == 0 and summary["done"] == 2
    by_name = {Path(r["input"]).name: r for r in report["files"]}
    for name, frames, size in (("a.mkv", "5", (640, 360)), ("b.mkv", "6", (320, 240))):
        v = video_stream(ffprobe(out / name))
        assert v["nb_read_frames"] == frames and (v["width"], v["height"]) == size
        said = [w for w in by_name[name]["warnings"] if "less colour detail" not in w]  # a.mkv is 4:4:4
        assert len(said) == 1 and "written as %dx%d" % size in said[0]


def test_one_worker_derains_several_files_side_by_side_through_one_model(tmp_path, capsys, ray_session):
    """archive.streams_per_worker (4 on a GPU by default): one worker, one model, files at once,
    each decoded and encoded in its codec process; a broken file fails alone."""
    src = tmp_path / "in"
    for name in ("a", "b", "c"):
        make_video(src / f"{name}.mp4", frames=30, audio=name == "a")
    (src / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is no video")
    cfg = tmp_path / "side.yaml"
    cfg.write_text("model: {profile: identity, delay_ms: 30}\nworkers: {codec_processes: true}\n")
    out = tmp_path / "out"
    shm = set(os.listdir("/dev/shm"))
    code = main(["archive", str(src), str(out), "--config", str(cfg), "--file-workers", "1",
                 "--streams-per-worker", "2", "--json"])
    capsys.readouterr()
    report = json.loads((out / "derain-report.json").read_text())
    by_name = {Path(r["input"]).name: r for r in report["files"]}
    assert code == 1 and by_name["broken.mp4"]["status"] == "failed" and "broken.mp4" in by_name["broken.mp4"]["error"]
    done = [r for r in report["files"] if r["status"] == "done"]
    assert len(done) == 3 and all(r["frames"] == 30 for r in done)
    for r in done:
        assert frame_pts(r["output"]) == frame_pts(r["input"])
    spans = sorted((r["started"], r["started"] + r["seconds"]) for r in done)
    assert any(b0 < a1 for (_, a1), (b0, _) in zip(spans, spans[1:])), spans  # two ran at once
    assert not list(out.rglob("*.partial*"))
    assert set(os.listdir("/dev/shm")) <= shm  # no ring or semaphore left by the killed worker's children


def test_file_workers_send_their_frames_to_a_shared_model_worker(tmp_path, capsys, ray_session):
    """archive.shared_model (--shared-model; auto where a cluster has GPU nodes and nodes without):
    the file workers load no model, decode and encode (here as yuv420p planes, as next to a GPU),
    and send their batches to the one model worker; a broken file still fails alone."""
    import av
    import numpy as np

    src = tmp_path / "in"
    for name in ("a", "b", "c"):
        make_video(src / f"{name}.mp4", frames=20, audio=name == "a")
    (src / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is no video")
    cfg = tmp_path / "shared.yaml"
    cfg.write_text("model: {profile: full, dtype: fp32}\nworkers: {count: 1, threads: 1, codec_processes: true}\n"
                   "decode: {yuv: true}\n")
    out = tmp_path / "out"
    code = main(["archive", str(src), str(out), "--config", str(cfg), "--shared-model", "--streams-per-worker", "2",
                 "--json"])
    capsys.readouterr()
    report = json.loads((out / "derain-report.json").read_text())
    by_name = {Path(r["input"]).name: r for r in report["files"]}
    assert code == 1 and by_name["broken.mp4"]["status"] == "failed" and "broken.mp4" in by_name["broken.mp4"]["error"]
    done = [r for r in report["files"] if r["status"] == "done"]
    assert len(done) == 3 and all(r["frames"] == 20 for r in done)
    models = {tuple(r["model_workers"]) for r in done}
    assert len(models) == 1 and len(next(iter(models))) == 1  # one model worker served every file
    assert all(r["worker"] not in r["model_workers"] for r in done)  # and it is not the file worker
    for r in done:
        assert frame_pts(r["output"]) == frame_pts(r["input"])

    def frames(path):
        with av.open(str(path)) as c:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(int)

    assert np.abs(frames(by_name["a.mp4"]["output"]) - frames(by_name["a.mp4"]["input"])).mean() > 1  # derained
    assert not list(out.rglob("*.partial*"))


def test_a_shared_model_worker_killed_mid_archive_loses_no_frame(tmp_path, capsys, ray_session):
    """The model worker dies while every file worker has batches with it: Ray restarts it, the
    file workers send those batches again, and every file ends complete, in order."""
    import threading

    src = tmp_path / "in"
    for name in ("a", "b", "c"):
        make_video(src / f"{name}.mp4", frames=40)
    cfg = tmp_path / "shared.yaml"
    cfg.write_text("model: {profile: identity, delay_ms: 50}\nworkers: {count: 1, threads: 1}\n")
    killed = []

    def kill_the_model_worker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            found = subprocess.run(["pgrep", "-f", "ray::DerainWorker"], capture_output=True, text=True).stdout.split()
            if found:
                time.sleep(2.0)  # files are under way by then
                os.kill(int(found[0]), signal.SIGKILL)
                killed.append(int(found[0]))
            time.sleep(0.2)

    killer = threading.Thread(target=kill_the_model_worker, daemon=True)
    killer.start()
    out = tmp_path / "out"
    code = main(["archive", str(src), str(out), "--config", str(cfg), "--shared-model", "--streams-per-worker", "3",
                 "--json"])
    capsys.readouterr()
    killer.join(timeout=5)
    report = json.loads((out / "derain-report.json").read_text())
    assert killed, "the model worker was never found to kill"
    assert code == 0 and [r["status"] for r in report["files"]] == ["done"] * 3, report["files"]
    for r in report["files"]:
        assert r["frames"] == 40 and frame_pts(r["output"]) == frame_pts(r["input"])
        assert killed[0] not in r["model_workers"]  # each file ended on the restarted model worker
    assert not list(out.rglob("*.partial*"))


def test_a_shared_model_without_a_gpu_or_sizes_is_one_clear_error(tmp_path, capsys, ray_session):
    """On CPUs the model workers would hold every core and the file workers would wait forever."""
    src = tmp_path / "in"
    make_video(src / "a.mp4", frames=4)
    code = main(["archive", str(src), str(tmp_path / "out"), "--profile", "identity", "--shared-model", "--json"])
    err = capsys.readouterr().err
    assert code != 0 and "archive.shared_model without a GPU" in err and "workers.count" in err


def test_the_failed_files_are_said_one_line_each_at_most_twenty(caplog, tmp_path):
    records = [{"input": f"in/{i}.mp4", "status": "failed", "error": f"in/{i}.mp4: broken"} for i in range(23)]
    records.insert(0, {"input": "in/w.mp4", "status": "failed", "error": "worker died 3 times"})
    records.append({"input": "in/ok.mp4", "status": "done", "error": None})
    with caplog.at_level(logging.ERROR, "pipeline.archive"):
        archive._say_failures(records, archive._Report(tmp_path / REPORT_NAME))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 21 and lines[0] == "in/w.mp4: worker died 3 times" and lines[1] == "in/0.mp4: broken"
    assert lines[-1] == f"... and 4 more failed; see the report {tmp_path / REPORT_NAME}"


def test_a_file_worker_killed_mid_file_costs_one_try_and_every_file_finishes(tmp_path, capsys, caplog, monkeypatch,
                                                                              ray_session):
    """kill -9 of a file worker's process: Ray restarts it, and its file waits for it to answer
    (sent at once, it would fail while the worker restarts and use up every try in milliseconds)."""
    src = tmp_path / "in"
    for name in ("a", "b"):
        make_video(src / f"{name}.mp4", frames=40)
    cfg = tmp_path / "slow.yaml"
    cfg.write_text("model: {profile: identity, delay_ms: 50}\n")  # 2 s a file: killed part-way
    pids, killed = [], []
    start_actors = archive.start_actors

    def started(ray, *args, **kwargs):  # the file worker's process id, asked before it takes a file
        actors = start_actors(ray, *args, **kwargs)
        pids.extend(ray.get([a.pid.remote() for a in actors]))
        threading.Timer(1.0, lambda: (os.kill(pids[0], signal.SIGKILL), killed.append(pids[0]))).start()
        return actors

    monkeypatch.setattr(archive, "start_actors", started)
    out = tmp_path / "out"
    code = main(["archive", str(src), str(out), "--config", str(cfg), "--file-workers", "1", "--json"])
    capsys.readouterr()
    assert killed and len(pids) == 1
    report = json.loads((out / REPORT_NAME).read_text())
    assert code == 0 and [r["status"] for r in report["files"]] == ["done", "done"], report["files"]
    assert report["summary"] | {"worker_fps": 0} == {"files": 2, "done": 2, "failed": 0, "skipped": 0,
                                                     "pending": 0, "frames": 80, "worker_fps": 0}
    for r in report["files"]:
        assert r["frames"] == 40 and frame_pts(r["output"]) == frame_pts(r["input"])
        assert r["worker"] != killed[0] and r["output_size"] == os.path.getsize(r["output"])
    died = [r.getMessage() for r in caplog.records if "worker died" in r.getMessage()]
    assert len(died) == 1 and died[0].startswith(str(src / "a.mp4")), died  # one kill, one try
    assert not list(out.rglob("*.partial*"))


def test_a_file_worker_that_never_comes_back_is_given_up_and_the_others_take_its_files(
        tmp_path, capsys, caplog, monkeypatch, ray_session):
    src = tmp_path / "in"
    for name in ("a", "b", "c"):
        make_video(src / f"{name}.mp4", frames=30)
    cfg = tmp_path / "slow.yaml"
    cfg.write_text("model: {profile: identity, delay_ms: 50}\nworkers: {start_timeout_s: 0}\n")
    monkeypatch.setattr(archive, "RESTART_S", 2.0)  # how long a dead worker may take to answer again
    pids = []
    start_actors = archive.start_actors

    def started(ray, *args, **kwargs):
        actors = start_actors(ray, *args, **kwargs)
        pids.extend(ray.get([a.pid.remote() for a in actors]))
        threading.Timer(1.0, ray.kill, (actors[0],)).start()  # killed for good: Ray does not restart it
        return actors

    monkeypatch.setattr(archive, "start_actors", started)
    out = tmp_path / "out"
    code = main(["archive", str(src), str(out), "--config", str(cfg), "--file-workers", "2", "--json"])
    capsys.readouterr()
    report = json.loads((out / REPORT_NAME).read_text())
    assert code == 0 and [r["status"] for r in report["files"]] == ["done"] * 3, report["files"]
    assert {r["worker"] for r in report["files"]} == {pids[1]}  # the first file too, redone there
    assert [m for m in caplog.messages if "died" in m] == [
        f"{src / 'a.mp4'}: worker died (ActorDiedError); redoing the file once a worker answers",
        "file worker 0 died and was not back within 2 s (workers.start_timeout_s); its files go to the other workers"]
    assert not list(out.rglob("*.partial*"))


def test_a_rerun_redoes_a_changed_input_and_a_cut_or_missing_output(tmp_path, capsys, caplog, ray_session,
                                                                      monkeypatch):
    """As rsync or make judge it: the report keeps each input's size and mtime and its output's size."""
    src, out = tmp_path / "in", tmp_path / "out"
    for name in ("changed", "cut", "gone", "kept"):
        make_video(src / f"{name}.mp4", frames=4)
    code, summary, first = run_archive(src, out, capsys)
    assert code == 0 and summary["done"] == 4
    written = {Path(r["output"]).name: r["output_size"] for r in first["files"]}
    make_video(src / "changed.mp4", frames=6)  # another video under the same name
    os.truncate(out / "cut.mp4", 1000)
    (out / "gone.mp4").unlink()
    caplog.clear()
    code, summary, report = run_archive(src, out, capsys)
    status = {Path(r["input"]).name: r["status"] for r in report["files"]}
    assert code == 0 and status == {"changed.mp4": "done", "cut.mp4": "done", "gone.mp4": "done",
                                    "kept.mp4": "skipped"}
    assert video_stream(ffprobe(out / "changed.mp4"))["nb_read_frames"] == "6"
    said = sorted(m for m in caplog.messages if "deraining it again" in m)
    assert said == [f"{src / 'changed.mp4'}: the input changed since it was derained; deraining it again",
                    f"{src / 'cut.mp4'}: its output is 1000 bytes, not the {written['cut.mp4']} written; "
                    "deraining it again",
                    f"{src / 'gone.mp4'}: its output is missing; deraining it again"]

    # A redo that fails leaves the old output, and the note of what it was made from: redone next time too.
    (src / "gone.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is no video")
    for _ in range(2):
        caplog.clear()
        code, summary, report = run_archive(src, out, capsys)
        assert code == 1 and summary["failed"] == 1 and summary["skipped"] == 3 and (out / "gone.mp4").exists()
        assert f"{src / 'gone.mp4'}: the input changed since it was derained; deraining it again" in caplog.messages
    make_video(src / "gone.mp4", frames=4)  # mended: redone, then all kept while nothing changes
    code, summary, report = run_archive(src, out, capsys)
    assert summary["done"] == 1 and run_archive(src, out, capsys)[1]["skipped"] == 4

    # The notes are kept by the path under the input folder: a rerun from another working
    # directory, naming the folders relatively, still sees that an input changed.
    monkeypatch.chdir(tmp_path / "in")
    make_video(src / "kept.mp4", frames=5)
    caplog.clear()
    code, summary, report = run_archive(Path("."), Path("../out"), capsys)
    assert summary["done"] == 1 and summary["skipped"] == 3
    # (said, and sent to the file workers, whose working directory is not ours, as absolute paths)
    assert f"{src / 'kept.mp4'}: the input changed since it was derained; deraining it again" in caplog.messages
    assert {r["name"] for r in report["files"]} == {"changed.mp4", "cut.mp4", "gone.mp4", "kept.mp4"}

    # A report of the older version (no sizes) keeps every output that exists, as that version did.
    report = json.loads((out / REPORT_NAME).read_text())
    assert all(r["output_size"] for r in report["files"])
    for r in report["files"]:
        del r["input_size"], r["input_mtime_ns"], r["output_size"]
    (out / REPORT_NAME).write_text(json.dumps(report))
    os.truncate(out / "kept.mp4", 1000)
    code, summary, report = run_archive(src, out, capsys)
    assert summary["skipped"] == 4 and report["files"][-1]["output_size"] == 1000


def test_a_rerun_with_other_settings_makes_the_outputs_again(tmp_path, capsys, caplog, ray_session):
    """A trial run (identity, another CRF) into the folder the real job then uses: its outputs
    are not what the real job would write, so they are made again, and it is said why."""
    src, out = tmp_path / "in", tmp_path / "out"
    make_video(src / "a.mp4", frames=4)
    assert run_archive(src, out, capsys, "--crf", "30")[1]["done"] == 1
    caplog.clear()
    code, summary, report = run_archive(src, out, capsys)
    assert code == 0 and summary["done"] == 1 and report["files"][0]["made_with"]["crf"] == "auto"
    assert caplog.messages.count(f"{src / 'a.mp4'}: it was derained with other settings (crf 30, now auto); "
                                 "deraining it again") == 1
    assert run_archive(src, out, capsys)[1]["skipped"] == 1


def test_a_file_that_finished_as_its_run_stopped_is_redone_only_if_made_otherwise(tmp_path):
    """Ctrl-C as a file ended: its output was in place but its record still 'pending', with no
    note; the rerun kept it, even a rerun with other settings (a trial profile's output kept)."""
    src, out = tmp_path / "in", tmp_path / "out"
    from pipeline.settings import RunSettings

    clip, made = make_video(src / "a.mp4", frames=4), out / "a.mp4"
    trial = archive.made_with(RunSettings(model=archive.replace(RunSettings().model, profile="identity")))
    records, _ = archive._plan([(clip, made)], src, {}, False, trial)
    assert records[0]["status"] == "pending" and records[0]["planned_with"] == trial  # what the report keeps
    make_video(made, frames=4)  # what the stopped run wrote as it ended
    stopped = {"a.mp4": records[0]}
    real = archive.made_with(RunSettings())
    again, redo = archive._plan([(clip, made)], src, stopped, False, real)
    assert again[0]["status"] == "pending"
    assert redo[str(made)] == (f"{clip}: its run stopped as it ended, and derained it with other settings "
                               "(profile identity, now full; weights None, now " f"{real['weights']}); deraining it again")
    kept, _ = archive._plan([(clip, made)], src, stopped, False, trial)  # the same settings: kept
    assert kept[0]["status"] == "skipped"


def test_made_with_notes_every_setting_but_the_machines():
    """The list was kept by hand: a new output-shaping setting had to be added to it, or an
    archive kept files made without it. Now every setting counts unless it names the machine."""
    from pipeline.config import load_settings
    from pipeline.settings import RunSettings

    base = archive.made_with(RunSettings())
    machine = {"model.device": "cpu", "model.dtype": "fp32", "model.runtime": "torch", "model.compile": True,
               "model.cuda_graphs": False, "encode.threads": 3, "encode.hardware": "off"}
    assert archive.made_with(load_settings(RunSettings, None, machine)) == base
    for key, value in {"model.deflicker": False, "model.causal": True, "encode.pix_fmt": "yuv444p",
                       "encode.keyframe_s": 2.0, "model.profile": "fast"}.items():
        assert archive.made_with(load_settings(RunSettings, None, {key: value})) != base, key


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A small tmpfs at `path` (root only; the test is skipped where it cannot be mounted)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


@contextlib.contextmanager
def read_only(path: Path):
    """`path` as a folder no write reaches: a read-only mount for root (whom modes do not stop), else mode 555."""
    if os.geteuid() == 0:
        with tmpfs(path, "ro,size=64k"):
            yield path
        return
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    try:
        yield path
    finally:
        path.chmod(0o755)


def fill(folder: Path) -> None:
    """Write into `folder` until its file system is full (or, not being root, take away its write mode)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_read_only_output_folder_is_one_line_before_any_work(tmp_path, capsys):
    src = tmp_path / "in"
    make_video(src / "a.mp4", frames=2)
    with read_only(tmp_path / "ro") as out:
        code = main(["archive", str(src), str(out), "--profile", "identity"])
        err = capsys.readouterr().err
        assert code == 1 and "Traceback" not in err
        (line,) = err.strip().splitlines()
        assert line.startswith(f"derain archive: error: {out}: cannot write the report") and "nothing was" in line
        assert list(out.iterdir()) == []


@pytest.mark.parametrize("what, says", [("a.mp4", "is not a folder"), ("nowhere", "archive folder not found")])
def test_an_input_that_is_no_folder_is_one_line_saying_so(tmp_path, capsys, what, says):
    make_video(tmp_path / "a.mp4", frames=2)
    code = main(["archive", str(tmp_path / what), str(tmp_path / "out"), "--profile", "identity"])
    err = capsys.readouterr().err
    assert code == 1 and err.strip() == f"derain archive: error: {tmp_path / what}: {says}" + (
        "; give the folder of videos to derain" if what == "a.mp4" else "")


def test_a_report_that_can_no_longer_be_written_stops_no_file_and_leaves_no_temporary(tmp_path, capsys, caplog,
                                                                                       monkeypatch, ray_session):
    """The report's disk fills once the run has started: every file still finishes, and the end
    says the report could not be written (the report of the up-front check stays, all pending)."""
    src = tmp_path / "in"
    for name in ("a", "b"):
        make_video(src / f"{name}.mp4", frames=4)
    out = tmp_path / "out"
    init_ray = archive.init_ray
    with (tmpfs(tmp_path / "small", "size=16k") if os.geteuid() == 0 else contextlib.nullcontext()) as small:
        reports = small or tmp_path / "reports"
        reports.mkdir(exist_ok=True)
        monkeypatch.setattr(archive, "init_ray", lambda address: (fill(reports), init_ray(address)))
        try:
            code = main(["archive", str(src), str(out), "--profile", "identity", "--report",
                         str(reports / REPORT_NAME), "--json"])
        finally:
            reports.chmod(0o755)
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert code == 1 and summary["done"] == 2  # every file done, but the report is not: a failure to say
        assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4"]
        assert {p.name for p in reports.iterdir()} <= {REPORT_NAME, "filler"}  # no derain-report.json.tmp
        left = json.loads((reports / REPORT_NAME).read_text())
        assert [r["status"] for r in left["files"]] == ["pending", "pending"]
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert said == [f"{reports / REPORT_NAME}: the report could not be written "
                        f"({'No space left on device' if small else 'Permission denied'}); the outputs that "
                        "exist are the files that finished"]


def test_the_input_note_is_what_the_driver_sees(tmp_path, capsys, monkeypatch, ray_session):
    """A node may mount the inputs another way (other mtimes): the note a rerun compares is the
    driver's own view, taken before the file is sent, never the worker's."""
    from pipeline import archive

    src, out = tmp_path / "in", tmp_path / "out"
    make_video(src / "a.mp4", frames=4)
    seen = {"input_size": 12345, "input_mtime_ns": 678}  # what this driver's mount says
    monkeypatch.setattr(archive, "_input_stat", lambda path: dict(seen))
    code, summary, report = run_archive(src, out, capsys)
    (rec,) = report["files"]
    assert code == 0 and (rec["input_size"], rec["input_mtime_ns"]) == (12345, 678)
    assert run_archive(src, out, capsys)[1]["skipped"] == 1
    seen["input_mtime_ns"] = 679  # the driver sees a change: redone
    assert run_archive(src, out, capsys)[1]["done"] == 1



def test_a_worker_that_never_comes_back_does_not_hold_the_finished_job(tmp_path, ray_session):
    """The job ended only when the dead worker's restart limit ran out (60 s by default), though
    its file was already redone by another worker."""
    ray = ray_session

    class Worker:  # dies on its file; restarted, never starts again (its node left, the rest is full)
        def __init__(self, marker: str):
            self.marker = marker
            if os.path.exists(marker):
                time.sleep(3600)

        def pid(self) -> int:
            return os.getpid()

        def process(self, src, dst, replace, token, stat) -> dict:
            if src == "dies.mp4" and not os.path.exists(self.marker):  # the first try only
                Path(self.marker).touch()
                os._exit(1)
            return {"status": "done"}

    cls = ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)(Worker)
    actors = [cls.remote(str(tmp_path / "restarted")) for _ in range(2)]
    ray.get([a.pid.remote() for a in actors])
    files = archive._Dispatch(ray, actors, 1, set(), retries=2, restart_s=30.0)
    files.queue.extend(({"input": name, "output": str(tmp_path / name)}, 0) for name in ("dies.mp4", "b.mp4"))
    start, ended = time.monotonic(), []
    try:
        files.fill()
        while files.busy():
            ended += files.wait()
    finally:
        for actor in actors:
            ray.kill(actor)
    assert sorted(r["input"] for r in ended if r.get("status") == "done") == ["b.mp4", "dies.mp4"]
    assert time.monotonic() - start < 20
