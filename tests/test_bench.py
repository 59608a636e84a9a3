"""`derain bench --model-only` is what a bare GPU box runs: it must work without PyAV or Ray."""
import json
import subprocess
import sys

BLOCKED = "import sys; sys.modules['av'] = None; sys.modules['ray'] = None; from pipeline.cli import main; "


def test_model_only_bench_runs_without_pyav_and_reports_each_size():
    args = ["bench", "--model-only", "--profile", "fast", "--sizes", "96x64,128x72", "--dtype", "fp32",
            "--runtime", "torch", "--json"]
    code = BLOCKED + f"sys.exit(main({args!r}))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert {(r["size"], r["batch"]) for r in result["rows"]} == {(s, b) for s in ("96x64", "128x72") for b in (1, 2, 4)}
    assert all(r["fps"] > 0 and r["gmac_per_frame"] > 0 for r in result["rows"])
    assert set(result["best"]) == {"96x64", "128x72"}


def test_streams_bench_runs_two_streams_through_one_worker_and_reports_totals():
    """The issue's CPU floor: `derain bench --streams 2 --profile identity --json` (small, to stay quick)."""
    args = [sys.executable, "-m", "pipeline.cli", "bench", "--streams", "2", "--profile", "identity",
            "--size", "160x96", "--frames", "40", "--json"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["streams"] == 2 and result["frames_per_stream"] == 40 and result["backend"] == "ray"
    assert result["model_fps"] is None  # identity: no model to time alone
    assert result["codec_fps"] > 0 and result["total_fps"] > 0 and len(result["per_stream_fps"]) == 2
    assert all(f > 0 for f in result["per_stream_fps"])
    # each stream's own clock starts once its input is open: the rest of the wall clock is startup
    assert 0 < result["startup_s"] < 30
    assert result["ratio"] == round(result["total_fps"] / result["codec_fps"], 3)


def test_a_traced_run_says_where_frames_wait(tmp_path):
    """DERAIN_TRACE: the run and its codec process each write their frames' stage times, and
    scripts/trace-report.py gives every stage's rate and the time between stages."""
    import json
    import os

    from media import make_video

    clips = [make_video(tmp_path / f"in{i}.mp4", frames=20) for i in range(2)]
    env = {**os.environ, "DERAIN_TRACE": str(tmp_path / "trace")}
    script = ("import sys; from pipeline.config import load_settings; from pipeline.files import derain_files; "
              "from pipeline.settings import RunSettings; "
              "s = load_settings(RunSettings, None, {'workers.backend': 'local', 'workers.codec_processes': True, "
              "'model.profile': 'identity'}); "
              "derain_files([(sys.argv[1], sys.argv[3]), (sys.argv[2], sys.argv[4])], s)")
    subprocess.run([sys.executable, "-c", script, *map(str, clips), str(tmp_path / "o0.mp4"), str(tmp_path / "o1.mp4")],
                   check=True, env=env, capture_output=True, timeout=120)
    assert len(list((tmp_path / "trace").glob("trace-*.jsonl"))) == 3  # the run and its two codec processes
    from pathlib import Path

    report_script = Path(__file__).resolve().parents[1] / "scripts" / "trace-report.py"
    out = subprocess.run([sys.executable, str(report_script), str(tmp_path / "trace")], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report["frames"] == 40  # both files' frames, each file's own
    assert set(report["rates"]) == {"decoded", "read", "submitted", "derained", "written", "encoded"}
    assert all(g["median_ms"] >= 0 for g in report["gaps"].values()) and len(report["gaps"]) == 5
    first = [report["first_s"][s] for s in ("read", "submitted", "derained", "written", "encoded")]
    assert min(report["first_s"].values()) == 0 and first == sorted(first)  # a frame passes them in order


def test_a_memory_run_too_short_to_tell_growth_says_so(capsys):
    """`bench --memory --minutes 0.1` printed a growth figure from a sample or two."""
    from pipeline.bench.memory import MIN_SAMPLES, run_memcheck

    result = run_memcheck(minutes=0.02, size="160x96", backend="local")
    assert result["frames_out"] == result["frames"] == 30
    assert result["too_short"] and result["samples"] < MIN_SAMPLES
    assert "too short to tell growth" in capsys.readouterr().out
