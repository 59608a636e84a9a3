"""`derain archive` on real Ray actors: parallel files, a broken one, resume, report, Ctrl-C."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from media import make_video
from probe import ffprobe, frame_pts, video_stream

import pytest

from pipeline.archive import REPORT_NAME, find_inputs
from pipeline.cli import main
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


def test_archive_mirrors_the_tree_reports_broken_files_and_resumes(tmp_path, capsys, ray_session):
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


def test_the_walker_skips_derains_own_outputs(tmp_path):
    root = tmp_path / "in"
    make_video(root / "cam" / "a.mp4", frames=2)
    make_video(root / "old-run" / "cam" / "a.mp4", frames=2)  # an earlier archive's output tree
    (root / "old-run" / REPORT_NAME).write_text("{}")
    make_video(root / "pngs" / "b.mp4", frames=2)  # a folder derain wrote
    (root / "pngs" / MARKER).write_text('{"written_by": "derain", "files": []}')
    make_video(root / ".c.1-ab.partial.mp4", frames=2)  # a temporary
    assert [p.relative_to(root).as_posix() for p in find_inputs(root, ["*.mp4"], True)] == ["cam/a.mp4"]


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
        (said,) = by_name[name]["warnings"]
        assert "written as %dx%d" % size in said


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
