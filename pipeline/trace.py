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
KEEP = 100_000  # marks held before they are written out (a long live run stays flat)
_events: list[tuple[str, str, int, float]] = []

# The stages in frame order: decoded (the decoder made it), read (the run has it), submitted
# (its batch went to the model), derained (its batch came back), written (handed to the
# encoder), encoded (the encoder took it).
STAGES = ("decoded", "read", "submitted", "derained", "written", "encoded")


def mark(stage: str, source: str, seqs, at: float | None = None) -> None:
    """Note that frames `seqs` of `source` (the input's path or URL, the same in every process)
    reached `stage` now (or at `at`)."""
    if FOLDER is None:
        return
    t = time.monotonic() if at is None else at
    _events.extend((stage, source, int(s), t) for s in seqs)  # one call: atomic under the GIL
    if len(_events) > KEEP:
        flush()


def flush() -> None:
    """Write this process's marks (codec processes call it: they leave without atexit)."""
    if FOLDER is None or not _events:
        return
    events = _events[:]
    del _events[:len(events)]  # marks made meanwhile (other threads) stay for the next flush
    Path(FOLDER).mkdir(parents=True, exist_ok=True)
    with open(Path(FOLDER) / f"trace-{os.getpid()}.jsonl", "a") as f:
        f.writelines(json.dumps(e) + "\n" for e in events)


atexit.register(flush)
