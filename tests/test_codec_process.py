"""Files decoded and encoded in codec processes of their own (workers.codec_processes): the same
outputs as in-process, and every way a child or its parent can fail, with real children."""
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from media import cut_file, make_video
from probe import audio_streams, ffprobe, frame_pts, video_stream

from pipeline.config import load_settings
from pipeline.errors import InputError, OutputError, WorkerError
from pipeline.files import derain_file, derain_files
from pipeline.images import write_rgb
from pipeline import files
from pipeline.settings import ModelSettings, RunSettings, WorkerSettings, codec_processes, codec_threads, with_codec_threads

REPO = Path(__file__).resolve().parents[1]
BASE = {"model.profile": "identity", "workers.backend": "local", "batching.max_batch": 4}
ON = load_settings(RunSettings, None, {**BASE, "workers.codec_processes": True})
OFF = load_settings(RunSettings, None, {**BASE, "workers.codec_processes": False})


def decode_all(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def ring_files() -> set[str]:
    return {p for p in os.listdir("/dev/shm") if p.startswith(f"derain-{os.getpid()}-")}


def test_auto_is_on_where_the_model_runs_on_a_gpu():
    assert codec_processes(ModelSettings(device="cuda"), WorkerSettings())
    assert not codec_processes(ModelSettings(device="cpu"), WorkerSettings())
    assert codec_processes(ModelSettings(device="cpu"), WorkerSettings(codec_processes=True))
    assert not codec_processes(ModelSettings(device="cuda"), WorkerSettings(codec_processes=False))


def test_auto_threads_give_each_stream_its_share_of_the_cores_where_codecs_have_processes():
    assert codec_threads(None) == (1, 1)  # the model runs on these cores: it keeps them
    assert [codec_threads(n) for n in (1, 2, 4, 16, 64)] == [(1, 1), (1, 2), (1, 5), (2, 16), (2, 16)]
    assert with_codec_threads(OFF, 16) is OFF  # in-process, auto stays auto (1 each)
    cpu_net = load_settings(RunSettings, None, {**BASE, "workers.codec_processes": True, "model.profile": "fast",
                                                "model.device": "cpu"})
    assert with_codec_threads(cpu_net, 16) is cpu_net  # a network on these cores keeps them
    remote = with_codec_threads(cpu_net, 16, model_here=False)  # an archive's file worker, the model elsewhere
    assert (remote.decode.threads, remote.encode.threads) == (2, 16)
    given = load_settings(RunSettings, None, {**BASE, "workers.codec_processes": True, "encode.threads": 3})
    assert (with_codec_threads(given, 16).decode.threads, with_codec_threads(given, 16).encode.threads) == (2, 3)


def x264_threads(path: Path) -> int:
    """The encoder threads x264 wrote into the stream (its options string, in an SEI message)."""
    found = re.search(rb" threads=(\d+) ", path.read_bytes())
    assert found, f"{path}: no x264 options string"
    return int(found.group(1))


def test_each_files_encoder_runs_its_share_of_the_cores_in_a_codec_process_and_one_thread_in_process(
        tmp_path, monkeypatch, caplog):
    """The threads x264 really ran with, read back from what it wrote (auto, the default; the
    identity profile leaves the cores to the codecs, as a GPU does)."""
    src = make_video(tmp_path / "a.mp4", frames=6, size=(192, 656))  # x264 caps its threads at a quarter of the macroblock rows
    monkeypatch.setattr(files, "usable_cores", lambda: 8)
    caplog.set_level("INFO", "pipeline.files")
    derain_files([(src, tmp_path / "one.mp4")], ON)  # 8 cores to itself: 12 threads, 2 of them decoding
    derain_files([(src, tmp_path / "two-a.mp4"), (src, tmp_path / "two-b.mp4")], ON)  # 4 cores each
    derain_files([(src, tmp_path / "off.mp4")], OFF)
    assert [x264_threads(tmp_path / n) for n in ("one.mp4", "two-a.mp4", "two-b.mp4", "off.mp4")] == [10, 5, 5, 1]
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.files"]
    assert said == ["codec processes: 1 file on 8 cores, each decoded with 2 threads and encoded with 10 threads",
                    "codec processes: 2 files on 8 cores, each decoded with 1 thread and encoded with 5 threads"]


def test_outputs_equal_the_in_process_ones_with_timestamps_and_audio(tmp_path):
    """Lossless (crf 0), so the two outputs must match exactly (x264's lossy output varies run to run)."""
    on_, off_ = (load_settings(RunSettings, None, {**BASE, "workers.codec_processes": c, "encode.crf": 0})
                 for c in (True, False))
    a = make_video(tmp_path / "a.mp4", frames=30, size=(96, 64), audio=True, vfr=True)
    b = make_video(tmp_path / "b.mkv", frames=17, size=(64, 48), fps=30)
    pairs = [(a, tmp_path / "a-on.mp4"), (b, tmp_path / "b-on.mkv")]
    stats = derain_files(pairs, on_)
    assert [s.frames_out for s in stats] == [30, 17] and all(s.dropped == 0 for s in stats)
    derain_files([(a, tmp_path / "a-off.mp4"), (b, tmp_path / "b-off.mkv")], off_)
    for src, name in ((a, "a"), (b, "b")):
        ext = src.suffix
        on, off = tmp_path / f"{name}-on{ext}", tmp_path / f"{name}-off{ext}"
        assert frame_pts(on) == frame_pts(src)
        assert all(np.array_equal(x, y) for x, y in zip(decode_all(on), decode_all(off), strict=True))
    (aa,), (ab,) = audio_streams(ffprobe(a)), audio_streams(ffprobe(tmp_path / "a-on.mp4"))
    assert (ab["codec_name"], ab["nb_read_frames"]) == (aa["codec_name"], aa["nb_read_frames"])
    assert not ring_files() and not multiprocessing.active_children()


def test_frames_that_change_size_cross_outside_the_ring(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    sizes = [(48, 64), (48, 64), (40, 80), (48, 64)]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    for i, image in enumerate(images):
        write_rgb(folder / f"{i:03d}.png", image)
    stats = derain_file(folder, tmp_path / "out", ON)
    assert stats.frames_out == 4
    from pipeline.images import read_rgb

    for i, image in enumerate(images):
        assert np.array_equal(read_rgb(tmp_path / "out" / f"{i:03d}.png"), image)


def test_a_bad_output_or_input_is_named_and_leaves_nothing(tmp_path):
    a = make_video(tmp_path / "a.mp4", frames=12)
    taken = tmp_path / "taken.mp4"
    taken.write_bytes(b"mine")
    with pytest.raises(OutputError, match="taken.mp4"):
        derain_files([(a, tmp_path / "x.mp4"), (a, taken)], ON)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    with pytest.raises(InputError, match="broken.mp4"):
        derain_files([(a, tmp_path / "y.mp4"), (broken, tmp_path / "z.mp4")], ON)
    assert taken.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "broken.mp4", "taken.mp4"]
    assert not ring_files() and not multiprocessing.active_children()


def test_a_truncated_input_keeps_every_frame_and_says_so_once(tmp_path, caplog):
    src = make_video(tmp_path / "in.mkv", frames=60, size=(96, 64))
    cut = cut_file(src, tmp_path / "cut.mkv", 0.6)
    with caplog.at_level("WARNING"):
        stats = derain_file(cut, tmp_path / "out.mp4", ON)
    assert stats.truncated and 0 < stats.frames_out < 60
    assert int(video_stream(ffprobe(tmp_path / "out.mp4"))["nb_read_frames"]) == stats.frames_out
    said = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(said) == 1 and "cut.mkv" in said[0]


def _kill_children(batch):
    if batch.seq[0] == 4:
        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGKILL)


