"""Per-frame stage times, to find where a pipeline waits: `DERAIN_TRACE=FOLDER derain ...`.

Each process that takes part (the run, its codec processes) writes FOLDER/trace-PID.jsonl at
its end: one line per frame and stage, `[stage, source, seq, time]`, times from the one
monotonic clock every process on the machine shares. `scripts/trace-report.py FOLDER` says
how long frames spent between stages and how fast each stage went. Off (the default), a mark
costs one test of a module global.
"""
from __future__ import annotations

import atexit
import json
import os
import time
from pathlib import Path

FOLDER = os.environ.get("DERAIN_TRACE") or None
_events: list[tuple[str, str, int, float]] = []

# The stages in frame order: decoded (the decoder made it), read (the run has it), submitted
# (its batch went to the model), derained (its batch came back), written (handed to the
# encoder), encoded (the encoder took it).
STAGES = ("decoded", "read", "submitted", "derained", "written", "encoded")


def mark(stage: str, source: str, seqs, at: float | None = None) -> None:
    """Note that frames `seqs` of `source` reached `stage` now (or at `at`)."""
    if FOLDER is None:
        return
    t = time.monotonic() if at is None else at
    _events.extend((stage, source, int(s), t) for s in seqs)  # one call: atomic under the GIL


def flush() -> None:
    """Write this process's marks (codec processes call it: they leave without atexit)."""
    if FOLDER is None or not _events:
        return
    Path(FOLDER).mkdir(parents=True, exist_ok=True)
    with open(Path(FOLDER) / f"trace-{os.getpid()}.jsonl", "a") as f:
        f.writelines(json.dumps(e) + "\n" for e in _events)
    _events.clear()


atexit.register(flush)
