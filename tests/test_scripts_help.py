"""The scripts without argparse answer -h/--help with their docstring (scripts/usage.py) before
they import torch or touch a file: `results-keep.py --help` used to write a file named --help."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
NAMES = ["deflicker-speed", "derained-encode-cost", "gil-check", "gpu-check", "light-rain-bias", "loop-gil",
         "model-analysis", "pipeline-standin", "pyav-gil", "rain-stats", "real-rain-crops", "results-keep",
         "select-temporal", "synthetic-video", "trace-report", "weights-crops"]


def first_line(script: Path) -> str:
    return ast.get_docstring(ast.parse(script.read_text())).splitlines()[0]


@pytest.mark.parametrize("name", NAMES)
def test_help_prints_the_docstring_and_writes_nothing(name, tmp_path):
    """Run from an empty folder: the script must say how it is used, exit 0, and leave the folder
    empty (no output file, no start of the work it does)."""
    script = SCRIPTS / f"{name}.py"
    done = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert first_line(script) in done.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["loop-gil", "results-keep", "trace-report", "weights-crops"])
def test_missing_arguments_print_the_docstring(name, tmp_path):
    """The scripts with required arguments, given none, say how they are used (exit 2) rather
    than fail with an IndexError."""
    script = SCRIPTS / f"{name}.py"
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert first_line(script) in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []
