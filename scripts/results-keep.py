"""Keep a results file's lines for the profiles not being rerun: a script run for some profiles
replaces their lines and leaves the others' (a run for every profile starts afresh).

usage: .venv/bin/python scripts/results-keep.py FILE.jsonl PROFILE ...
A line's profile is its "profile", else its result's.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from usage import answer_help

answer_help(__doc__, need=2)


def main(path: str, profiles: list[str]) -> None:
    file = Path(path)
    lines = file.read_text().splitlines() if file.exists() else []

    def profile(line: str) -> str | None:
        row = json.loads(line)
        return row.get("profile") or (row.get("result") or {}).get("profile")

    file.write_text("".join(line + "\n" for line in lines if line.strip() and profile(line) not in profiles))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