def test_a_killed_codec_process_is_an_error_naming_the_file_and_leaves_nothing(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=40)
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"in.mp4: its codec process died .*exit -9"):
        derain_file(src, tmp_path / "out.mp4", ON, consumers=[_kill_children])
    assert time.monotonic() - start < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
    assert not ring_files()


def test_a_killed_parent_leaves_no_partial_output_and_no_child(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=400)
    cfg = tmp_path / "slow.yaml"
    cfg.write_text("model: {profile: identity, delay_ms: 20}\nworkers: {backend: local, codec_processes: true}\n")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(src), "-o", str(tmp_path / "out.mp4"),
                             "--config", str(cfg)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any("partial" in p.name for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    time.sleep(1.0)
    children = _children(proc.pid)
    assert children, "no codec process was started"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in children)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "slow.yaml"]
    assert not any(p.startswith(f"derain-{proc.pid}-") for p in os.listdir("/dev/shm"))


def test_ctrl_c_reaches_the_children_too_and_one_line_is_said(tmp_path):
    """Ctrl-C goes to the whole process group: the children leave it to the parent, which
    removes the partial output and says one line."""
    src = make_video(tmp_path / "in.mp4", frames=400)
    cfg = tmp_path / "slow.yaml"
    cfg.write_text("model: {profile: identity, delay_ms: 20}\nworkers: {backend: local, codec_processes: true}\n")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(src), "-o", str(tmp_path / "out.mp4"),
                             "--config", str(cfg)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not any("partial" in p.name for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert [line for line in err.splitlines() if line.strip()] == ["derain run: interrupted; partial outputs removed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "slow.yaml"]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def _python(code: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_a_first_output_that_exists_is_said_as_such_and_nothing_hangs(tmp_path):
    """The child that cannot open its output leaves; the others are still closed (no partial,
    no ring file) and the interpreter exits (it hung once, waiting on children)."""
    a = make_video(tmp_path / "a.mp4", frames=12)
    (tmp_path / "taken.mp4").write_bytes(b"mine")
    code = f"""
import os, sys
sys.path.insert(0, "tests")
from test_codec_process import ON
from pipeline.errors import OutputError
from pipeline.files import derain_file, derain_files
for call in (lambda: derain_file({str(a)!r}, {str(tmp_path / "taken.mp4")!r}, ON),
             lambda: derain_files([({str(a)!r}, {str(tmp_path / "taken.mp4")!r}), ({str(a)!r}, {str(tmp_path / "x.mp4")!r})], ON)):
    try:
        call()
    except OutputError as exc:
        print("OutputError:", exc)
print([p for p in os.listdir("/dev/shm") if p.startswith(f"derain-{{os.getpid()}}-")])
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("OutputError:") and "taken.mp4" in line for line in lines[:2])
    assert lines[2] == "[]"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "taken.mp4"]


def test_a_parent_killed_before_its_child_opened_leaves_no_ring_file(tmp_path):
    a = make_video(tmp_path / "a.mp4", frames=12)
    code = f"""
import os, signal, sys
sys.path.insert(0, "tests")
from test_codec_process import ON
from pipeline.codec_process import CodecProcess
c = CodecProcess({str(a)!r}, {str(tmp_path / "out.mp4")!r}, ON.decode, ON.encode)
print(c.process.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    child = int(_python(code).stdout.split()[0])
    assert _leaves(child)
    assert not [p for p in os.listdir("/dev/shm") if p.startswith("derain-") and str(child) not in p
                and _owner_gone(p)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


def _leaves(pid: int, within_s: float = 20) -> bool:
    """Whether the process ends within `within_s`."""
    deadline = time.monotonic() + within_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not _alive(pid)


def _owner_gone(name: str) -> bool:
    """A ring file (derain-PID-...) whose creating process no longer runs."""
    try:
        return not _alive(int(name.split("-")[1]))
    except (IndexError, ValueError):
        return False


def test_a_parent_that_dies_mid_message_leaves_no_orphan_and_no_partial_output(tmp_path):
    """Each side holds only its own pipe ends: a half-sent message from a dead parent is an EOF
    for the child (it was an orphan blocked in recv forever, its partial output kept)."""
    a = make_video(tmp_path / "a.mp4", frames=12)
    code = f"""
import os, struct, sys
sys.path.insert(0, "tests")
from test_codec_process import ON
from pipeline.codec_process import CodecProcess
c = CodecProcess({str(a)!r}, {str(tmp_path / "out.mp4")!r}, ON.decode, ON.encode)
c.ready()
print(c.process.pid, flush=True)
os.write(c.work._send.fileno(), struct.pack("!i", 10**6) + b"x" * 10)  # a message cut short
os._exit(0)
"""
    child = int(_python(code).stdout.split()[0])
    assert _leaves(child)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


def test_a_network_on_these_cores_runs_with_codec_processes_forced(tmp_path, caplog):
    """Threads stay `auto` where the model keeps the cores, and the log line compared "auto"
    with 1: every file of a CPU network with codec processes on failed with a TypeError."""
    settings = load_settings(RunSettings, None, {**BASE, "workers.codec_processes": True, "model.profile": "fast",
                                                 "model.device": "cpu"})
    caplog.set_level("INFO", "pipeline.files")
    src = make_video(tmp_path / "a.mp4", frames=4, size=(64, 48))
    (stats,) = derain_files([(src, tmp_path / "out.mp4")], settings)
    assert stats.frames_out == 4 and len(decode_all(tmp_path / "out.mp4")) == 4
    assert "each decoded with 1 thread and encoded with 1 thread" in caplog.text


def test_rings_left_by_a_process_that_died_are_swept_at_the_next_start(tmp_path):
    """An archive's file worker killed by Ray (Ctrl-C) before its child opened its rings left
    them in /dev/shm for good. The next codec process removes those of dead processes."""
    gone = subprocess.Popen(["true"])
    gone.wait()

    def ring(pid: int, age_s: float | None = None) -> Path:
        path = Path("/dev/shm") / f"derain-{pid}-{os.urandom(4).hex()}.in"
        path.write_bytes(b"\0" * 4096)
        if age_s:
            os.utime(path, (time.time() - age_s, time.time() - age_s))
        return path

    stale, fresh, ours = ring(gone.pid, 600), ring(gone.pid), ring(os.getpid(), 600)
    try:
        src = make_video(tmp_path / "a.mp4", frames=3, size=(64, 48))
        derain_files([(src, tmp_path / "out.mp4")], ON)
        assert not stale.exists()
        assert fresh.exists() and ours.exists()  # maybe still being opened; a live process's
    finally:
        for path in (stale, fresh, ours):
            path.unlink(missing_ok=True)


def test_a_stuck_codec_process_is_given_up_naming_the_file(tmp_path, monkeypatch):
    """A child that stops answering (a decoder looping on a damaged file; here a stopped
    process) held the run for ever: after STALL_S of silence it is killed and the file fails."""
    from pipeline import codec_process

    monkeypatch.setattr(codec_process, "STALL_S", 3.0)
    src = make_video(tmp_path / "in.mp4", frames=200)
    slow = load_settings(RunSettings, None, {**BASE, "workers.codec_processes": True, "model.delay_ms": 20})
    stopped = []

    def stop_the_child():
        deadline = time.monotonic() + 30
        while not stopped and time.monotonic() < deadline:
            for child in multiprocessing.active_children():
                written = any("partial" in p.name and p.stat().st_size > 0 for p in tmp_path.iterdir())
                if child.name.startswith("derain-codec-") and written:  # past its opening, which has its own limit
                    os.kill(child.pid, signal.SIGSTOP)
                    stopped.append(child.pid)
            time.sleep(0.05)

    import threading

    threading.Thread(target=stop_the_child, daemon=True).start()
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"in.mp4: its codec process said nothing for 3 s while (decoding|encoding)"):
        derain_file(src, tmp_path / "out.mp4", slow)
    assert stopped and time.monotonic() - start < 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]  # no partial output left
    assert not ring_files() and not multiprocessing.active_children()


def test_a_child_that_encodes_slowly_says_it_is_alive(monkeypatch):
    """An x265 placebo flush at 4K can outlast STALL_S with nothing else to say: the encoder
    side's beat keeps such a child from being given up (a stopped child beats no more)."""
    import threading

    from pipeline import codec_process

    monkeypatch.setattr(codec_process, "STALL_S", 0.2)
    said = []

    class Channel:
        def put(self, message):
            said.append(message)

    threading.Thread(target=codec_process._alive_beat, args=(Channel(),), daemon=True).start()
    time.sleep(0.5)
    assert len(said) >= 3 and set(map(str, said)) == {"('written', [])"}  # nothing freed, nothing else
