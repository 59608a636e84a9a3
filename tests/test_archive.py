"""`derain archive` on real Ray actors: parallel files, a broken one, resume, report, Ctrl-C."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from media import make_video
from probe import ffprobe, frame_pts, video_stream

from pipeline.cli import main
from pipeline.sinks import partial_path


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
    assert not (out / "broken.mp4").exists() and not partial_path(out / "broken.mp4").exists()

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
        assert not partial_path(out_path).exists()
