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
