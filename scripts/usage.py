"""`-h`/`--help` for the scripts without argparse: their docstring says how they are run.

    from usage import answer_help

    answer_help(__doc__)          # first thing, before the heavy imports
    answer_help(__doc__, need=2)  # and two arguments at least, else the docstring and exit 2

(The scripts run as `python scripts/NAME.py`, so scripts/ is on sys.path.)
"""
from __future__ import annotations

import sys


def answer_help(doc: str | None, need: int = 0) -> None:
    """Print `doc` and exit 0 when -h or --help is among the arguments; print it to stderr and
    exit 2 when there are fewer than `need` arguments (rather than an IndexError later)."""
    args = sys.argv[1:]
    if "-h" in args or "--help" in args:
        print((doc or "").strip("\n"))
        raise SystemExit(0)
    if len(args) < need:
        print((doc or "").strip("\n"), file=sys.stderr)
        raise SystemExit(2)
